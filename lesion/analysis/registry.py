"""The analyses, registered once each: name, one line of help, what it runs on, how it
computes, and the few lines a console shows. ``lesion analyze`` is built from this table;
:func:`run_analysis` is the library call that does what the command does."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ParameterError

if TYPE_CHECKING:  # the registry is read by `lesion --help`, which must not wait for torch
    from ..results.analysis import AnalysisData, AnalysisResult, RobustnessData


@dataclass(frozen=True)
class AnalysisInputs:
    """What an analysis may run on. ``on`` of its entry says which it needs: ``run`` (a study
    on the run folder's model and text, with its ranking and critical set), ``text`` (a study
    on a text), ``model`` (a loaded model and several texts) or ``spec`` (a model spec, loaded
    once per dtype)."""
    study: object = None  # lesion.method.study.Study
    ranking: object = None  # lesion.results.Ranking
    critical: object = None  # lesion.results.CriticalSet
    lm: object = None  # lesion.model.loading.LoadedModel
    texts: dict = field(default_factory=dict)
    model: str | None = None
    text: str | None = None
    device: str = "cpu"
    rank_options: dict = field(default_factory=dict)  # Stage 1: alpha, samples, seed, progress


@dataclass(frozen=True)
class Analysis:
    name: str
    summary: str
    on: str  # run | text | model | spec
    compute: Callable[..., tuple[AnalysisData, dict]]  # (inputs, **options) -> (figures, settings)
    lines: Callable[[Any], dict | list]  # its figures -> a few lines for the console; the JSON has everything


def check_counts(parameter: str, values, empty_ok: bool = False) -> list[int]:
    """Whole numbers >= 1 (top-k sizes, levels, sample counts); none only where ``empty_ok``."""
    values = list(values)
    if (not values and not empty_ok) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ParameterError(parameter, f"must be whole numbers >= 1, e.g. 1,10,100 (got {values!r})")
    return values


def _distribution(i: AnalysisInputs, top_k=(10, 100, 1000)):
    from .distribution import distribution
    check_counts("top_k", top_k)
    return distribution(i.study.index, i.ranking.neurons, i.critical.neurons, list(top_k)), i.study.settings()


def _phase(i: AnalysisInputs, max_n=None):
    from .phase import phase_transition
    if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1):
        raise ParameterError("max_n", f"must be a whole number >= 1 (got {max_n!r})")
    result = phase_transition(i.study, i.ranking.neurons, i.critical.neurons, max_n,
                              epsilon=i.critical.settings.epsilon_or_default)
    return result, i.study.settings()


def _components(i: AnalysisInputs, kinds=None, levels=(1, 3, 10, 100, 1000)):
    from .components import component_ablation
    check_counts("levels", levels)
    return (component_ablation(i.study, kinds, list(levels), **i.rank_options),
            i.study.settings(**_recorded(i.rank_options)))


def _sweep(i: AnalysisInputs, alphas=(1, 3, 5, 7, 10), sample_grid=(25, 50, 75, 100, 125), seed_grid=(43, 44),
           epsilon=1.0, stage2="linear", time_budget=None):
    from .sweep import sensitivity_sweep
    options = {k: v for k, v in i.rank_options.items() if k not in ("alpha", "samples", "seed")}

    from ..runtime.options import MAX_SEED
    if not (alphas or sample_grid or seed_grid):
        raise ParameterError("alphas", "and `sample_grid` and `seed_grid` are all empty: the sweep has no points")
    from ..method.rankers import MAX_ALPHA
    bad = [a for a in alphas if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= MAX_ALPHA]
    if bad:
        raise ParameterError("alphas", f"must be numbers > 0 and <= {MAX_ALPHA:g}, e.g. 1,3,5,7,10 (got {bad[0]!r})")
    check_counts("sample_grid", sample_grid, empty_ok=True)
    if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in seed_grid):
        raise ParameterError("seed_grid", f"must be seeds 0..{MAX_SEED}, e.g. 43,44 (got {list(seed_grid)!r})")
    result = sensitivity_sweep(i.study, list(alphas), list(sample_grid), list(seed_grid),
                               ref_alpha=i.rank_options.get("alpha", 5.0),
                               ref_samples=i.rank_options.get("samples", 100), seed=i.rank_options.get("seed", 42),
                               epsilon=epsilon, stage2=stage2, time_budget=time_budget, **options)
    return result, i.study.settings(**_recorded(options), stage2=stage2)


def _robustness(i: AnalysisInputs, epsilon=1.0, stage2="linear", time_budget=None):
    from ..method.provenance import model_provenance
    from ..texts.text import text_hash
    from .robustness import robustness
    result = robustness(i.lm, i.texts, epsilon=epsilon, stage2=stage2, time_budget=time_budget, **i.rank_options)
    return result, {**model_provenance(i.lm), "epsilon": epsilon, "stage2": stage2, **_recorded(i.rank_options),
                    "text_sha256": {name: text_hash(t) for name, t in i.texts.items()}}


def _precision(i: AnalysisInputs, dtypes=("float32", "bfloat16", "float16"), epsilon=1.0, stage2="linear"):
    from ..texts.text import BOOKENDS, text_hash
    from .precision import precision
    text = i.text or BOOKENDS
    result = precision(i.model, text, list(dtypes), epsilon=epsilon, device=i.device, stage2=stage2,
                       **i.rank_options)
    return result, {"model": i.model, "text_sha256": text_hash(text), "text": text, "epsilon": epsilon,
                    "stage2": stage2, **_recorded(i.rank_options)}


def _recorded(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "progress"}  # how it was shown is not how it was made


def _robustness_lines(result: RobustnessData) -> dict:
    per_text = {k: {"tokens": v.tokens, "n_star": v.n_star, "neurons": list(v.neurons[:5])}
                for k, v in result.texts.items()}
    return {**per_text, f"most common (of {len(per_text)} texts)": [c.to_dict() for c in result.most_common[:3]]}


def _picked(rows, names: tuple[str, ...]) -> list[dict]:
    """Some fields of each row, by name, as the console shows them (None where a row has none)."""
    return [{name: getattr(row, name, None) for name in names} for row in rows]


REGISTRY: dict[str, Analysis] = {a.name: a for a in (
    Analysis("distribution", "where the critical and top-k neurons sit, by layer and kind", "run", _distribution,
             lambda r: {"critical_by_kind": r.critical.by_kind,
                        "top100_by_kind": r.top["top100"].by_kind if "top100" in r.top else None}),
    Analysis("phase", "Delta as n grows past n*, and each critical neuron alone vs jointly", "run", _phase,
             lambda r: {"n_star": r.n_star, "joint_delta": r.joint_delta, "alone": [a.to_dict() for a in r.alone],
                        "curve": [(p.n, round(p.delta, 3)) for p in r.curve]}),
    Analysis("components", "Delta of the top-n neurons of each component kind", "text", _components,
             lambda r: {k: [(x.n, round(x.delta, 3)) for x in v] for k, v in r.by_kind.items()}),
    Analysis("sweep", "the critical set across alpha, K and the noise seed", "text", _sweep,
             lambda r: _picked(r.rows, ("varied", "alpha", "samples", "seed", "n_star", "jaccard_to_reference"))),
    Analysis("robustness", "the critical set on several texts, and their overlap", "model", _robustness,
             _robustness_lines),
    Analysis("precision", "the scan in float32, bfloat16 and float16", "spec", _precision,
             lambda r: _picked(r.rows, ("dtype", "n_star", "delta", "delta_in_float32", "error"))),
)}


def check_analysis_options(name: str, options: dict) -> None:
    """Refuse an option analysis ``name`` does not take (a time budget for an analysis without a
    loop of scans would be ignored), before any model loads."""
    import inspect
    if name not in REGISTRY:
        raise ParameterError("name", f"{name!r} is not an analysis: use one of {', '.join(REGISTRY)}")
    takes = list(inspect.signature(REGISTRY[name].compute).parameters)[1:]
    for option in options:
        if option not in takes:
            raise ParameterError(option, f"is not taken by the {name} analysis (it takes "
                                         f"{', '.join(f'`{t}`' for t in takes) or 'no option'}): drop it")


def run_analysis(name: str, inputs: AnalysisInputs, **options) -> "AnalysisResult":
    """Run analysis ``name`` on ``inputs`` with its own ``options`` (see each entry's compute)."""
    from ..results import Settings
    from ..results.analysis import AnalysisResult
    check_analysis_options(name, options)
    data, given = REGISTRY[name].compute(inputs, **options)
    settings = Settings.of(given)
    model = inputs.model if inputs.model is not None else settings.model
    return AnalysisResult(analysis=name, model=model, data=data, settings=settings)
