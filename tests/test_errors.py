"""One error tree, checks on the parameter in the library, and no flag text outside the CLI.

Bad values go straight to the library function that guards them: each must raise the class of
the tree that says what is wrong, naming the parameter (``ParameterError.parameter``), without
a model where the check needs none. The CLI's own matrix (tests/test_bad_inputs.py) checks the
one line and exit code 2.
"""
import ast
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import lesion
from lesion.cli import FLAGS, error_line, flag
from lesion.errors import (BudgetExhausted, ConfigError, InconsistentRun, JournalMismatch, LesionError, MissingPackage,
                           ModelError, ModelMismatch, ParameterError, ResultError, name_parameters)

ROOT = Path(__file__).resolve().parents[1]


def test_one_tree():
    for cls in (ParameterError, ConfigError, ResultError, InconsistentRun, JournalMismatch, ModelMismatch,
                ModelError, MissingPackage, BudgetExhausted):
        assert issubclass(cls, LesionError), cls
    assert issubclass(ConfigError, ParameterError)
    assert issubclass(InconsistentRun, ResultError) and issubclass(JournalMismatch, ResultError)
    assert not issubclass(ModelMismatch, ParameterError) and not issubclass(ResultError, ParameterError)
    # one class each, wherever it is imported from
    from lesion.heel import BudgetExhausted as heel_budget
    from lesion.heel.scorer import JournalMismatch as scorer_journal
    from lesion.plan.config import ConfigError as plan_config
    from lesion.replay.runfolder import InconsistentRun as run_inconsistent
    assert (heel_budget, scorer_journal, plan_config, run_inconsistent) == \
        (BudgetExhausted, JournalMismatch, ConfigError, InconsistentRun)
    assert not issubclass(ModelError, (ParameterError, ResultError, ModelMismatch))
    assert (lesion.ParameterError, lesion.ResultError, lesion.ModelMismatch, lesion.BudgetExhausted,
            lesion.ModelError, lesion.MissingPackage) == \
        (ParameterError, ResultError, ModelMismatch, BudgetExhausted, ModelError, MissingPackage)


def test_the_cli_shows_each_backticked_parameter_as_its_flag():
    error = ParameterError("per_signal", "gives an empty pool: widen `signals` (`max_rows` too)")
    assert error_line(error) == "--pool gives an empty pool: widen --signals (--max-rows too)"
    assert str(error) == "per_signal gives an empty pool: widen `signals` (`max_rows` too)"
    assert error_line(LesionError("out of memory: use `dtype` bfloat16")) == "out of memory: use --dtype bfloat16"
    assert error_line(ResultError("'x.json' is not valid JSON")) == "'x.json' is not valid JSON"
    # a name the namer does not know keeps its backticks; `lesion sites` is a command, not a parameter
    assert name_parameters("`a` and `b`, see `lesion sites`", {"a": "--a"}.get) == "--a and `b`, see `lesion sites`"
    assert flag("max_rows") == "--max-rows" and all(flag(p) == f for p, f in FLAGS.items())


