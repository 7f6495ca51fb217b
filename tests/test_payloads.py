"""The typed payloads of the mechanism report, the hardening record and the analyses: each reads
back to itself with the same bytes, a file written before a field existed still loads, and a
corrupt field is refused with one line (LesionError), never half read."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from lesion.runtime.anytime import Stopped
from lesion.errors import LesionError
from lesion.runtime.files import json_text, write_json
from lesion.results import NeuronDelta, Settings, Step
from lesion.results.analysis import (AnalysisResult, CommonNeuron, ComponentsData, DistributionData,
                                     LayerKindCell, LayerKindCounts, ComponentLevel, PhaseData,
                                     PrecisionData, PrecisionFailure, PrecisionRow, RobustnessData, SweepData,
                                     SweepPoint, SweepRow, TextScan, analysis_data)
from lesion.results.harden import (Budget, ChannelSpread, GenerationProof, HardenRecord, HeadRotation,
                                   HeelComparison, HeelProfile, OutlierLayer, Outliers, Proof, Rotation,
                                   SameSet, SetSummary, TextProof, Where)
from lesion.results.mechanism import (AloneDeltas, CarryingWeight, Criteria, LargestWeight, MechanismReport,
                                      NeuronMechanism, Overlap, ResidualWrite, SuperWeight, TokenLesion,
                                      TopActivation, WeightSlice)

DOWN = "model.layers.1.mlp.down_proj"
MAGNITUDES = dict(max_abs=812.5, argmax_position=0, value_at_position_0=-812.5, site_median_abs=0.25,
                  ratio_to_median=3250.0, rank_by_max_abs=1, massive=True)


def mechanism_report(**changes) -> MechanismReport:
    neuron = NeuronMechanism(
        neuron=f"{DOWN}:7", **MAGNITUDES, in_top_massive=True, super_weight_row=False,
        alone=AloneDeltas(zero=4.5, position0=3.25),
        largest_weight=LargestWeight(module=DOWN, row=7, column=11, abs_weight=2.5, ratio_to_median=90.0,
                                     delta_zeroed=1.5, causal=True),
        carrying_weight=CarryingWeight(module=DOWN, row=7, column=11, position=0, weight=2.5, input=3.0, term=7.5,
                                       share_of_activation=None, ratio_to_median=90.0, delta_zeroed=1.5, causal=True),
        residual_write=None, labels=("massive activation",),
        feeding=(WeightSlice(slice="up", top=((3, -0.5), (1, 0.25))),), leaving=())
    written = ResidualWrite(neuron=f"{DOWN}:7", writer=DOWN, channel=7, position=0, largest_change=812.5,
                            how="its own output", delta_zero=4.5, delta_position0=3.25)
    values = dict(
        neurons=(neuron, replace(neuron, neuron=f"{DOWN}:9", carrying_weight=None, residual_write=written)),
        massive_activations=(TopActivation(neuron=f"{DOWN}:7", **MAGNITUDES, delta_position0=3.25, causal=True),
                             TopActivation(neuron=f"{DOWN}:8", **MAGNITUDES)),  # the second not tested (stopped)
        super_weights=(SuperWeight(module=DOWN, layer=1, row=7, column=11, abs_weight=2.5, ratio_to_median=90.0),),
        overlap=Overlap(critical_in_top_massive=(f"{DOWN}:7",), critical_on_super_weight_rows=(f"{DOWN}:7",)),
        positions={"all positions": 4.5, "position 0 only": 3.25}, ablations={"zero": 4.5},
        normalisation={"recomputed": math.inf},
        normalisation_tokens={"recomputed": TokenLesion(delta=math.inf, tokens=9, nonfinite_tokens=1,
                                                        delta_finite_tokens=None, first_nonfinite_module="lm_head",
                                                        largest_finite_abs_output=1e30,
                                                        largest_finite_abs_output_by_layer=(1.0, 1e30))},
        following_norms=("model.norm",),
        criteria=Criteria(massive="m", super_weight="s", causal="c", massive_test="mt", super_weight_test="st",
                          carrying_weight="cw", residual_write="rw"),
        stopped=Stopped.BUDGET, critical_size=3, neurons_tested=1, seconds=2.5, settings={"seed": 0})
    values.update(changes)
    return MechanismReport(**values)


def _summary(**more) -> SetSummary:
    return SetSummary(n=2, reached=True, delta=1.25, neurons=(f"{DOWN}:7", f"{DOWN}:8"),
                      where=Where(modules={"down_proj": 2}, layers={"1": 2}), rows=30, **more)


def harden_record(heel: bool = True) -> HardenRecord:
    outliers = Outliers(layers=(OutlierLayer(layer=0, channel=13, max=0.5, median=0.25, ratio=2.0),), max_ratio=2.0,
                        layer=0, channel=13)
    masked = (NeuronDelta(neuron=f"{DOWN}:13", delta=0.5),)
    search = _summary(stopped="reached", epsilon=1.0, all_neurons=(f"{DOWN}:7", f"{DOWN}:8"))
    same = SameSet(n=2, same_set=True, delta=1.2, reached=True, neurons=search.neurons, where=search.where, rows=1)
    comparison = HeelComparison(
        text_sha256="a" * 64,
        before=HeelProfile(outliers=outliers, masked=masked, scan=_summary(best_delta=1.25), search=search,
                           fixed_basis=search),
        after=HeelProfile(outliers=outliers, masked=masked, scan=_summary(), search=search, original_heel=same,
                          fixed_basis=same),
        budget=Budget(max_neurons=20, max_rows=30, samples=3))
    proof = Proof(texts={"bookends": TextProof(ppl_before=126.0, ppl_after=126.0, ppl_rel_diff=0.0,
                                               max_abs_logit_diff=1e-7, max_abs_logit=0.5, tokens=207)},
                  max_ppl_rel_diff=0.0, max_abs_logit_diff=1e-7,
                  generations=(GenerationProof(tokens=64, identical=False, first_difference=3),),
                  generations_identical=False)
    rotation = Rotation(method="hadamard", seed=0, heads=HeadRotation(values=True, queries_keys_layers=2),
                        model_type="llama", hidden_size=32, untied_embeddings=False, seconds=0.5,
                        orthogonality_error=1e-16,
                        spread=ChannelSpread(channel=13, flatness=1.0, top_share=0.03, uniform_share=0.03),
                        text_sha256="a" * 64)
    return HardenRecord(source_model="tiny", source_fingerprint="f" * 32, hardened_fingerprint="e" * 32,
                        rotation=rotation, proof={"float32": proof} if heel else {},
                        heel=comparison if heel else None, settings={"model": "tiny"})


def analyses() -> dict:
    counts = LayerKindCounts(cells=(LayerKindCell(layer=0, kind="down", count=2),), by_kind={"down": 2},
                             by_layer={"0": 2})
    point = dict(alpha=5.0, samples=4, seed=42, n_star=None, delta=0.5, neurons=())
    return {
        "distribution": DistributionData(layers=(0, 1), kinds=("down",), critical=counts,
                                         top={"top10": counts, "top100": counts}),
        "phase": PhaseData(baseline_ppl=128.0, n_star=1, epsilon=1.0, curve=(Step(n=0, ppl=128.0, delta=0.0),),
                           alone=(NeuronDelta(neuron=f"{DOWN}:7", delta=2.0),), joint_delta=2.0, sum_of_alone=2.0),
        "components": ComponentsData(levels=(1, 3), by_kind={"down": (ComponentLevel(n=1, delta=0.25),)}),
        "sweep": SweepData(reference=SweepPoint(**point), rows=(SweepRow(**point, varied="alpha",
                                                                         jaccard_to_reference=1.0),),
                           epsilon=1.0, stopped=Stopped.INTERRUPTED),
        "robustness": RobustnessData(texts={"a": TextScan(tokens=12, reached=True, n_star=1, delta=1.5,
                                                          neurons=(f"{DOWN}:7",))},
                                     names=("a",), jaccard=((1.0,),),
                                     most_common=(CommonNeuron(neuron=f"{DOWN}:7", texts=1),),
                                     stopped=Stopped.COMPLETE),
        "precision": PrecisionData(rows=(
            PrecisionRow(dtype="float32", reached=True, n_star=1, baseline_ppl=128.0, masked_ppl=float("nan"),
                         delta=math.inf, neurons=(f"{DOWN}:7",), delta_in_float32=math.inf),
            PrecisionFailure(dtype="float16", reached=False, n_star=None, error="non-finite", neurons=())),
            epsilon=1.0),
    }


def _round_trip(result):
    text = json_text(result)
    again = type(result).from_dict(json.loads(text))
    assert json_text(again) == text
    return again


def test_mechanism_report_reads_back_to_itself():
    report = mechanism_report()
    again = _round_trip(report)
    assert again.neurons[0].carrying_weight.share_of_activation is None
    assert again.stopped is Stopped.BUDGET and again.neurons[0].feeding[0].top == ((3, -0.5), (1, 0.25))
    assert again.normalisation_tokens["recomputed"].delta == math.inf
    data = report.to_dict()
    assert "delta_position0" not in data["massive_activations"][1]  # not tested: absent, as files always had it
    assert data["neurons"][0]["residual_write"] is None  # tested, none: written as null
    assert data["neurons"][1]["carrying_weight"] is None and data["neurons"][1]["residual_write"]["delta_zero"] == 4.5
    assert list(data)[-5:] == ["stopped", "critical_size", "neurons_tested", "seconds", "settings"]


def test_harden_record_reads_back_to_itself_and_keeps_each_profiles_order():
    record = harden_record()
    again = _round_trip(record)
    assert isinstance(again.heel.after.fixed_basis, SameSet) and isinstance(again.heel.before.fixed_basis, SetSummary)
    data = record.to_dict()["heel"]
    assert list(data["before"]) == ["outliers", "masked", "scan", "search", "fixed_basis"]
    assert list(data["after"]) == ["outliers", "masked", "scan", "search", "original_heel", "fixed_basis"]
    assert list(data["after"]["fixed_basis"])[:4] == ["n", "same_set", "delta", "reached"]
    assert "best_delta" not in data["after"]["scan"] and data["budget"] == vars(Budget(20, 30, 3))
    plain = harden_record(heel=False)
    assert plain.to_dict()["heel"] == {} and _round_trip(plain).heel is None


@pytest.mark.parametrize("name", ["distribution", "phase", "components", "sweep", "robustness", "precision"])
def test_each_analysis_reads_back_to_itself(name):
    result = AnalysisResult(analysis=name, model="tiny", data=analyses()[name], settings={"epsilon": 1.0})
    again = _round_trip(result)
    assert again.data == result.data or name == "precision"  # nan != nan
    assert list(result.to_dict())[:2] == ["analysis", "model"] and list(result.to_dict())[-1] == "settings"
    # the figures alone (as the analysis functions return them, and older report fixtures hold)
    assert json_text(analysis_data(name, json.loads(json_text(result.data)))) == json_text(result.data)


def test_files_from_before_a_field_existed_still_load(tmp_path):
    old = mechanism_report().to_dict()
    for key in ("stopped", "critical_size", "neurons_tested", "seconds", "settings"):
        del old[key]
    write_json(tmp_path / "mechanism.json", old)
    report = MechanismReport.load(tmp_path / "mechanism.json")
    assert report.stopped is Stopped.COMPLETE and report.critical_size == report.neurons_tested == 2
    assert report.settings == Settings()
    old = harden_record().to_dict()
    del old["proof"], old["heel"]
    write_json(tmp_path / "lesion-harden.json", old)
    record = HardenRecord.load(tmp_path / "lesion-harden.json")
    assert record.proof == {} and record.heel is None
    rotation = harden_record().to_dict()["rotation"]
    del rotation["spread"], rotation["text_sha256"]  # a hardening with no watched channel
    assert Rotation.from_dict(rotation).spread is None


@pytest.mark.parametrize("path, value", [
    (("stopped",), "paused"),
    (("neurons", 0, "max_abs"), "big"),
    (("neurons", 0, "alone"), {"zero": 1.0}),
    (("massive_activations", 0, "rank"), 3),  # a field this schema does not have
    (("normalisation_tokens", "recomputed", "tokens"), 9.5),
    (("overlap",), ["not", "an", "object"]),
])
def test_a_corrupt_mechanism_field_is_refused_in_one_line(tmp_path, path, value):
    data = mechanism_report().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    write_json(tmp_path / "mechanism.json", data)
    with pytest.raises(LesionError) as refused:
        MechanismReport.load(tmp_path / "mechanism.json")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("mutate", [
    lambda d: d["proof"]["float32"]["generations"][0].update(identical="yes"),
    lambda d: d["heel"]["before"].update(masked={"neuron": "x"}),
    lambda d: d["heel"]["after"]["fixed_basis"].update(same_set=True, extra=1),
    lambda d: d["rotation"].update(heads={"values": True}),
])
def test_a_corrupt_hardening_field_is_refused_in_one_line(tmp_path, mutate):
    data = harden_record().to_dict()
    mutate(data)
    write_json(tmp_path / "lesion-harden.json", data)
    with pytest.raises(LesionError) as refused:
        HardenRecord.load(tmp_path / "lesion-harden.json")
    assert "\n" not in str(refused.value)


def test_a_corrupt_analysis_is_refused_in_one_line(tmp_path):
    for name, mutate in (("sweep", lambda d: d.update(stopped="later")),
                         ("phase", lambda d: d["curve"][0].update(n="zero")),
                         ("distribution", lambda d: d["top10"].update(cells=None)),
                         ("nonsense", lambda d: None)):
        result = AnalysisResult(analysis=name if name != "nonsense" else "phase", model="tiny",
                                data=analyses()[name if name != "nonsense" else "phase"])
        data = result.to_dict()
        data["analysis"] = name
        mutate(data)
        write_json(tmp_path / f"analysis-{name}.json", data)
        with pytest.raises(LesionError) as refused:
            AnalysisResult.load(tmp_path / f"analysis-{name}.json")
        assert "\n" not in str(refused.value)


def test_each_result_has_a_readable_notebook_view():
    import lesion.report.notebook  # noqa: F401  (registers the views, as `import lesion` does in IPython)
    page = mechanism_report()._repr_html_()
    assert "<table>" in page and f"{DOWN}:7" in page and "1 of 3 critical neurons" in page and "<pre>" not in page
    page = harden_record()._repr_html_()
    assert "Hardened tiny" in page and "The heel before and after" in page
    for name, data in analyses().items():
        page = AnalysisResult(analysis=name, model="tiny", data=data)._repr_html_()
        assert f"<b>Analysis</b> {name}" in page and ("<img" in page or "<table>" in page)


def test_no_two_record_classes_share_a_name():
    """A notebook view is registered by class name (lesion.results.views): two classes of one name would
    share a view."""
    import importlib
    import pkgutil

    import lesion.results
    from lesion.results.record import Record

    for info in pkgutil.iter_modules(lesion.results.__path__):
        importlib.import_module(f"lesion.results.{info.name}")
    seen: dict[str, str] = {}
    pending = [Record]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("lesion."):
            where = f"{cls.__module__}.{cls.__qualname__}"
            assert seen.setdefault(cls.__name__, where) == where, f"{where} and {seen[cls.__name__]}"
