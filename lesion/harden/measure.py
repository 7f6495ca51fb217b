"""The heel before and after hardening, on one text: how massive the largest residual channel
is, what masking given neurons does, the paper's prefix n* (Stage 1 + Stage 2), and the
smallest heel ``lesion search`` finds within a fixed budget of masked rows."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import torch

from ..masking.ablation import baseline_nll, set_deltas
from ..errors import LesionError
from ..model.neurons import Neuron, discover_sites
from ..runtime.anytime import Stopped
from ..results.harden import Budget, HeelProfile, OutlierLayer, Outliers, SameSet, SetSummary, Where
from ..results.sets import NeuronDelta
from ..texts.text import encode
from ..model.hook_points import hooked

SHOWN = 10  # neurons listed per set in the report
# The MLP's intermediate neurons: the elementwise nonlinearity fixes their basis, so no exact
# rotation moves them, and a heel made of them is a heel of the hardened model too.
FIXED_BASIS = "gate,up,act"


def residual_outliers(model: torch.nn.Module, ids: torch.Tensor) -> Outliers:
    """Per block: the residual channel with the largest |activation| (over tokens) and its ratio
    to the median channel's largest |activation|. A massive activation has a ratio in the
    hundreds or thousands; a rotated one is spread and has a ratio near that of noise."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(i):
        def fn(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            outputs[i] = hidden[0].detach().float().abs().amax(dim=0)
        return fn

    blocks = {f"model.layers.{i}": keep(i) for i in range(len(model.model.layers))}
    with torch.inference_mode(), hooked(model, blocks, raw=True):
        model(input_ids=ids, use_cache=False)
    rows = []
    for i in sorted(outputs):
        peak = outputs[i]
        channel = int(peak.argmax())
        median = float(peak.median())
        rows.append(OutlierLayer(layer=i, channel=channel, max=float(peak[channel]), median=median,
                                 ratio=float(peak[channel]) / median if median > 0 else float("inf")))
    top = max(rows, key=lambda r: r.ratio)
    return Outliers(layers=tuple(rows), max_ratio=top.ratio, layer=top.layer, channel=top.channel)


def heel_writer(model: torch.nn.Module, ids: torch.Tensor, channel: int) -> Neuron:
    """The down_proj output neuron that writes most into residual ``channel``: the usual
    single-neuron heel of a model with a massive activation (SmolLM2: layer 11, channel 507)."""
    index = discover_sites(model, "down")
    peaks: dict[str, float] = {}

    def record(name):
        def fn(output):
            peaks[name] = float(output[..., channel].abs().max())
            return None
        return fn

    with torch.inference_mode(), hooked(model, {s.name: record(s.name) for s in index.sites}):
        model(input_ids=ids, use_cache=False)
    return Neuron(max(peaks, key=peaks.get), channel)


def sets_deltas(model: torch.nn.Module, ids: torch.Tensor, sets: list[list[Neuron]], dtype: str) -> list[float]:
    """Delta of each set masked alone, against one clean forward."""
    index = discover_sites(model, "all")
    index.check([n for s in sets for n in s])
    return set_deltas(model, ids, index, sets, baseline_nll(model, ids, dtype))


def mask_deltas(model: torch.nn.Module, ids: torch.Tensor, neurons: list[Neuron], dtype: str) -> list[NeuronDelta]:
    deltas = sets_deltas(model, ids, [[n] for n in neurons], dtype)
    return [NeuronDelta(neuron=str(n), delta=d) for n, d in zip(neurons, deltas)]


def where(neurons) -> Where:
    """Where a set sits: counts by component kind and by layer."""
    index_kinds = Counter(n.module.rsplit(".", 1)[-1] for n in neurons)
    layers = Counter(int(n.module.split(".")[2]) for n in neurons if n.module.count(".") >= 2
                     and n.module.split(".")[2].isdigit())
    return Where(modules=dict(index_kinds), layers={str(k): v for k, v in sorted(layers.items())})


def set_summary(neuron_set, rows: int | None = None, **more) -> SetSummary:
    return SetSummary(n=len(neuron_set.neurons), reached=bool(neuron_set.reached), delta=neuron_set.delta,
                      neurons=tuple(str(n) for n in neuron_set.neurons[:SHOWN]), where=where(neuron_set.neurons),
                      rows=rows, **more)


def scan_summary(lm, text: str, budget: Budget, progress: bool) -> SetSummary:
    """The paper's two stages; gallop Stage 2, so a model with no small prefix costs log rows."""
    from ..method.study import Study
    study = Study.create(lm, text)
    _, critical = study.scan(samples=budget.samples, seed=budget.seed, max_neurons=budget.max_neurons,
                             stage2="gallop", progress=progress)
    # the best Delta any prefix tried gave (it matters when the threshold was not reached)
    best = max(step.delta for step in critical.trajectory) if critical.trajectory else None
    return set_summary(critical, critical.forward_rows, best_delta=best)


def search_summary(lm, text: str, budget: Budget, progress: bool, components: str | None = None) -> SetSummary:
    """``lesion search`` with its defaults (the portfolio of restricted sub-searches included) but
    the budget's rows and no time budget, so that the same model gives the same set on any machine."""
    from ..heel import SearchPlan, search_heel
    heel = search_heel(lm, [text], SearchPlan(max_rows=budget.max_rows), progress=progress, components=components,
                       noise_options={"samples": budget.samples, "seed": budget.seed})
    if heel.stopped == Stopped.INTERRUPTED:  # the search keeps its best set and returns; hardening stops entirely
        raise KeyboardInterrupt
    return set_summary(heel, heel.rows, stopped=heel.stopped, epsilon=heel.settings.epsilon_or_default,
                       all_neurons=tuple(str(n) for n in heel.neurons),
                       found_by=heel.portfolio.found_by if heel.portfolio is not None else None)


def same_sets_after(lm, ids: torch.Tensor, found: list[SetSummary]) -> list[SameSet]:
    """Sets the searches found on the original, each masked as one set on the hardened model. A
    fixed-basis heel's neurons compute the same values there, so its Delta should not move; the
    original's heel is, by the same names, coordinates of a rotated basis."""
    sets = [[Neuron.parse(n) for n in f.all_neurons or ()] for f in found]
    masked = [s for s in sets if s]  # a search that found nothing at all has nothing to mask
    deltas = iter(sets_deltas(lm.model, ids, masked, lm.dtype) if masked else [])
    rows = []
    for f, s in zip(found, sets):
        d = next(deltas) if s else 0.0
        epsilon = 1.0 if f.epsilon is None else f.epsilon
        rows.append(SameSet(n=len(s), same_set=True, delta=d, reached=bool(d >= epsilon), neurons=f.neurons,
                            where=f.where, rows=1))
    return rows


def heel_profile(lm, text: str, neurons: list[Neuron] | None, budget: Budget | None, progress: bool = True,
                 original: HeelProfile | None = None) -> HeelProfile:
    """Everything the report compares, on one model: call it on the original, then on the hardened
    with ``original`` (the first call's profile), whose fixed-basis heel is masked as it is."""
    ids = encode(lm.tokenizer, text, lm.device)
    outliers = residual_outliers(lm.model, ids)
    if neurons is None:
        neurons = [heel_writer(lm.model, ids, outliers.channel)]
    profile = HeelProfile(outliers=outliers, masked=tuple(mask_deltas(lm.model, ids, neurons, lm.dtype)))
    if budget is None:
        return profile
    scan, search = scan_summary(lm, text, budget, progress), search_summary(lm, text, budget, progress)
    if original is None:
        return replace(profile, scan=scan, search=search,
                       fixed_basis=search_summary(lm, text, budget, progress, FIXED_BASIS))
    found = [original.search, original.fixed_basis]
    if not all(isinstance(f, SetSummary) for f in found):
        raise LesionError("the original's profile has no searches to mask on the hardened model: measure it "
                         "with the same budget")
    original_heel, fixed_basis = same_sets_after(lm, ids, found)  # type: ignore[arg-type]
    return replace(profile, scan=scan, search=search, original_heel=original_heel, fixed_basis=fixed_basis)
