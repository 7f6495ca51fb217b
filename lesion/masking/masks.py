"""Forward hooks as context managers that always remove what they added.

Everything that touches activations goes through :func:`hooked`: on normal exit, an
exception or Ctrl-C, the hooks it registered are removed in ``finally`` and the model
computes exactly what it computed before.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence, cast

import torch

from ..model.neurons import Neuron, Site, SiteIndex
from ..model.hook_points import hooked

__all__ = ["hooked", "keep_masks", "mask_neurons", "set_neurons"]


def keep_masks(index: SiteIndex, neuron_sets: Sequence[Sequence[Neuron]]) -> dict[str, torch.Tensor]:
    """Per module, a bool (rows, C) tensor: False where row's set masks that channel."""
    rows = len(neuron_sets)
    masks: dict[str, torch.Tensor] = {}
    for row, neurons in enumerate(neuron_sets):
        for n in neurons:
            site = index.site(n)
            if site.name not in masks:
                masks[site.name] = torch.ones(rows, site.width, dtype=torch.bool)
            masks[site.name][row, n.channel] = False
    return masks


def _apply_keep(site: Site, keep: torch.Tensor, positions: slice | None, fill: torch.Tensor | None = None):
    """Hook replacing the channels ``keep`` marks False with 0 (or ``fill``, a per-channel value).

    The mask and the replacement are moved to the activation's device and dtype on the first
    forward and kept there, so later forwards under the same context pay for no copy.
    """
    rows = keep.shape[0]
    prepared: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (device, dtype) -> (keep, value)

    def on(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (output.device, output.dtype)
        if key not in prepared:
            k = keep.to(output.device).view(rows, 1, *site.channel_shape)
            value = (torch.zeros((), dtype=output.dtype, device=output.device) if fill is None
                     else fill.to(output.device, output.dtype).view(1, 1, *site.channel_shape))
            prepared[key] = (k, value)
        return prepared[key]

    def mask(output: torch.Tensor) -> torch.Tensor:
        if site.token_axis == 0:  # (B*T, C): with one mask row, all of it is one "row"
            moved = output.reshape(rows, -1, *site.channel_shape)
        else:
            moved = output.movedim(site.token_axis, 1)  # (B, T, *channel_shape)
        if rows not in (1, moved.shape[0]):
            raise ValueError(f"mask has {rows} rows but the batch has {moved.shape[0]}")
        k, value = on(output)
        if positions is None:
            moved = torch.where(k, moved, value)
        else:
            moved = moved.clone()
            moved[:, positions] = torch.where(k, moved[:, positions], value)
        if site.token_axis == 0:
            return moved.reshape(output.shape)
        return moved.movedim(1, site.token_axis)
    return mask


@contextmanager
def mask_neurons(model: torch.nn.Module, index: SiteIndex,
                 neuron_sets: Sequence[Neuron] | Sequence[Sequence[Neuron]],
                 positions: slice | None = None, fill: Mapping[str, torch.Tensor] | None = None) -> Iterator[None]:
    """Zero the given neurons at every token position (or at ``positions``).

    ``neuron_sets`` is one set of neurons, applied to every batch row, or a list of
    sets, one per batch row, so that several masks are evaluated in one forward pass.
    ``fill`` maps a module name to a per-channel value (C,) used instead of zero (mean ablation).
    """
    sets = cast(Sequence[Sequence[Neuron]],
                [neuron_sets] if not neuron_sets or isinstance(neuron_sets[0], Neuron) else neuron_sets)
    masks = keep_masks(index, sets)
    fill = fill or {}
    fns = {name: _apply_keep(index.by_name[name], keep, positions, fill.get(name)) for name, keep in masks.items()}
    with hooked(model, fns):
        yield


@contextmanager
def set_neurons(model: torch.nn.Module, index: SiteIndex, values: Mapping[Neuron, torch.Tensor | float],
                positions: slice | None = None) -> Iterator[None]:
    """Overwrite neurons with given values instead of zero (mean or resampled ablations).

    A value is a scalar or a (T,) tensor, one per token position; every batch row gets it.
    """
    by_site: dict[str, list[tuple[int, torch.Tensor | float]]] = {}
    for neuron, value in values.items():
        by_site.setdefault(index.site(neuron).name, []).append((neuron.channel, value))

    def setter(site: Site, items):
        def patch(output: torch.Tensor) -> torch.Tensor:
            out = output.clone()
            view = out.movedim(site.token_axis, 1) if site.token_axis else out.unsqueeze(0)
            view = view.reshape(view.shape[0], view.shape[1], site.width)  # shares memory for contiguous layouts
            sel = slice(None) if positions is None else positions
            for channel, value in items:
                value = torch.as_tensor(value, dtype=out.dtype, device=out.device)
                view[:, sel, channel] = value if value.dim() == 0 else value[sel]
            return view.reshape(out.movedim(site.token_axis, 1).shape).movedim(1, site.token_axis) \
                if site.token_axis else view.reshape(output.shape)
        return patch

    with hooked(model, {name: setter(index.by_name[name], items) for name, items in by_site.items()}):
        yield
