"""Causal tests of a mechanism: per-token lesions, frozen norms, resampled values."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import torch

from ..model import architectures
from ..errors import LesionError
from ..masking.masks import hooked, mask_neurons
from ..masking.metrics import delta, mean_nll, token_nll
from ..model.neurons import Neuron, SiteIndex
from ..results.mechanism import (TokenLesion)
from ..method.study import Study
from ..method.rankers import noise_generator
from .graph import norm_layers
CAUSAL_DELTA = 1.0  # a lesion is called causal when it alone raises perplexity ten-fold


def verdict(delta_value: float) -> str:
    return "causal" if delta_value >= CAUSAL_DELTA else "not causal"


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


def lesion_tokens(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                  neurons: Sequence[Neuron], clean: float) -> TokenLesion:
    """Delta of masking ``neurons`` with the per-token view a bare Delta hides: how many token
    losses are non-finite, Delta over the finite ones, the first module (in forward order)
    whose output is non-finite, and the largest finite |output| of any module of each block,
    which shows how a value grows towards an overflow."""
    blocks = architectures.block_prefix(model)
    first_nonfinite: list[str] = []
    largest: dict[str, torch.Tensor] = {}

    def watch(name):
        def check(output):
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            finite = torch.isfinite(output)
            if not first_nonfinite and not bool(finite.all()):
                first_nonfinite.append(name)
            largest[name] = output.abs().where(finite, 0).max().double().cpu()
        return check

    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    with mask_neurons(model, index, list(neurons)), hooked(model, {n: watch(n) for n in leaves}), \
            torch.inference_mode():
        nll = token_nll(model, input_ids)[0].double()
    by_layer: dict[int, float] = {}
    for name, value in largest.items():
        if name.startswith(blocks + "."):
            layer = architectures.layer_of(name, blocks)
            by_layer[layer] = max(by_layer.get(layer, 0.0), float(value))
    finite = torch.isfinite(nll)
    return TokenLesion(delta=delta(float(nll.mean()), clean), tokens=int(nll.numel()),
                       nonfinite_tokens=int((~finite).sum()),
                       delta_finite_tokens=delta(float(nll[finite].mean()), clean) if bool(finite.any()) else None,
                       first_nonfinite_module=first_nonfinite[0] if first_nonfinite else None,
                       largest_finite_abs_output=max(map(float, largest.values()), default=0.0),
                       largest_finite_abs_output_by_layer=tuple(by_layer[layer] for layer in sorted(by_layer)))


@contextlib.contextmanager
def frozen_norms(model: torch.nn.Module, input_ids: torch.Tensor, names: Sequence[str] | None = None):
    """The norm layers ``names`` (default: all) reuse the scale statistic of the clean run
    (RMS, or std for LayerNorm): out = (x - mean) / stat_clean * weight (+ bias). The clean
    statistics are recorded on entry, on ``input_ids``, so enter it before any lesion and run
    that same text inside (any number of batch rows); another length is refused."""
    norms = {n: model.get_submodule(n) for n in (norm_layers(model) if names is None else names)}

    def stat(module, x):
        # With the module's own epsilon, so that output * stat_masked / stat_clean is exact.
        x, eps = x.float(), getattr(module, "variance_epsilon", getattr(module, "eps", 0.0))
        if isinstance(module, torch.nn.LayerNorm):
            return (x.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt()
        return (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()

    clean: dict[str, list[torch.Tensor]] = {}
    record = {n: (lambda m, i, o, n=n: clean.setdefault(n, []).append(stat(m, i[0]))) for n in norms}
    with hooked(model, record, raw=True), torch.inference_mode():
        model(input_ids=input_ids)
    shared = [n for n, stats in clean.items() if len(stats) > 1]
    if shared:
        raise LesionError(f"cannot freeze {', '.join(shared)}: a norm that runs more than once per forward "
                          "has no single clean statistic")

    def rescale(name):
        clean_stat = clean[name][0]

        # The module already divided by the masked run's statistic: multiplying by
        # stat_masked / stat_clean swaps it for the clean one, for any norm flavour
        # (Gemma's x * (1 + weight) included). In float32: a ratio cast to float16 overflows early.
        def hook(module, inputs, output):
            masked_stat = stat(module, inputs[0])
            if masked_stat.shape[1:] != clean_stat.shape[1:]:
                raise LesionError(f"{name}: frozen on a text of shape {tuple(clean_stat.shape)}, run on "
                                  f"{tuple(masked_stat.shape)}: freeze the norms on the text you run")
            ratio = masked_stat / clean_stat
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                return ((output.float() - bias.float()) * ratio + bias.float()).to(output.dtype)
            return (output.float() * ratio).to(output.dtype)
        return hook

    with hooked(model, {n: rescale(n) for n in norms}, raw=True):
        yield


def _tested(weight, d: float):
    """``weight`` (a LargestWeight, CarryingWeight or SuperWeight) with the Delta of zeroing it."""
    return dataclasses.replace(weight, delta_zeroed=d, causal=d >= CAUSAL_DELTA)
