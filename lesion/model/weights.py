"""The weights that produce a neuron and those that consume it, for any layout.

A neuron of a linear module is produced by one row of its weight (a column for GPT-2's
``Conv1D``, which stores ``(in, out)``) and its bias entry. What reads it depends on
where it writes: a residual writer (``down``, ``o``) is read by column ``channel`` of
every module of the next block that takes the hidden state (and of the LM head after the
last block), and by the next norms' scale; an MLP-internal neuron (``gate``, ``up``,
``act``) by column ``channel`` of its block's ``down``; ``v`` by its block's ``o``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import experts
from ..errors import ModelError
from .neurons import Neuron, SiteIndex

RESIDUAL_WRITERS = ("down", "o")
READ_BY = {"gate": "down", "up": "down", "gate_up": "down", "act": "down", "v": "o", "qkv": "o"}


@dataclass(frozen=True)
class WeightSlice:
    name: str  # e.g. "model.layers.11.mlp.down_proj.weight[507,:]"
    values: torch.Tensor


def parameter(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>`` with its values, also when accelerate offloaded it (``--device-map``):
    the module then holds a meta tensor, and its hook's ``weights_map`` the real one."""
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor) or value.device.type != "meta":
        return value
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:
        weights = getattr(h, "weights_map", None)
        if weights is not None and name in weights:
            return weights[name]
    raise ModelError(f"the {name} of {type(module).__name__} has no values (a meta tensor that accelerate "
                     "did not offload): load the model without `device_map` or with enough memory")


def matrix(module: torch.nn.Module) -> torch.Tensor | None:
    """The module's weight as (out, in), or None for a module without a 2-D weight."""
    weight = parameter(module, "weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    return weight.T if type(module).__name__ == "Conv1D" else weight


def _expert_slices(model: torch.nn.Module, neuron: Neuron, which: int) -> list[WeightSlice] | None:
    found = experts.weight_slices(model, neuron.module, neuron.channel)
    return None if found is None else [WeightSlice(name, values.detach()) for name, values in found[which]]


def site_matrix(model: torch.nn.Module, name: str) -> torch.Tensor | None:
    """The (out, in) weight whose rows write the site ``name``'s channels: its module's, or for a tap
    inside fused experts, that expert's slice of the fused weight."""
    w = matrix(model.get_submodule(name))
    return experts.tap_matrix(model, name) if w is None else w


def producers(model: torch.nn.Module, neuron: Neuron) -> list[WeightSlice]:
    fused = _expert_slices(model, neuron, 0)
    if fused is not None:
        return fused
    module = model.get_submodule(neuron.module)
    out = []
    w = matrix(module)
    if w is not None and neuron.channel < w.shape[0]:
        out.append(WeightSlice(f"{neuron.module}.weight[{neuron.channel},:]", w[neuron.channel].detach()))
    for pname in ("bias", "weight"):
        p = parameter(module, pname)
        if isinstance(p, torch.Tensor) and p.dim() == 1 and neuron.channel < p.numel():
            values = p[neuron.channel:neuron.channel + 1].detach()
            out.append(WeightSlice(f"{neuron.module}.{pname}[{neuron.channel}]", values))
    return out


def consumers(model: torch.nn.Module, index: SiteIndex, neuron: Neuron) -> list[WeightSlice]:
    site = index.site(neuron)
    fused = _expert_slices(model, neuron, 1)
    if fused is not None:
        return fused
    c = neuron.channel
    prefix = neuron.module.rsplit(f".{site.layer}.", 1)[0]  # the blocks' ModuleList path
    if site.kind in RESIDUAL_WRITERS:
        n_layers = 1 + max(s.layer for s in index.sites)
        scope = f"{prefix}.{site.layer + 1}." if site.layer + 1 < n_layers else None
    else:
        scope = f"{prefix}.{site.layer}."
    wanted = READ_BY.get(site.kind)
    out = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        if scope is None:  # after the last block: the final norm and the LM head
            if name.startswith(prefix + "."):
                continue
        elif not name.startswith(scope):
            continue
        reader = index.by_name.get(name)
        if isinstance(module, torch.nn.Embedding):
            continue
        if wanted is not None and (reader is None or reader.kind != wanted):
            continue
        if wanted is None and reader is not None and reader.kind in RESIDUAL_WRITERS:
            continue  # they read the attention output or the MLP hidden state, not the residual
        w = matrix(module)
        if w is not None and w.shape[1] == site.width:
            out.append(WeightSlice(f"{name}.weight[:,{c}]", w[:, c].detach()))
        elif wanted is None and w is None and isinstance(scale := parameter(module, "weight"), torch.Tensor) \
                and scale.dim() == 1 and scale.numel() == site.width:
            out.append(WeightSlice(f"{name}.weight[{c}]", scale[c:c + 1].detach()))
    return out