def _flag_strings(path: Path) -> list[str]:
    """String literals (not docstrings) in ``path`` holding a command-line flag."""
    flag_text = re.compile(r"(?<![\w-])--[a-z]")
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [f"{path}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and flag_text.search(node.value.replace("pip install --no-deps", ""))]


def test_no_flag_text_in_library_code():
    # The CLI's flags live in lesion/cli; browser.py passes Chromium's flags, upcycle.py is its own script.
    others = ("cli", "report/browser.py", "tools/upcycle.py")
    library = [p for p in sorted((ROOT / "lesion").rglob("*.py"))
               if not str(p.relative_to(ROOT / "lesion")).startswith(others)]
    assert len(library) > 50
    assert [hit for p in library for hit in _flag_strings(p)] == []
    # the scan finds what it looks for
    assert _flag_strings(ROOT / "lesion" / "cli" / "common.py")


def _raises(call, cls, parameter=None):
    with pytest.raises(cls) as caught:
        call()
    if parameter is not None:
        assert caught.value.parameter == parameter, caught.value
    return caught.value


def _noise(**kw):
    from lesion.method.rankers import check_noise_options
    return lambda: check_noise_options(**kw)


def _rank(**kw):
    from lesion.method.rankers import check_rank_options
    return lambda: check_rank_options(**kw)


def _keep(keep):
    from lesion.method.rankers import check_keep
    return lambda: check_keep(keep)


def _stage2(**kw):
    from lesion.method.stage2 import check_options
    return lambda: check_options(**kw)


def _eval_plan(**kw):
    from lesion.evaluation.suite import EvalPlan
    return lambda: EvalPlan(**kw).check()


def _levels(levels, n):
    from lesion.evaluation.suite import check_levels
    return lambda: check_levels(levels, n)


def _device(device, device_map=None):
    from lesion.model.loading import check_device
    return lambda: check_device(device, device_map)


def _generation(prompt, tokens):
    from lesion.replay.generation import check_generation
    return lambda: check_generation(prompt, tokens)


def _analysis(name, **options):
    from lesion.analysis.registry import check_analysis_options
    return lambda: check_analysis_options(name, options)


def _seed(seed):
    from lesion.runtime.options import check_seed
    return lambda: check_seed(seed)


def _unit_name(text):
    from lesion.model.experts import unit_name
    return lambda: unit_name(text)


def _upcycle(**kw):
    from lesion.tools.upcycle import check_upcycle
    return lambda: check_upcycle(**kw)


LIBRARY_CASES = [
    ("alpha-nan", lambda: _noise(alpha=math.nan), "alpha"),
    ("alpha-negative", lambda: _noise(alpha=-1.0), "alpha"),
    ("alpha-overflowing", lambda: _noise(alpha=1e308), "alpha"),
    ("samples-0", lambda: _noise(samples=0), "samples"),
    ("samples-huge", lambda: _noise(samples=10 ** 8), "samples"),
    ("samples-word", lambda: _noise(samples="many"), "samples"),
    ("seed-negative", lambda: _noise(seed=-1), "seed"),
    ("seed-overflow", lambda: _seed(2 ** 64), "seed"),
    ("batch-size-0", lambda: _noise(batch_size=0), "batch_size"),
    ("max-samples-1", lambda: _noise(samples="auto", max_samples=1), "max_samples"),
    ("max-samples-without-auto", lambda: _rank(samples=4, max_samples=2), "max_samples"),
    ("keep-0", lambda: _keep(0), "keep"),
    ("epsilon-nan", lambda: _stage2(epsilon=math.nan), "epsilon"),
    ("epsilon-0", lambda: _stage2(epsilon=0.0), "epsilon"),
    ("step-0", lambda: _stage2(step=0), "step"),
    ("step-beyond-max-neurons", lambda: _stage2(step=50, max_neurons=10), "step"),
    ("max-neurons-0", lambda: _stage2(max_neurons=0), "max_neurons"),
    ("stage2-name", lambda: _stage2(stage2="binary"), "stage2"),
    ("device-foo", lambda: _device("foo"), "device"),
    ("device-meta", lambda: _device("meta"), "device"),
    ("device-map-odd", lambda: _device("cpu", "everywhere"), "device_map"),
    ("eval-batch-size-0", lambda: _eval_plan(batch_size=0), "batch_size"),
    ("eval-window-1", lambda: _eval_plan(window=1, stride=1), "window"),
    ("eval-stride-beyond-window", lambda: _eval_plan(window=8, stride=9), "stride"),
    ("eval-max-tokens-negative", lambda: _eval_plan(max_tokens=-1), "max_tokens"),
    ("eval-nothing", lambda: _eval_plan(corpora=()), "corpora"),
    ("eval-levels-word", lambda: _levels([0, "x"], 3), "levels"),
    ("eval-levels-beyond", lambda: _levels([4], 3), "levels"),
    ("generate-max-new-tokens-0", lambda: _generation("Hi", 0), "max_new_tokens"),
    ("generate-empty-prompt", lambda: _generation("  ", 4), "prompt"),
    ("analysis-time-budget-ignored", lambda: _analysis("phase", time_budget=5.0), "time_budget"),
    ("analysis-unknown", lambda: _analysis("bogus"), "name"),
    ("unit-expert-given-a-neuron", lambda: _unit_name("model.layers.1.mlp.down_proj:507"), "unit"),
    ("unit-expert-given-a-negative-expert", lambda: _unit_name("model.layers.1.mlp.experts.-1"), "unit"),
    ("upcycle-experts-0", lambda: _upcycle(experts=0), "experts"),
    ("upcycle-top-k-beyond-experts", lambda: _upcycle(experts=2, top_k=3), "top_k"),
    ("upcycle-noise-nan", lambda: _upcycle(noise=math.nan), "noise"),
    ("upcycle-seed-negative", lambda: _upcycle(seed=-1), "seed"),
]


@pytest.mark.parametrize("name, make, parameter", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_a_bad_value_is_refused_on_its_parameter(name, make, parameter):
    _raises(make(), ParameterError, parameter)


def test_valid_values_pass_the_same_checks():
    from lesion.evaluation.suite import EvalPlan, check_levels
    from lesion.method.rankers import check_noise_options, check_rank_options
    from lesion.method.stage2 import check_options
    check_noise_options(samples="auto", max_samples=2, alpha=5.0, seed=0)
    assert check_rank_options(samples="auto") == 100 and check_rank_options(samples="auto", max_samples=7) == 7
    check_options(epsilon=1.0, step=10, max_neurons=10, stage2="gallop")
    EvalPlan(max_tokens=0).check()
    assert check_levels(["all", 2], 3) == [0, 2, 3]


def test_analysis_parameters_are_checked_in_the_library():
    from lesion.analysis.precision import precision
    from lesion.analysis.registry import AnalysisInputs, REGISTRY
    inputs = AnalysisInputs()
    _raises(lambda: REGISTRY["distribution"].compute(inputs, top_k=[0]), ParameterError, "top_k")
    _raises(lambda: REGISTRY["components"].compute(inputs, levels=[]), ParameterError, "levels")
    _raises(lambda: REGISTRY["phase"].compute(inputs, max_n=0), ParameterError, "max_n")
    _raises(lambda: REGISTRY["sweep"].compute(inputs, alphas=[1.0, math.nan]), ParameterError, "alphas")
    _raises(lambda: REGISTRY["sweep"].compute(inputs, alphas=[1e308]), ParameterError, "alphas")
    _raises(lambda: REGISTRY["sweep"].compute(inputs, alphas=[], sample_grid=[], seed_grid=[]), ParameterError,
            "alphas")
    # an unknown dtype is the caller's error, not a finding recorded per dtype (and no model is loaded)
    _raises(lambda: precision("no-such-model", "text", ["float32", "float8"]), ParameterError, "dtypes")


def test_a_fingerprint_dtype_mismatch_names_dtype():
    from lesion.replay.verify import fingerprint_dtype
    assert fingerprint_dtype({"dtype": "bfloat16"}) == "bfloat16"
    _raises(lambda: fingerprint_dtype({"dtype": "bfloat16"}, "float32"), ParameterError, "dtype")


def test_a_damaged_result_file_is_a_result_error(tmp_path):
    from lesion.results import Ranking
    path = tmp_path / "ranking.json"
    for content in ('{"model": "x", "neurons": [', "[1, 2]", '{"model": "x"}'):
        path.write_text(content)
        _raises(lambda: Ranking.load(path), ResultError)  # noqa: B023 (called at once)
    _raises(lambda: Ranking.load(tmp_path / "none.json"), ResultError)


def test_a_result_of_another_model_is_a_model_mismatch():
    from lesion.method.study import check_same_model
    lm = SimpleNamespace(revision=None, name="tiny", fingerprint=lambda: "aaaa")
    from lesion.results import Settings
    _raises(lambda: check_same_model(Settings.of(model_fingerprint="bbbb"), lm, "ranking"), ModelMismatch)
    _raises(lambda: check_same_model(Settings(), lm, "ranking"), ModelMismatch)
    check_same_model(Settings.of(model_fingerprint="aaaa"), lm, "ranking")


def test_a_critical_set_without_neurons_is_refused_where_neurons_are_needed(tmp_path):
    from lesion.replay.runfolder import check_has_neurons
    _raises(lambda: check_has_neurons(SimpleNamespace(neurons=()), tmp_path / "critical.json"), ResultError)
    check_has_neurons(SimpleNamespace(neurons=("m:1",)), tmp_path / "critical.json")


def test_the_budget_is_part_of_the_tree_and_a_search_still_catches_it():
    # the row budget raising BudgetExhausted is how a search learns to stop (tests/test_heel.py
    # checks the search returns its best set); as a LesionError it is one line should it escape
    assert error_line(BudgetExhausted("the row budget is spent")) == "the row budget is spent"


def test_a_model_lesion_cannot_study_is_a_model_error():
    import torch
    from lesion.model.architectures import block_prefix
    from lesion.model.neurons import _probe_shapes
    from lesion.tools.upcycle import upcycle
    no_blocks = SimpleNamespace(config=SimpleNamespace(model_type="bogus", num_hidden_layers=2),
                                named_modules=lambda: iter([("", torch.nn.Linear(2, 2))]))
    _raises(lambda: block_prefix(no_blocks), ModelError)
    _raises(lambda: upcycle(SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))), ModelError)

    class Broken(torch.nn.Module):  # a forward that needs more than input ids
        config = SimpleNamespace(model_type="broken", vocab_size=8)

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)

        def forward(self, input_ids, use_cache=False):
            raise TypeError("needs pixel_values")
    broken = Broken()
    _raises(lambda: _probe_shapes(broken, {"proj": broken.proj}, 4), ModelError)


