"""Mixture-of-experts blocks, seen neuron by neuron.

transformers 5 keeps the routed experts of a block as 3-D parameters inside one module
(``experts.gate_up_proj`` (E, 2I, H), ``experts.down_proj`` (E, H, I)), so no expert neuron is
the output of a module a hook could see. :func:`instrument` gives every expert the named points
older checkpoints had as modules, and lesion's hooks treat them as any other site::

    model.layers.L.mlp                      the block's output channels            kind moe
    model.layers.L.mlp.gate.logits          the router's logits, one per expert    kind router
    model.layers.L.mlp.experts.routing      each expert's routing weight           kind expert
    model.layers.L.mlp.experts.E.gate_proj  expert E's gate, up, gate*up, output   kinds gate, up, act, down
                        ....E.up_proj / .E.act_fn / .E.down_proj

Each point is a :class:`Tap`: an identity module that lesion's forward of the experts calls on a
dense (batch, tokens, channels) tensor in which the rows of tokens not routed to that expert are
0 ("not computed" reads as 0, in Stage 1 as in masking). The hooks on a tap may change it; the
routed rows are read back, so masking a channel of expert E changes only the tokens routed to E.
A tap with no hook costs nothing: the dense tensor is only built for hooked taps.

``act_fn`` of an expert is what its down projection reads (act(gate) * up, or the family's own
gating, e.g. gpt-oss's clamped SwiGLU): masking it is the dense MLP's ``act_fn`` lesion.
``routing`` is expert E's weight in the block's sum: masking it removes the expert (its output no
longer counts, the other experts keep their weights), the unit the super-expert question asks about.

The forward lesion installs computes what transformers' own does (per expert, on its routed
tokens, then the weighted sum over the top-k in the order grouped_mm sums it) and is checked in
the tests against a loop over experts written out by hand.
"""
from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator, cast

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import ParameterError
from .expert_list import instrument_list, is_expert_list
from .hook_points import on_routed_rows

MOE_BLOCK_KIND = "moe"


def unit_name(text: str) -> str:
    """``<experts module>.<E>`` (an expert, as ``unit="expert"`` names it) as the neuron that stands
    for it, ``<experts module>.routing:<E>``; anything else (a neuron, ``module:channel``) is
    refused, since masking it would drop the unit the caller asked for."""
    module, _, expert = str(text).strip().rpartition(".")
    if module and expert.isascii() and expert.isdigit() and ":" not in text:
        return f"{module}.routing:{int(expert)}"
    raise ParameterError("unit", f"expert names whole experts, as <experts module>.<E> (e.g. "
                                 f"model.layers.3.mlp.experts.2), not {str(text)!r}: drop `unit` to mask neurons")


def expert_label(name: str) -> str:
    """The expert a unit's neuron (``<experts module>.routing:<E>``) stands for, as the user names it."""
    module, sep, expert = name.rpartition(".routing:")
    return f"{module}.{expert}" if sep else name


class Tap(torch.nn.Module):
    """A named point inside a fused module: the identity, there to carry forward hooks, and
    readers of the routed rows alone (:func:`reading_routed`), which never build the dense tensor."""

    def __init__(self):
        super().__init__()
        self.routed_readers: list[Callable] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)  # a new tensor object: the site probe drops modules that return their input

    @property
    def hooked(self) -> bool:
        return bool(self._forward_hooks) or bool(self._forward_pre_hooks) or bool(self.routed_readers)


class ExpertPoints(torch.nn.Module):
    """The four named points of one expert."""

    def __init__(self, gated: bool):
        super().__init__()
        if gated:
            self.gate_proj = Tap()
        self.up_proj = Tap()
        self.act_fn = Tap()
        self.down_proj = Tap()

    @property
    def hooked(self) -> bool:
        return any(t.hooked for t in self.children())


