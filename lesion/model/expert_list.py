"""Experts kept as a list of modules (``...experts`` a ``ModuleList``: transformers 4's Mixtral,
Qwen2-MoE and OLMoE layout, and models people write themselves).

Each expert there runs on the rows of the tokens routed to it, gathered from the block's flattened
input, so its neurons' outputs are (routed rows, C), in an order only the block's routing code
knows. While a hook sits on one of them, the block runs under :class:`_RowsMode`, which follows the
rows of its input through the gathers, slices and reshapes that hand them to an expert: the first
module of an expert to run says which tokens the expert got, and the expert's later modules (its
activation, its down projection) run on the same rows. A hook then sees the same dense (batch,
tokens, C) tensor, 0 at tokens not routed to the expert, as on transformers 5's fused experts
(:mod:`lesion.model.experts`), and the routed rows of what it returns are put back.

A block whose experts receive rows that did not come straight from its input (scaled by their
routing weight first, as Llama 4 does) is refused with one line when a hook needs them, never
masked at the wrong tokens.
"""
from __future__ import annotations

import re
import types
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from ..errors import LesionError

_SAME_ROWS = {torch.Tensor.reshape, torch.Tensor.view, torch.Tensor.contiguous, torch.Tensor.to,
              torch.Tensor.float, torch.Tensor.type_as, torch.Tensor.clone, torch.reshape}
_GATHERS = {torch.Tensor.__getitem__, torch.Tensor.index_select, torch.index_select}


def is_expert_list(name: str, module: torch.nn.Module) -> bool:
    """A ``ModuleList`` called ``experts`` inside a block, each entry holding weights of its own."""
    return (isinstance(module, torch.nn.ModuleList) and name.rpartition(".")[2] == "experts" and "." in name
            and len(module) > 0 and all(any(True for _ in e.parameters()) for e in module))


class _RowsMode(TorchFunctionMode):
    """Which rows of the block's flattened input (N, H) each tensor made from it holds."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden
        self.width = hidden.shape[-1]
        self.tokens = hidden.numel() // self.width
        self.shape = (hidden.shape[0], hidden.shape[1]) if hidden.dim() == 3 else (1, self.tokens)
        self.tracked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (tensor kept alive, rows)

    def rows_of(self, t: object) -> torch.Tensor | None:
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[-1] != self.width:
            return None
        entry = self.tracked.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1]
        if (t.dim() == 2 and t.shape[0] == self.tokens and t.data_ptr() == self.hidden.data_ptr()
                and t.stride() == (self.width, 1)):
            return torch.arange(self.tokens, device=t.device)
        return None

    def _track(self, out: object, rows: torch.Tensor | None) -> None:
        if rows is not None and isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[-1] == self.width \
                and out.numel() // self.width == rows.numel():
            self.tracked[id(out)] = (out, rows)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SAME_ROWS:
            self._track(out, self.rows_of(args[0]))
        elif func in _GATHERS:
            rows = self.rows_of(args[0])
            if rows is not None:
                self._track(out, _gathered(rows, func, args, kwargs or {}))
        return out


def _gathered(rows: torch.Tensor, func, args, kwargs) -> torch.Tensor | None:
    """The rows ``func(source, ...)`` picks from a source holding ``rows``; None for a pick lesion
    does not follow (then the expert that gets it is refused)."""
    if func is torch.Tensor.__getitem__:
        key = args[1]
        if isinstance(key, tuple):
            rest = [k for k in key if k is not None]
            key = rest[0] if len(rest) == 1 else None
        if isinstance(key, slice) or (isinstance(key, torch.Tensor) and key.dim() == 1
                                      and (key.dtype == torch.bool or not key.is_floating_point())):
            return rows[key]
        return None
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    index = args[2] if len(args) > 2 else kwargs.get("index")
    return rows.index_select(0, index) if dim == 0 and isinstance(index, torch.Tensor) else None


def _note_rows(leaf: Any, args) -> None:
    """Pre-hook while the block is tracked: the rows ``leaf``'s expert runs on."""
    block, expert = leaf._lesion_block, leaf._lesion_expert
    mode = block._lesion_rows_mode
    x = args[0] if args else None
    rows = mode.rows_of(x) if mode is not None else None
    if rows is not None:
        expert._lesion_rows = rows
        return
    rows = expert._lesion_rows
    if rows is None or not isinstance(x, torch.Tensor) or x.dim() == 0 or x.numel() // x.shape[-1] != rows.numel():
        raise LesionError(f"cannot tell which tokens reach {leaf._lesion_name}: its block hands its experts rows "
                          "that are not taken straight from its input, so lesion cannot hook them at the right "
                          "tokens; study the model without those neurons (components without gate, up, act, down)")


