"""Adaptive K (--samples auto): stops only when the top of the ranking is settled."""
import pytest
import torch

from lesion.errors import ParameterError
from lesion.model.neurons import Neuron, discover_sites
from lesion.method.rankers import rank_by_noise
from lesion.method.rankers import settle_z
from conftest import make_tiny


def with_planted_top(scale_a: float, scale_b: float | None):
    """Tiny Llama whose last down_proj channels 5 (and 9) dominate: 9 is 5 times (scale_b / scale_a)."""
    model = make_tiny("llama")
    weight = model.model.layers[1].mlp.down_proj.weight  # (out channels, in)
    with torch.no_grad():
        row = weight[5].clone()
        weight[5] = scale_a * row
        if scale_b is not None:
            weight[9] = scale_b * row
    return model, discover_sites(model, "down")


def auto(model, index, ids, **options):
    return rank_by_noise(model, ids, index, samples="auto", seed=3, alpha=0.5, progress=False, **options)


def test_two_nearly_tied_neurons_keep_auto_sampling_to_the_cap(ids):
    model, index = with_planted_top(300.0, 300.0 * (1 + 1e-3))
    early = rank_by_noise(model, ids, index, samples=10, seed=3, alpha=0.5, progress=False)
    late = rank_by_noise(model, ids, index, samples=40, seed=3, alpha=0.5, progress=False)
    top2 = [int(i) for i in torch.topk(early.values, 2).indices]
    assert top2 == [int(i) for i in torch.topk(late.values, 2).indices]  # the order never moves...
    result = auto(model, index, ids, max_samples=40)
    assert result.adaptive["samples_used"] == 40 and result.adaptive["stopped"] == "cap"
    assert result.adaptive["settled_top"] == 0  # ...yet it is not certified: 0.1 % apart is noise
    assert result.adaptive["settle_top"] >= 2


def test_a_clear_winner_stops_early_with_the_scores_of_that_many_samples(ids):
    model, index = with_planted_top(1000.0, None)
    result = auto(model, index, ids, max_samples=100, batch_size=5)
    a = result.adaptive
    assert a["stopped"] == "settled" and a["samples_used"] == 10 and a["settled_top"] >= a["settle_top"] >= 1
    assert a["confidence"] == 0.95
    assert index.neuron(int(result.values.argmax())) == Neuron("model.layers.1.mlp.down_proj", 5)
    fixed = rank_by_noise(model, ids, index, samples=10, batch_size=5, seed=3, alpha=0.5, progress=False)
    assert torch.equal(result.values, fixed.values) and torch.equal(result.positions, fixed.positions)
    again = auto(model, index, ids, max_samples=100, batch_size=5)
    assert torch.equal(result.values, again.values) and again.adaptive == a
    other_batch = auto(model, index, ids, max_samples=100, batch_size=16)
    assert other_batch.adaptive["samples_used"] == 10  # K does not depend on the batch size


def test_settle_z_covers_every_bound():
    assert settle_z(1, 0.95) == pytest.approx(1.6449, abs=1e-4)
    assert settle_z(10**7, 0.95) > settle_z(10**3, 0.95) > 3.8


def test_bad_adaptive_options(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down")
    bad = [{"max_samples": 1}, {"max_samples": 10 ** 6}, {"settle_top": 0}, {"confidence": 1.0}]
    for options in bad:
        with pytest.raises(ParameterError) as refused:
            rank_by_noise(tiny_llama, ids, index, samples="auto", progress=False, **options)
        assert refused.value.parameter == next(iter(options))
    for options in ({"samples": "many"}, {"alpha": float("nan")}, {"seed": -1}, {"batch_size": 0}):
        with pytest.raises(ParameterError) as refused:
            rank_by_noise(tiny_llama, ids, index, progress=False, **options)
        assert refused.value.parameter == next(iter(options))


def test_scan_records_k_used_and_confidence(tiny_dir, tmp_path, capsys):
    from lesion.cli import main
    from lesion.runtime.files import read_json
    out = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", "Later reviews were more positive, said the writer.",
                 "--samples", "auto", "--max-samples", "20", "--stage2", "gallop", "--epsilon", "0.001",
                 "--no-cache", "--quiet", "--out", str(out)]) == 0
    ranking, critical = read_json(out / "ranking.json")["settings"], read_json(out / "critical.json")["settings"]
    assert ranking["samples"] == "auto" and ranking["max_samples"] == 20
    assert ranking["samples_used"] in (10, 20) and ranking["confidence"] == 0.95
    assert critical["stage2"] == "gallop" and "bracket" in critical["gallop"]
    assert isinstance(critical["critical_within_settled"], bool)


@pytest.mark.parametrize("argv, parameter", [(["--samples", "lots"], "samples"),
                                             (["--samples", "auto", "--max-samples", "1"], "max_samples"),
                                             (["--samples", "5", "--max-samples", "9"], "max_samples")])