def test_a_missing_optional_package_is_a_missing_package(monkeypatch):
    import builtins
    from lesion.texts import corpora
    real_import = builtins.__import__

    def no_gensim(name, *args, **kwargs):
        if name.startswith("gensim"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_gensim)
    _raises(lambda: corpora.load_corpus("enwiki-gensim"), MissingPackage)


def test_non_finite_scores_name_the_cause_float32_or_alpha():
    """A narrower dtype is named when the model ran in one; in float32 the noise scale is the cause."""
    import torch
    from lesion.model.neurons import Site, SiteIndex
    from lesion.results import Settings
    from lesion.method.rankers import Scores, ranking_from_scores
    scores = Scores(torch.tensor([1.0, math.inf]))
    index = SiteIndex([Site("model.layers.0.mlp.down_proj", 0, "down", (2,), 1)])
    _raises(lambda: ranking_from_scores(index, scores, "noise", 2, "m", Settings.of(dtype="bfloat16")),
            ParameterError, "dtype")
    _raises(lambda: ranking_from_scores(index, scores, "noise", 2, "m", Settings.of(dtype="float32", alpha=1e5)),
            ParameterError, "alpha")
    _raises(lambda: ranking_from_scores(index, scores, "gradient", 2, "m", Settings.of(dtype="float32")),
            ParameterError, "ranker")