def routed_rows(leaf: Any) -> tuple[torch.Tensor, tuple[int, int]]:
    """(rows (n,), (batch, tokens)) of the tokens ``leaf`` ran on in this forward."""
    rows, mode = leaf._lesion_expert._lesion_rows, leaf._lesion_block._lesion_rows_mode
    if rows is None or mode is None:
        raise LesionError(f"{leaf._lesion_name} ran outside its block's forward: lesion cannot tell its tokens")
    return rows, mode.shape


def _block_forward(block: Any, *args, **kwargs):
    """The block's forward, bound to it: its own, under row tracking while any expert module is hooked."""
    original = block._lesion_forward
    leaves: list[torch.nn.Module] = block._lesion_leaves
    if not any(leaf._forward_hooks or leaf._forward_pre_hooks for leaf in leaves):
        return original(*args, **kwargs)
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        return original(*args, **kwargs)
    hooked_experts = {id(leaf._lesion_expert) for leaf in leaves if leaf._forward_hooks}
    handles = [leaf.register_forward_pre_hook(_note_rows) for leaf in leaves
               if id(leaf._lesion_expert) in hooked_experts]
    for expert in block._lesion_experts:
        expert._lesion_rows = None
    try:
        with _RowsMode(hidden) as mode:
            block._lesion_rows_mode = mode
            return original(*args, **kwargs)
    finally:
        block._lesion_rows_mode = None
        for expert in block._lesion_experts:
            expert._lesion_rows = None
        for handle in handles:
            handle.remove()


def _set(module: torch.nn.Module, **values) -> None:
    # object.__setattr__: a module held here is a reference, not a child (no cycle in the module tree);
    # a deep copy of the model still maps it to its own copy.
    for key, value in values.items():
        object.__setattr__(module, key, value)


def instrument_list(block_name: str, block: torch.nn.Module, experts_name: str, experts: torch.nn.ModuleList,
                    forward_attr: Callable[[torch.nn.Module], str]) -> None:
    """Give ``block`` (whose experts are the list ``experts``) row tracking and each expert module its
    dense view (``_lesion_routed``, read by :mod:`lesion.model.hook_points`)."""
    leaves = []
    for e, expert in enumerate(experts):
        for name, leaf in expert.named_modules():
            if next(leaf.children(), None) is None and name:
                _set(leaf, _lesion_block=block, _lesion_expert=expert, _lesion_name=f"{experts_name}.{e}.{name}",
                     _lesion_routed=types.MethodType(routed_rows, leaf))
                leaves.append(leaf)
        _set(expert, _lesion_rows=None)
    _set(block, _lesion_leaves=leaves, _lesion_experts=list(experts), _lesion_rows_mode=None,
         _lesion_forward=getattr(block, forward_attr(block)))
    setattr(block, forward_attr(block), types.MethodType(_block_forward, block))


def _pattern(name: str) -> str:
    return re.sub(r"\.experts\.\d+\.", ".experts.*.", name)


def unrouted_shapes(model: torch.nn.Module, names, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``shapes`` completed for expert modules no probe token was routed to: the layout of the same
    module in an expert of the same block that ran, when their weights have the same shapes."""
    found = dict(shapes)
    ran: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        ran.setdefault(_pattern(name), (name, shape))
    for name in names:
        if name in found or not hasattr(model.get_submodule(name), "_lesion_routed"):
            continue
        sibling = ran.get(_pattern(name))
        if sibling is not None and _weights(model, sibling[0]) == _weights(model, name):
            found[name] = sibling[1]
    return found


def _weights(model: torch.nn.Module, name: str) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.get_submodule(name).parameters()]
