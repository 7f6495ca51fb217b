"""The one place that scores lesions: Delta of many neuron sets under one ablation.

An ablation says what a masked neuron's activation becomes:

- ``zero``: 0 at every token position (the paper's lesion);
- ``mean``: its mean over the text's positions, at every position (mean ablation);
- ``position0``: 0 at the first token only, the attention-sink position.

Every set is one batch row; ``max_rows`` rows go through one forward, fewer if memory
runs out. An empty set is the unmasked model.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .batching import split_on_oom
from .errors import LesionError
from .hooks import mask_neurons
from .metrics import delta, mean_nll
from .neurons import Neuron, SiteIndex

from .options import ABLATIONS


def check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise LesionError(f"unknown ablation {ablation!r}: use one of {', '.join(ABLATIONS)}")


def channel_means(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                  modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per module, each channel's mean activation over the text's positions, (C,) float32."""
    from .hooks import hooked
    means: dict[str, torch.Tensor] = {}
    sites = [index.by_name[m] for m in dict.fromkeys(modules)]
    record = {s.name: (lambda out, s=s: means.__setitem__(s.name, s.channels(out)[0].float().mean(dim=0)))
              for s in sites}
    with hooked(model, record), torch.inference_mode():
        model.base_model(input_ids=input_ids)
    return means


def masked_nll(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
               neuron_sets: Sequence[Sequence[Neuron]], max_rows: int = 32, ablation: str = "zero",
               means: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Mean NLL of the text under each neuron set (one set per batch row)."""
    check_ablation(ablation)
    sets = [list(s) for s in neuron_sets]
    if ablation == "mean" and means is None:
        means = channel_means(model, input_ids, index, [n.module for s in sets for n in s])
    positions = slice(0, 1) if ablation == "position0" else None
    fill = means if ablation == "mean" else None

    def run(chunk: list[list[Neuron]]) -> list[float]:
        with mask_neurons(model, index, chunk, positions=positions, fill=fill):
            return mean_nll(model, input_ids, rows=len(chunk)).tolist()

    return [nll for i in range(0, len(sets), max_rows) for nll in split_on_oom(run, sets[i:i + max_rows])]


def baseline_nll(model: torch.nn.Module, input_ids: torch.Tensor, dtype: str = "") -> float:
    """The unmasked model's mean NLL on the text; a non-finite one is refused, not averaged."""
    nll = mean_nll(model, input_ids)[0].item()
    if not math.isfinite(nll):
        raise LesionError(f"the unmasked model's perplexity is non-finite{' in ' + dtype if dtype else ''}: "
                          "use --dtype float32")
    return nll


def set_deltas(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
               neuron_sets: Sequence[Sequence[Neuron]], clean: float, **options) -> list[float]:
    """Delta (log10 perplexity ratio to ``clean``, a mean NLL) of each set; options as :func:`masked_nll`."""
    return [delta(nll, clean) for nll in masked_nll(model, input_ids, index, neuron_sets, **options)]