def test_a_neuron_with_two_channels_is_not_read_as_a_module_named_with_the_first():
    from lesion.model.neurons import Neuron
    _raises(lambda: Neuron.parse("model.layers.11.mlp.down_proj:507:3"), LesionError)
    assert Neuron.parse(" model.layers.11.mlp.down_proj:507 ") == Neuron("model.layers.11.mlp.down_proj", 507)


def test_mask_refuses_a_neuron_given_twice_before_any_model():
    from lesion.replay.recorded import check_mask_neurons
    _raises(lambda: check_mask_neurons(["m.a:1", "m.b:2", "m.a:1"]), ParameterError, "neurons")
    _raises(lambda: check_mask_neurons([]), ParameterError, "neurons")
    assert len(check_mask_neurons([], result="heel.json")) == 0


def test_library_calls_refuse_wrong_types_on_the_parameter():
    """What a notebook passes by mistake is a ParameterError naming it, not a ValueError from deep inside."""
    from lesion.heel import SearchPlan
    from lesion.heel.search import text_names
    from lesion.texts.passages import corpus_passages
    from lesion.method.study import Study
    from lesion.texts.text import encode
    for text in (None, 123, b"bytes"):
        _raises(lambda: encode(None, text), ParameterError, "text")  # noqa: B023 (called at once)
    _raises(lambda: Study.identify(None, None, epsilon=True), ParameterError, "epsilon")
    _raises(lambda: Study.identify(None, None, max_neurons=1.5), ParameterError, "max_neurons")
    for texts in ([], {}, [None]):
        _raises(lambda: text_names(texts), ParameterError, "texts")  # noqa: B023
    _raises(lambda: text_names(["a text", "another", "a text"]), ParameterError, "texts")
    for name, value in (("epsilon", "1"), ("max_rows", 1.5), ("max_rows", True), ("screen", -1)):
        _raises(lambda: SearchPlan(**{name: value}).check(), ParameterError, name)  # noqa: B023
    _raises(lambda: corpus_passages("no-such-corpus", 10 ** 9), ParameterError, "passages")  # before any reading


