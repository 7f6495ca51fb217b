"""Why the critical neurons matter: massive activations, super weights, positions, ablation
designs and normalisation.

Criteria (stated so that results can be compared):
- massive activation (Sun et al. 2024): a neuron whose largest |activation| on the text is
  > 100 and > 1000x the median |activation| of its module;
- super weight candidate, data-free (after Yu et al. 2024): in each ``down`` weight, the
  entry with the largest |w| relative to the median |w| of that matrix; the top ones across
  the model are listed, and a critical ``down`` neuron matches when it is the row
  (output channel) of one.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from . import architectures
from .hooks import hooked, mask_neurons, set_neurons
from .metrics import delta, mean_nll
from .neurons import Neuron, SiteIndex, discover_sites
from .pipeline import Study
from .rankers import clean_activations, noise_generator
from .search import baseline_nll, masked_nll
from .texts import encode
from .weights import consumers, producers

MASSIVE_ABS, MASSIVE_RATIO = 100.0, 1000.0


def activation_profile(acts: dict, index: SiteIndex, neuron: Neuron, flat_max: torch.Tensor) -> dict:
    a = acts[neuron.module][:, neuron.channel]
    site_median = float(acts[neuron.module].abs().median())
    peak = float(a.abs().max())
    rank = int((flat_max > flat_max[index.flat(neuron)]).sum()) + 1
    return {"neuron": str(neuron), "max_abs": peak, "argmax_position": int(a.abs().argmax()),
            "value_at_position_0": float(a[0]), "site_median_abs": site_median,
            "ratio_to_median": peak / site_median if site_median else float("inf"),
            "rank_by_max_abs": rank, "massive": peak > MASSIVE_ABS and peak > MASSIVE_RATIO * site_median}


def massive_activations(acts: dict, index: SiteIndex, top: int = 10) -> list[dict]:
    flat_max = torch.cat([acts[s.name].abs().max(dim=0).values for s in index.sites])
    order = torch.sort(flat_max, descending=True, stable=True).indices[:top]
    return [activation_profile(acts, index, n, flat_max) for n in index.neurons(order.tolist())]


def super_weights(model: torch.nn.Module, index: SiteIndex, top: int = 10) -> list[dict]:
    from .weights import matrix
    rows = []
    for site in index.sites:
        if site.kind != "down":
            continue
        w = matrix(model.get_submodule(site.name)).detach().float().abs()
        ratio = w / w.median().clamp_min(1e-12)
        flat = int(ratio.argmax())
        out_channel, in_channel = divmod(flat, w.shape[1])
        rows.append({"module": site.name, "layer": site.layer, "row": out_channel, "column": in_channel,
                     "abs_weight": float(w[out_channel, in_channel]), "ratio_to_median": float(ratio.max())})
    return sorted(rows, key=lambda r: -r["ratio_to_median"])[:top]


def top_weights(slices, k: int = 3) -> list[dict]:
    out = []
    for s in slices:
        v = s.values.detach().float().reshape(-1)
        idx = v.abs().topk(min(k, v.numel())).indices
        out.append({"slice": s.name, "top": [(int(i), float(v[i])) for i in idx]})
    return out


def _deltas(study: Study, runs: dict, clean: float) -> dict:
    """{label: Delta}, each run a context manager factory that applies one lesion."""
    out = {}
    for label, make in runs.items():
        with make():
            out[label] = delta(mean_nll(study.lm.model, study.input_ids).item(), clean)
    return out


def resample_values(study: Study, acts_other: dict, neurons: Sequence[Neuron], seed: int) -> dict:
    gen = noise_generator(seed)
    t = study.input_ids.shape[1]
    out = {}
    for n in neurons:
        pool = acts_other[n.module][:, n.channel]
        out[n] = pool[torch.randint(len(pool), (t,), generator=gen)]
    return out


def norm_layers(model: torch.nn.Module) -> list[str]:
    """Names of the norm layers in forward order (block norms, per-head q/k norms, final norm)."""
    return [n for n, m in model.named_modules()
            if next(m.children(), None) is None and architectures.kind_of(n, m) in ("ln", "norm")]


def forward_order(model: torch.nn.Module, input_ids: torch.Tensor) -> list[str]:
    """Leaf modules in the order their forwards finish (registration order is not forward
    order: Llama registers ``input_layernorm`` after ``mlp``)."""
    order: list[str] = []
    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    with hooked(model, {n: (lambda out, n=n: order.append(n)) for n in leaves}), torch.inference_mode():
        model(input_ids=input_ids)
    return order


def following_norm(model: torch.nn.Module, module: str, order: Sequence[str]) -> str | None:
    """The first residual-stream norm to run after ``module``: for a Llama ``down_proj`` the next
    block's ``input_layernorm`` (the final norm after the last block); for Gemma's sandwich
    layout the ``post_feedforward_layernorm`` that reads it directly."""
    later = order[order.index(module) + 1:]
    return next((n for n in later if architectures.kind_of(n, model.get_submodule(n)) == "ln"), None)


@contextlib.contextmanager
def frozen_norms(model: torch.nn.Module, input_ids: torch.Tensor, names: Sequence[str] | None = None):
    """The norm layers ``names`` (default: all) reuse the scale statistic of the clean run
    (RMS, or std for LayerNorm): out = (x - mean) / stat_clean * weight (+ bias). The clean
    statistics are recorded on entry, so enter it before any lesion."""
    norms = {n: model.get_submodule(n) for n in (norm_layers(model) if names is None else names)}

    def stat(module, x):
        # With the module's own epsilon, so that output * stat_masked / stat_clean is exact.
        x, eps = x.float(), getattr(module, "variance_epsilon", getattr(module, "eps", 0.0))
        if isinstance(module, torch.nn.LayerNorm):
            return (x.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt()
        return (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()

    clean = {}
    record = {n: (lambda m, i, o, n=n: clean.__setitem__(n, stat(m, i[0]))) for n in norms}
    with hooked(model, record, raw=True), torch.inference_mode():
        model(input_ids=input_ids)

    def rescale(name):
        # The module already divided by the masked run's statistic: multiplying by
        # stat_masked / stat_clean swaps it for the clean one, for any norm flavour.
        def hook(module, inputs, output):
            ratio = (stat(module, inputs[0]) / clean[name]).to(output.dtype)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                return (output - bias) * ratio + bias
            return output * ratio
        return hook

    with hooked(model, {n: rescale(n) for n in norms}, raw=True):
        yield


def mechanism(study: Study, critical: Sequence[Neuron], *, other_text: str, seed: int = 0) -> dict:
    model, ids = study.lm.model, study.input_ids
    index = discover_sites(model, "all")
    critical = list(critical)
    acts = clean_activations(model, ids, index)
    flat_max = torch.cat([acts[s.name].abs().max(dim=0).values for s in index.sites])
    massive = massive_activations(acts, index)
    supers = super_weights(model, index)
    clean = baseline_nll(model, ids, study.lm.dtype)
    other_ids = encode(study.lm.tokenizer, other_text, study.lm.device)
    other = clean_activations(model, other_ids, index)
    means = {n: float(acts[n.module][:, n.channel].mean()) for n in critical}
    massive_names = {m["neuron"] for m in massive}
    super_rows = {f"{s['module']}:{s['row']}" for s in supers}
    neurons = []
    for n in critical:
        profile = activation_profile(acts, index, n, flat_max)
        profile.update(in_top_massive=str(n) in massive_names, super_weight_row=str(n) in super_rows,
                       feeding=top_weights(producers(model, n)), leaving=top_weights(consumers(model, index, n)))
        neurons.append(profile)
    t = ids.shape[1]
    positions = _deltas(study, {
        "all positions": lambda: mask_neurons(model, index, critical),
        "position 0 only": lambda: mask_neurons(model, index, critical, positions=slice(0, 1)),
        "all but position 0": lambda: mask_neurons(model, index, critical, positions=slice(1, t)),
    }, clean)
    ablations = _deltas(study, {
        "zero": lambda: mask_neurons(model, index, critical),
        "mean": lambda: set_neurons(model, index, means),
        "resample": lambda: set_neurons(model, index, resample_values(study, other, critical, seed)),
    }, clean)
    norm = {"recomputed": ablations["zero"]}
    order = forward_order(model, ids)
    following = sorted({f for f in (following_norm(model, n.module, order) for n in critical) if f})
    for label, names in (("frozen: following norm only", following), ("frozen: every norm", None)):
        with frozen_norms(model, ids, names):
            norm[label] = delta(masked_nll(model, ids, index, [critical])[0], clean)
    return {"neurons": neurons, "massive_activations": massive, "super_weights": supers,
            "overlap": {"critical_in_top_massive": sorted(massive_names & set(map(str, critical))),
                        "critical_on_super_weight_rows": sorted(super_rows & set(map(str, critical)))},
            "positions": positions, "ablations": ablations, "normalisation": norm, "following_norms": following,
            "criteria": {"massive": f"|a| > {MASSIVE_ABS} and > {MASSIVE_RATIO}x its module's median |a|",
                         "super_weight": "largest |w| / median |w| of each down_proj weight"}}
