"""What the critical neurons look like: massive activations, super weights and the weights that produce
or carry a neuron."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from ..masking.masks import hooked
from ..model.neurons import Neuron, SiteIndex
from ..results.mechanism import (ActivationProfile, CarryingWeight, LargestWeight,
                                 SuperWeight, TopActivation, WeightSlice)
from ..masking.weight_lesions import ScalarWeight
from ..model.weights import matrix

MASSIVE_ABS, MASSIVE_RATIO = 100.0, 1000.0


def activation_profile(acts: dict, index: SiteIndex, neuron: Neuron, flat_max: torch.Tensor) -> ActivationProfile:
    a = acts[neuron.module][:, neuron.channel]
    site_median = float(acts[neuron.module].abs().median())
    peak = float(a.abs().max())
    rank = int((flat_max > flat_max[index.flat(neuron)]).sum()) + 1
    return ActivationProfile(neuron=str(neuron), max_abs=peak, argmax_position=int(a.abs().argmax()),
                             value_at_position_0=float(a[0]), site_median_abs=site_median,
                             ratio_to_median=peak / site_median if site_median else float("inf"),
                             rank_by_max_abs=rank, massive=peak > MASSIVE_ABS and peak > MASSIVE_RATIO * site_median)


def _magnitudes(profile: ActivationProfile) -> dict:
    """The fields of a bare profile, for the record that extends it."""
    return {f.name: getattr(profile, f.name) for f in dataclasses.fields(ActivationProfile)}


def massive_activations(acts: dict, index: SiteIndex, top: int = 10) -> list[TopActivation]:
    flat_max = torch.cat([acts[s.name].abs().max(dim=0).values for s in index.sites])
    order = torch.sort(flat_max, descending=True, stable=True).indices[:top]
    return [TopActivation(**_magnitudes(activation_profile(acts, index, n, flat_max)))
            for n in index.neurons(order.tolist())]


def super_weights(model: torch.nn.Module, index: SiteIndex, top: int = 10) -> list[SuperWeight]:
    """Each ``down`` weight's largest entry relative to that matrix's median |w|, the ``top``
    of them across the model (magnitude only: :func:`mechanism` adds the causal test)."""
    rows = []
    for site in index.sites:
        w = matrix(model.get_submodule(site.name)) if site.kind == "down" else None
        if w is None:  # not a down projection, or one inside fused experts (a slice of a 3-D weight)
            continue
        w = w.detach().float().abs()
        ratio = w / w.median().clamp_min(1e-12)
        flat = int(ratio.argmax())
        out_channel, in_channel = divmod(flat, w.shape[1])
        rows.append(SuperWeight(module=site.name, layer=site.layer, row=out_channel, column=in_channel,
                                abs_weight=float(w[out_channel, in_channel]), ratio_to_median=float(ratio.max())))
    return sorted(rows, key=lambda r: -r.ratio_to_median)[:top]


def _median_abs(w: torch.Tensor, module: str, medians: dict | None) -> float:
    """Median |w| of a whole matrix, kept in ``medians`` per module: a 1.5B model's down
    weight has 14M entries, and every neuron of that module would sort them again."""
    if medians is None or module not in medians:
        value = max(float(w.abs().median()), 1e-12)
        if medians is None:
            return value
        medians[module] = value
    return medians[module]


def largest_producing_weight(model: torch.nn.Module, neuron: Neuron,
                             medians: dict | None = None) -> LargestWeight | None:
    """The entry of the row that produces ``neuron`` with the largest |w|, measured against
    the median |w| of the whole matrix as for :func:`super_weights`; None for a module
    without a 2-D weight (activations, norms)."""
    w = matrix(model.get_submodule(neuron.module))
    if w is None or neuron.channel >= w.shape[0]:
        return None
    w = w.detach()
    row = w[neuron.channel].float().abs()
    column = int(row.argmax())
    return LargestWeight(module=neuron.module, row=neuron.channel, column=column, abs_weight=float(row[column]),
                         ratio_to_median=float(row[column]) / _median_abs(w.float(), neuron.module, medians))


def carrying_weights(model: torch.nn.Module, input_ids: torch.Tensor, neurons: Sequence[Neuron],
                     positions: Sequence[int], medians: dict | None = None) -> list[CarryingWeight | None]:
    """For each neuron, the weight that carries its activation at ``positions[i]`` (where it
    peaks): the entry ``W[channel, col]`` with the largest term |w * x_col| there, and that
    term's share of the activation (of the sum of the terms, bias left out). This is how
    Yu et al. locate a super weight from the activations (row: the output channel that
    spikes, column: the input that spikes), which can differ from the largest |w|. None for
    a module without a 2-D weight."""
    inputs: dict[str, torch.Tensor] = {}
    record = {n.module: (lambda m, i, o, name=n.module: inputs.__setitem__(name, i[0].detach().float()))
              for n in neurons if matrix(model.get_submodule(n.module)) is not None}
    body: Any = model.base_model  # a transformers model without its head: the logits are not needed
    with hooked(model, record, raw=True), torch.inference_mode():
        body(input_ids=input_ids)
    out: list[CarryingWeight | None] = []
    for n, p in zip(neurons, positions):
        weight = matrix(model.get_submodule(n.module))
        if n.module not in inputs or weight is None:
            out.append(None)
            continue
        w = weight.detach()
        x = inputs[n.module].reshape(-1, w.shape[1])[p]  # batch of one: (T, in) in every layout
        terms = w[n.channel].float() * x
        column = int(terms.abs().argmax())
        total = float(terms.sum())  # the activation less any bias
        out.append(CarryingWeight(
            module=n.module, row=n.channel, column=column, position=p, weight=float(w[n.channel, column]),
            input=float(x[column]), term=float(terms[column]),
            share_of_activation=float(terms[column]) / total if total else None,
            ratio_to_median=abs(float(w[n.channel, column])) / _median_abs(w.float(), n.module, medians)))
    return out


def _scalar(weight: LargestWeight | CarryingWeight | SuperWeight) -> ScalarWeight:
    return ScalarWeight(weight.module, weight.row, weight.column)


def top_weights(slices, k: int = 3) -> list[WeightSlice]:
    out = []
    for s in slices:
        v = s.values.detach().float().reshape(-1)
        idx = v.abs().topk(min(k, v.numel())).indices
        out.append(WeightSlice(slice=s.name, top=tuple((int(i), float(v[i])) for i in idx)))
    return out