def test_a_model_spec_that_names_nothing_loadable_is_refused_before_any_load(tmp_path):
    from lesion.runtime.files import check_output_folder, check_output_path
    from lesion.model.aliases import resolve
    for spec in ("", "  ", "SmolLM2-135M", str(tmp_path)):  # empty, an alias in other case, a folder without config
        _raises(lambda: resolve(spec), ParameterError, "model")  # noqa: B023
    _raises(lambda: check_output_path("", "out"), ParameterError, "out")
    _raises(lambda: check_output_folder("", "out"), ParameterError, "out")


# Issue 34: numbers that cannot mean anything, and the library holding the CLI's checks.

@pytest.mark.parametrize("alpha", [1e-30, 1e-300])
def test_alpha_below_float32_resolution_is_refused(study, alpha):
    _raises(lambda: study.rank("noise", alpha=alpha, samples=2, progress=False), ParameterError, "alpha")


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -1.0, True])
def test_alpha_that_is_no_noise_scale_is_refused(study, alpha):
    _raises(lambda: study.rank("noise", alpha=alpha, samples=2, progress=False), ParameterError, "alpha")


def test_all_zero_noise_scores_are_refused_not_ranked_in_module_order():
    import torch
    from lesion.method.rankers import check_scores
    _raises(lambda: check_scores(torch.zeros(7), "noise", "float32", 5.0), ParameterError, "alpha")


def test_int_alpha_is_recorded_as_the_cli_float(study):
    five = study.rank("noise", alpha=5, samples=2, keep=5, progress=False)
    five_point_zero = study.rank("noise", alpha=5.0, samples=2, keep=5, progress=False)
    assert five.settings.alpha == 5.0 and isinstance(five.settings.alpha, float)
    assert five.settings == five_point_zero.settings and five.neurons == five_point_zero.neurons


def test_identify_refuses_a_ranking_of_another_text_and_a_non_ranking(study):
    from lesion.method.study import Study
    ranking = study.rank("noise", samples=2, keep=5, progress=False)
    other = Study.create(study.lm, study.text + " and a different ending")
    _raises(lambda: other.identify(ranking, progress=False), ParameterError, "ranking")
    _raises(lambda: study.identify(None, progress=False), ParameterError, "ranking")


def test_api_misuse_is_refused_on_its_parameter(study):
    from lesion.heel.search import search_heel, text_names
    from lesion.method.study import Study
    from lesion.model.loading import load_model
    _raises(lambda: load_model(123), ParameterError, "model")
    _raises(lambda: Study.create("name"), ParameterError, "lm")
    _raises(lambda: search_heel("name", ["a text"], None), ParameterError, "lm")
    _raises(lambda: search_heel(study.lm, ["a text"], {"max_rows": 50}), ParameterError, "plan")
    _raises(lambda: text_names(["one text", "another"], ["same", "same"]), ParameterError, "names")
    _raises(lambda: text_names(["one text", "another"], ["only one"]), ParameterError, "names")


def test_load_model_takes_a_path(tiny_dir):
    from lesion.model.loading import load_model
    assert load_model(Path(tiny_dir)).name == load_model(tiny_dir).name


def test_random_runs_that_cannot_fit_in_memory_are_refused(study):
    from lesion.method.compare import compare_rankers
    _raises(lambda: compare_rankers(study, ["random"], [1, 2], random_runs=10 ** 12, progress=False),
            ParameterError, "random_runs")