class _BatchShape:
    """(batch, tokens) of the block's input, remembered by a pre-hook on the block: the experts and
    the router see the tokens flattened, the taps need them as (batch, tokens)."""

    def __init__(self):
        self.shape: tuple[int, int] | None = None

    def remember(self, module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
            self.shape = (hidden.shape[0], hidden.shape[1])

    def of(self, tokens: int) -> tuple[int, int]:
        if self.shape is not None and self.shape[0] * self.shape[1] == tokens:
            return self.shape
        return (1, tokens)


def through(tap: Tap, values: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``values`` (n, C) of the routed tokens ``rows`` (flat token indices), after ``tap``'s hooks.

    The hooks see (batch, tokens, C) with 0 at tokens not routed here.
    """
    if not tap.hooked:
        return values
    for read in tap.routed_readers:
        read(values, rows, shape)
    if not (tap._forward_hooks or tap._forward_pre_hooks):
        return values
    return on_routed_rows(tap, values, rows, shape)


def reads_routed(model: torch.nn.Module, name: str) -> bool:
    """True for an expert's gate, up, act or down tap, whose forward sees only the routed rows."""
    parent = name.rpartition(".")[0]
    return bool(parent) and isinstance(model.get_submodule(name), Tap) and \
        isinstance(model.get_submodule(parent), ExpertPoints)


@contextmanager
def reading_routed(model: torch.nn.Module, readers: dict[str, Callable]) -> Iterator[None]:
    """Give taps (by module name) a reader ``fn(values (n, C), rows (n,), (batch, tokens))`` of the
    routed rows alone, called in every forward (with n = 0 for an expert no token reached); removed
    in ``finally``, as hooks are."""
    added: list[tuple[Tap, Callable]] = []
    try:
        for name, read in readers.items():
            tap = cast(Tap, model.get_submodule(name))
            tap.routed_readers.append(read)
            added.append((tap, read))
        yield
    finally:
        for tap, read in added:
            tap.routed_readers.remove(read)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    out = x @ weight if transposed else F.linear(x, weight)
    return out if bias is None else out + bias


def _routed_forward(experts: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """The forward of a transformers 5 fused-experts module (``@use_experts_implementation``),
    bound to it: ``(hidden (N, H), top_k_index (N, k), top_k_weights (N, k)) -> (N, H)``."""
    gated, transposed, bias = experts.has_gate, experts.is_transposed, experts.has_bias
    post_norm = getattr(experts, "post_expert_norm", None) if getattr(experts, "has_post_expert_norm", False) else None
    routing, batch = experts.routing, experts._lesion_batch
    tokens, top_k = top_k_index.shape
    n_experts = experts.num_experts
    shape = batch.of(tokens)
    if routing.hooked:  # the expert units: a dense (tokens, experts) weight, masked, read back
        dense = top_k_weights.new_zeros(tokens, n_experts).scatter(1, top_k_index, top_k_weights)
        dense = routing(dense.view(*shape, n_experts)).reshape(tokens, n_experts)
        top_k_weights = dense.gather(1, top_k_index)
    flat = top_k_index.reshape(-1)
    order = torch.sort(flat, stable=True).indices  # (S,) pairs grouped by expert
    token_of = order // top_k
    x = hidden_states.index_select(0, token_of)
    ends = torch.bincount(flat, minlength=n_experts)[:n_experts].cumsum(0).tolist()
    up_weights = experts.gate_up_proj if gated else experts.up_proj
    up_bias = (experts.gate_up_proj_bias if gated else experts.up_proj_bias) if bias else None
    outs, start = [], 0
    for e, end in enumerate(ends):
        taps = getattr(experts, str(e))
        if end == start and not taps.hooked:
            continue
        rows, xe = token_of[start:end], x[start:end]
        start = end
        h = _linear(xe, up_weights[e], None if up_bias is None else up_bias[e], transposed)
        if gated:
            if taps.gate_proj.hooked or taps.up_proj.hooked:
                h = _regate(experts, h, taps, rows, shape)
            h = experts._apply_gate(h)
        else:
            h = experts.act_fn(through(taps.up_proj, h, rows, shape))
        h = through(taps.act_fn, h, rows, shape)
        out = _linear(h, experts.down_proj[e], experts.down_proj_bias[e] if bias else None, transposed)
        if post_norm is not None:
            out = post_norm(out)
        outs.append(through(taps.down_proj, out, rows, shape))
    weights = top_k_weights.reshape(-1).index_select(0, order).unsqueeze(-1)
    weighted = torch.cat(outs) * weights if outs else hidden_states.new_zeros(0, hidden_states.shape[-1])
    summed = torch.zeros(tokens * top_k, hidden_states.shape[-1], dtype=weighted.dtype,
                         device=hidden_states.device).index_copy(0, order, weighted)
    return summed.view(tokens, top_k, -1).sum(dim=1).to(hidden_states.dtype)


def _regate(experts: Any, gate_up: torch.Tensor, taps: ExpertPoints, rows: torch.Tensor,
            shape: tuple[int, int]) -> torch.Tensor:
    """``gate_up`` with its gate and up halves passed through their taps, in the family's layout:
    concatenated [gate; up] or interleaved [g0, u0, g1, u1, ...]."""
    if experts.is_concatenated:
        gate, up = gate_up.chunk(2, dim=-1)
    else:
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    new_gate, new_up = through(taps.gate_proj, gate, rows, shape), through(taps.up_proj, up, rows, shape)
    if new_gate is gate and new_up is up:  # read, not changed (Stage 1): no copy
        return gate_up
    gate, up = new_gate, new_up
    if experts.is_concatenated:
        return torch.cat([gate, up], dim=-1)
    return torch.stack([gate, up], dim=-1).flatten(-2)


def _dense_forward(experts: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """Llama 4's experts, bound to them: every expert runs on every token, its input already scaled
    by the token's routing score (0 when not routed): ``(E * N, H) -> (E * N, H)``."""
    routing, batch = experts.routing, experts._lesion_batch
    n_experts = experts.gate_up_proj.shape[0]
    x = hidden_states.view(n_experts, -1, experts.hidden_size)
    tokens = x.shape[1]
    shape = batch.of(tokens)
    all_rows = torch.arange(tokens, device=x.device)
    outs = []
    for e in range(n_experts):
        taps = getattr(experts, str(e))
        gate, up = (x[e] @ experts.gate_up_proj[e]).chunk(2, dim=-1)
        gate, up = through(taps.gate_proj, gate, all_rows, shape), through(taps.up_proj, up, all_rows, shape)
        h = through(taps.act_fn, up * experts.act_fn(gate), all_rows, shape)
        outs.append(through(taps.down_proj, h @ experts.down_proj[e], all_rows, shape))
    out = torch.stack(outs)
    if routing.hooked:  # an expert's unit mask zeroes its whole contribution
        keep = routing(torch.ones(*shape, n_experts, dtype=out.dtype, device=out.device))
        out = out * keep.reshape(tokens, n_experts).t().unsqueeze(-1)
    return out.reshape(-1, experts.hidden_size)


class _LogitsMode(TorchFunctionMode):
    """Passes the router's logits (the one linear map in its forward whose output has one channel
    per expert) through its tap, so that a masked logit changes the routing as it would in the model."""

    def __init__(self, tap: Tap, n_experts: int, batch: _BatchShape):
        super().__init__()
        self.tap, self.n_experts, self.batch, self.done = tap, n_experts, batch, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.linear and not self.done and out.shape[-1] == self.n_experts:
            self.done = True
            shape = self.batch.of(out.numel() // self.n_experts)
            out = self.tap(out.reshape(*shape, self.n_experts)).reshape(out.shape)
        return out


def _router_forward(router: Any, *args, **kwargs):
    """A router's forward, bound to it: its own, with the logits passed through its tap when hooked."""
    original = router._lesion_forward
    if not router.logits.hooked:
        return original(*args, **kwargs)
    with _LogitsMode(router.logits, router._lesion_experts, router._lesion_batch):
        return original(*args, **kwargs)

def _forward_attr(module: torch.nn.Module) -> str:
    """The attribute holding ``module``'s own forward: under accelerate's hooks (device maps,
    offloading), the one they wrap, so that they still move weights before it runs."""
    return "_old_forward" if hasattr(module, "_old_forward") else "forward"


def fused_kind(module: torch.nn.Module) -> str | None:
    """'routed' for transformers 5's fused experts, 'dense' for Llama 4's, None for anything else."""
    down = getattr(module, "down_proj", None)
    if not isinstance(down, torch.nn.Parameter) or down.dim() != 3:
        return None
    if hasattr(module, "has_gate") and hasattr(module, "is_transposed") and hasattr(module, "num_experts"):
        return "routed"
    if type(module).__name__ == "Llama4TextExperts":
        return "dense"
    return None


def _router_of(block: torch.nn.Module, n_experts: int) -> torch.nn.Module | None:
    for name in ("gate", "router"):
        router = getattr(block, name, None)
        weight = getattr(router, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] == n_experts:
            return router
    return None


def _instrument_router(block: torch.nn.Module, n_experts: int, batch: _BatchShape) -> None:
    router: Any = _router_of(block, n_experts)  # a family's module, given lesion's attributes
    if router is None:
        return
    router.add_module("logits", Tap())
    attr = _forward_attr(router)
    router._lesion_forward = getattr(router, attr)
    router._lesion_experts, router._lesion_batch = n_experts, batch
    setattr(router, attr, types.MethodType(_router_forward, router))


def instrument(model: Any) -> list[str]:
    """Give every fused-experts block of ``model`` its taps, and every block whose experts are a list
    of modules its row tracking (once; the model computes the same function); return the names of
    its MoE blocks."""
    blocks = getattr(model, "_lesion_moe_blocks", None)
    if blocks is not None:
        return blocks
    blocks = []
    for name, module in list(model.named_modules()):
        if is_expert_list(name, module):
            block_name = name.rpartition(".")[0]
            block = model.get_submodule(block_name)
            block.register_forward_pre_hook((batch := _BatchShape()).remember, with_kwargs=True)
            instrument_list(block_name, block, name, module, _forward_attr)
            _instrument_router(block, len(module), batch)
            blocks.append(block_name)
            continue
        kind = fused_kind(module)
        if kind is None or "." not in name:
            continue
        block_name = name.rpartition(".")[0]
        block = model.get_submodule(block_name)
        n_experts = module.down_proj.shape[0]
        gated = kind == "dense" or module.has_gate
        points = torch.nn.ModuleList([ExpertPoints(gated) for _ in range(n_experts)])
        # The points are registered as children named 0..E-1, so that expert E's neurons read
        # `...experts.E.down_proj` as in checkpoints that kept experts as a list of modules.
        for e, p in enumerate(points):
            module.add_module(str(e), p)
        module.add_module("routing", Tap())
        # State lives on the modules and the forwards are bound methods, so that a deep copy of the
        # model runs on its own weights and taps.
        module._lesion_batch = batch = _BatchShape()
        block.register_forward_pre_hook(batch.remember, with_kwargs=True)
        forward = _routed_forward if kind == "routed" else _dense_forward
        setattr(module, _forward_attr(module), types.MethodType(forward, module))
        _instrument_router(block, n_experts, batch)
        blocks.append(block_name)
    model._lesion_moe_blocks = blocks
    return blocks


def internal(model: torch.nn.Module, name: str) -> bool:
    """True for a module that is never a site of its own: inside fused experts or a router and not one
    of lesion's taps (the experts' shared ``act_fn``, run once per expert)."""
    if isinstance(model.get_submodule(name), Tap):
        return False
    prefix = name.rpartition(".")[0]
    while prefix:
        module = model.get_submodule(prefix)
        if fused_kind(module) is not None or isinstance(getattr(module, "logits", None), Tap):
            return True
        prefix = prefix.rpartition(".")[0]
    return False


def _expert_matrices(experts: Any, e: int) -> dict[str, tuple[str, torch.Tensor]]:
    """Expert ``e``'s weights as (out, in) matrices by kind, with the name each slice is read from."""
    name = "gate_up_proj" if getattr(experts, "has_gate", True) else "up_proj"
    transposed = getattr(experts, "is_transposed", fused_kind(experts) == "dense")
    up = getattr(experts, name)[e]
    down = experts.down_proj[e]
    up, down = (up.T, down.T) if transposed else (up, down)
    mats = {"down_proj": ("down_proj", down)}
    if name == "up_proj":
        mats["up_proj"] = (name, up)
    elif getattr(experts, "is_concatenated", True):
        gate, upper = up.chunk(2, dim=0)
        mats.update(gate_proj=(name, gate), up_proj=(name, upper))
    else:
        mats.update(gate_proj=(name, up[0::2]), up_proj=(name, up[1::2]))
    return mats


def tap_matrix(model: torch.nn.Module, module: str) -> torch.Tensor | None:
    """The (out, in) weight behind an expert's ``gate_proj``, ``up_proj`` or ``down_proj`` tap, else None."""
    parent_name, _, point = module.rpartition(".")
    experts_name, _, e = parent_name.rpartition(".")
    if not e.isdigit() or point not in ("gate_proj", "up_proj", "down_proj"):
        return None
    experts = model.get_submodule(experts_name)
    if fused_kind(experts) is None:
        return None
    found = _expert_matrices(experts, int(e)).get(point)
    return None if found is None else found[1]


def weight_slices(model: torch.nn.Module, module: str, channel: int) -> tuple[list, list] | None:
    """(producers, consumers) of a tap's or an MoE block's neuron as (slice name, values), or None
    when ``module`` is neither. An expert's neuron is written by rows of its fused weights and read
    by columns of its down projection; the block's output channel by that row of every expert."""
    target = model.get_submodule(module)
    if module in getattr(model, "_lesion_moe_blocks", ()):
        experts: Any = next(m for m in target.children() if fused_kind(m) is not None)
        prefix = next(n for n, m in target.named_children() if m is experts)
        rows = []
        for expert in range(experts.down_proj.shape[0]):
            _, down = _expert_matrices(experts, expert)["down_proj"]
            rows.append((f"{module}.{prefix}.down_proj[{expert}][{channel},:]", down[channel]))
        return rows, []
    if not isinstance(target, Tap):
        return None
    parent_name, _, point = module.rpartition(".")
    parent: Any = model.get_submodule(parent_name)
    if point == "logits":  # a router's logit: its row of the router's weight
        return [(f"{parent_name}.weight[{channel},:]", parent.weight[channel])], []
    if point == "routing":  # an expert as a unit: its row of the router
        router: Any = next((m for m in model.get_submodule(parent_name.rpartition(".")[0]).children()
                              if isinstance(getattr(m, "logits", None), Tap)), None)
        return ([] if router is None else [(f"{parent_name}:router.weight[{channel},:]", router.weight[channel])]), []
    experts_name, _, e = parent_name.rpartition(".")
    experts = model.get_submodule(experts_name)
    mats = _expert_matrices(experts, int(e))
    at = f"{experts_name}[{e}]"
    if point == "act_fn":
        produced = [(f"{at}.{mats[k][0]}:{k}[{channel},:]", mats[k][1][channel])
                    for k in ("gate_proj", "up_proj") if k in mats]
    else:
        pname, mat = mats[point]
        produced = [(f"{at}.{pname}:{point}[{channel},:]", mat[channel])]
    if point == "down_proj":
        return produced, []
    _, down = mats["down_proj"]
    return produced, [(f"{at}.down_proj[:,{channel}]", down[:, channel])]