def test_bad_samples_is_one_line(tiny_dir, refused, argv, parameter):
    refused(["scan", "--model", tiny_dir, *argv, "--quiet"], parameter)


def test_a_critical_set_beyond_the_settled_top_is_said_on_screen_and_in_the_report(tiny_dir, tmp_path, capsys):
    from lesion.cli import main
    from lesion.runtime.files import read_json
    out = tmp_path / "run"
    # Two samples settle nothing on a random tiny model: the whole critical set is unvouched for.
    assert main(["scan", "--model", tiny_dir, "--text", "Later reviews were more positive, said the writer.",
                 "--samples", "auto", "--max-samples", "2", "--epsilon", "0.001", "--no-cache", "--quiet",
                 "--report", "--out", str(out)]) == 0
    critical = read_json(out / "critical.json")["settings"]
    assert critical["stopped"] == "cap" and critical["critical_within_settled"] is False
    screen = " ".join(capsys.readouterr().out.split())
    assert "used all 2 samples" in screen and "another --seed can give another set" in screen
    assert "used all 2 samples" in (out / "report.md").read_text()


def test_the_unsettled_note_names_the_fix():
    from lesion.results import Settings, unsettled_note
    assert unsettled_note(Settings.of(critical_within_settled=True, stopped="cap")) is None
    assert unsettled_note(Settings()) is None  # a fixed-K ranking
    early = unsettled_note(Settings.of(critical_within_settled=False, stopped="settled", settled_top=3,
                                       max_samples=100))
    # the fix named by parameter (the CLI shows each as its flag: tests/test_adaptive.py's scan test)
    assert "past the top 3" in early and "`samples` 100" in early
    assert "`seed`" in unsettled_note(Settings.of(critical_within_settled=False))  # a hand-edited file: no KeyError


def planted_study(scales: dict[int, float]):
    """A Study of a tiny Llama whose layer-1 down_proj channels are scaled by ``scales``."""
    from conftest import char_tokenizer
    from lesion.model.loading import LoadedModel
    from lesion.method.study import Study
    model = make_tiny("llama")
    weight = model.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        row = weight[5].clone()
        for channel, scale in scales.items():
            weight[channel] = scale * row
    lm = LoadedModel(model.eval(), char_tokenizer(), "tiny", "float32")
    return Study.create(lm, "Later reviews were more positive, said the writer.", "down")


def stage2_reading(n: int, calls: list, reached: bool = True):
    """A stand-in for Stage 2 whose answer is the top n of whatever ranking it is given (or,
    not ``reached``, no set after reading the top n)."""
    from lesion.results import CriticalSet, Step

    def fake(model, input_ids, index, candidates, **options):
        calls.append(list(candidates[:n]))
        return CriticalSet("tiny", tuple(candidates[:n]) if reached else (), 1.0, 100.0, 2.0, reached,
                           (Step(n, 100.0, 2.0),), n + 1, options["settings"])
    return fake


@pytest.mark.parametrize("cap, settles", [(100, True), (15, False)])
def test_scan_samples_again_until_the_top_stage2_read_is_settled(monkeypatch, cap, settles):
    # Channel 5 alone is the head (the others score under a tenth of it) and settles at K = 10;
    # Stage 2 reads the top 3, whose order needs more samples.
    study = planted_study({5: 1000.0, 9: 95.0, 11: 30.0})
    calls = []
    monkeypatch.setattr("lesion.method.study.find_critical_set", stage2_reading(3, calls))
    ranking, critical = study.scan(samples="auto", max_samples=cap, alpha=0.5, seed=3, use_cache=False,
                                   progress=False)
    first = study.rank(samples="auto", max_samples=cap, alpha=0.5, seed=3, use_cache=False, progress=False)
    assert first.settings.settle_top == 1 and first.settings.samples_used == 10  # the head alone
    s = ranking.settings
    assert len(calls) == 2 and s.settle_top == 3 and s.samples_used > 10  # Stage 1 sampled again
    assert [n.channel for n in critical.neurons] == [5, 9, 11]
    if settles:
        assert s.stopped == "settled" and s.settled_top >= 3 and s.samples_used == 20
        assert critical.settings.critical_within_settled is True
    else:
        assert s.stopped == "cap" and s.samples_used == cap
        assert critical.settings.critical_within_settled is False


def test_scan_does_not_repeat_a_search_that_never_reached_epsilon(monkeypatch):
    study = planted_study({5: 1000.0, 9: 95.0, 11: 30.0})
    calls = []
    monkeypatch.setattr("lesion.method.study.find_critical_set", stage2_reading(3, calls, reached=False))
    ranking, critical = study.scan(samples="auto", alpha=0.5, seed=3, use_cache=False, progress=False)
    assert len(calls) == 1 and ranking.settings.samples_used == 10
    assert critical.settings.critical_within_settled is False  # and the note says what settled
