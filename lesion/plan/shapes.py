"""What a study of a model is made of, counted on a meta model (no weights): its neuron sites by kind
and width, its parameters, its experts."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import LesionError
from .config import TOP_K_FIELDS, _first_line, _quiet_transformers, context_length


@dataclass(frozen=True)
class Shapes:
    """What a plan needs from a model: parameter counts and its neuron sites."""
    name: str
    model_type: str
    parameters: int
    body_parameters: int  # what Stage 1 runs: all but the input embedding and an untied LM head
    head_parameters: int  # the LM head's matmul (vocab x hidden), tied or not
    vocab: int
    layers: int
    neurons: dict[str, int]  # component kind -> neurons
    model: object  # the meta model (for the device map)
    hidden: int = 0  # residual width: wider matrices run faster per FLOP (see WIDTH_EXPONENT)
    active_parameters: int = 0  # what one token runs: all but the routed experts its router does not pick
    active_body_parameters: int = 0
    context: int | None = None  # the longest text the model takes (max_position_embeddings), when it says
    moe: dict | None = None  # the mixture of experts, counted (None: a dense model)
    uncounted: tuple[str, ...] = field(default=())  # modules whose neurons a plan cannot count from shapes


# --- the model's shapes ------------------------------------------------------------------------

def shapes(name: str, config, components: str | None = None) -> Shapes:
    """Parameter counts (total and active) and neurons by component kind, from the meta model's
    modules: no forward runs (a forward on the meta device fails in some experts' kernels, and
    a plan needs only shapes)."""
    from ..model import architectures
    kinds = architectures.resolve_components(components)
    meta = _meta_model(config)
    embed = meta.get_input_embeddings().weight
    head = meta.get_output_embeddings().weight
    # A meta model built from a config does not tie its head (transformers ties at load): the
    # config says whether the loaded model holds one matrix or two.
    tied = head is embed or bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    total = sum(p.numel() for p in meta.parameters()) - (head.numel() if tied and head is not embed else 0)
    outside_body = embed.numel() + (0 if tied else head.numel())
    counted = _count(meta, config, kinds)
    active = total - counted.idle_experts
    text = config.get_text_config()
    return Shapes(name, config.model_type, total, total - outside_body, head.numel(), head.shape[0],
                  int(getattr(text, "num_hidden_layers", 0) or 0), counted.neurons, meta,
                  int(getattr(text, "hidden_size", 0) or 0), active, active - outside_body, context_length(config),
                  counted.moe, tuple(counted.uncounted))


def _meta_model(config):
    """The model on the meta device, buffers and every tensor made while building it included:
    GPT-Neo, GPT-BigCode and GPT-1 build a context x context causal mask, which a long context
    would otherwise allocate (65,536 positions: 4 GiB)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    with _quiet_transformers(), init_empty_weights(include_buffers=True), torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 - a config transformers cannot build a model from, whatever the reason
            raise LesionError(f"a model of type {config.model_type!r} cannot be built from this config by "
                              f"transformers ({_first_line(e)}): fix the config.json") from None


@dataclass
class _Counted:
    neurons: dict[str, int]
    idle_experts: int  # parameters of the routed experts a token does not run, summed over MoE layers
    moe: dict | None
    uncounted: list[str]


def _count(meta, config, kinds: set[str]) -> _Counted:
    """Neurons by kind from the blocks' leaf modules (a neuron is one output channel: a linear
    layer's out_features, a norm's width, an activation's width is its MLP's down projection's
    in_features; a per-head q/k norm emits its projection's width), and the mixture of experts:
    each routed expert's gate, up and act (its intermediate width each) and down (the residual
    width), the router's logits (one per expert) and the MoE block's output channels."""
    import torch

    from ..model import architectures
    blocks = architectures.block_prefix(meta)
    modules = dict(meta.named_modules())
    text = config.get_text_config()
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    experts = {n: m for n, m in modules.items() if n.startswith(blocks + ".") and n.rsplit(".", 1)[-1] == "experts"}
    neurons: dict[str, int] = {}
    breakdown = {"routed_experts": 0, "shared_experts": 0, "router": 0, "block_output": 0}
    uncounted: list[str] = []

    def add(kind: str, count: int, part: str | None = None) -> None:
        if kind in kinds and count:
            neurons[kind] = neurons.get(kind, 0) + count
            if part is not None:
                breakdown[part] += count

    fused = {}
    for name, module in experts.items():
        if isinstance(module, torch.nn.ModuleList):
            continue
        count = _fused_experts(name, module, hidden)
        if count is None:
            uncounted.append(name)
            continue
        fused[name] = count
        per, intermediate = count
        for kind in ("gate", "up", "act"):
            add(kind, per * intermediate, "routed_experts")
        add("down", per * hidden, "routed_experts")
        add("expert", per)  # each expert as a unit (``unit="expert"``)
    for name, module in modules.items():
        if next(module.children(), None) is not None or not name.startswith(blocks + "."):
            continue
        if isinstance(module, (torch.nn.Dropout, torch.nn.Identity)) or name in fused or _under(name, fused):
            continue
        part = _moe_part(name, experts)
        kind = "router" if part == "router" else architectures.kind_of(name, module)
        if kind not in kinds:
            continue
        width = _leaf_width(name, module, kind, modules)
        if width is None:
            # A module with weights of no known layout is named in the plan; one without weights and
            # with no width of its own (Llama 4's qk_norm, run on q and on k) is not one site: no neurons.
            if next(module.parameters(recurse=False), None) is not None:
                uncounted.append(name)
            continue
        add(kind, width, part)
    moe_blocks = {n.rpartition(".")[0]: modules[n.rpartition(".")[0]] for n in experts}
    for _ in moe_blocks:
        add("moe", hidden, "block_output")
    moe = _moe_summary(meta, text, experts, moe_blocks, breakdown, blocks) if experts else None
    return _Counted(neurons, moe.pop("idle_parameters") if moe else 0, moe, uncounted)


def _under(name: str, prefixes) -> bool:
    return any(name.startswith(p + ".") for p in prefixes)


def _moe_part(name: str, experts: dict) -> str | None:
    """Which part of a mixture of experts a leaf module belongs to, if any."""
    if _under(name, experts):
        return "routed_experts"
    parent, _, leaf = name.rpartition(".")
    if any(parent == e.rpartition(".")[0] for e in experts):  # a direct child of an MoE block
        return "shared_experts" if leaf.startswith("shared_expert") else "router"
    if any(re.search(r"\.shared_experts?\.", name) and name.startswith(e.rpartition(".")[0] + ".") for e in experts):
        return "shared_experts"
    return None


def _fused_experts(name: str, module, hidden: int) -> tuple[int, int] | None:
    """(experts, intermediate width) of experts held as 3-D parameters (experts first), from the
    down projection's size: experts x hidden x intermediate, whichever way it is laid out."""
    from ..model import architectures
    params = dict(module.named_parameters(recurse=False))
    stacked = [p for p in params.values() if p.dim() == 3]
    if not stacked or hidden < 1:
        return None
    count = stacked[0].shape[0]
    down = [p for n, p in params.items() if p.dim() == 3 and architectures.kind_of(f"{name}.{n}", module) == "down"]
    if len(down) != 1 or any(p.shape[0] != count for p in stacked) or down[0].numel() % (count * hidden):
        return None
    return count, down[0].numel() // (count * hidden)


def _leaf_width(name: str, module, kind: str, modules: dict) -> int | None:
    """Output channels of a leaf module, from its shapes."""
    from ..model import architectures
    if kind == "norm":  # a per-head q/k norm emits heads x head_dim: its projection's width
        projection = modules.get(re.sub(r"(q|k)_norm$", r"\1_proj", name))
        if projection is not None and _out_width(projection):
            return _out_width(projection)
    if kind == "act" and next(module.parameters(recurse=False), None) is None:
        parent = name.rpartition(".")[0]
        downs = [_in_width(m) for n, m in modules[parent].named_children()
                 if architectures.kind_of(f"{parent}.{n}", m) == "down"]
        return downs[0] if len(downs) == 1 else None
    return _out_width(module)


def _out_width(module) -> int | None:
    import torch
    for attr in ("out_features", "nf"):  # nn.Linear and its subclasses; GPT-2's Conv1D
        value = getattr(module, attr, None)
        if type(value) is int:
            return value
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, (tuple, list)) and shape:
        return math.prod(shape)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() in (1, 2):
        return int(weight.shape[0])
    return None


def _in_width(module) -> int | None:
    for attr in ("in_features", "nx"):
        value = getattr(module, attr, None)
        if type(value) is int:
            return value
    return None


def _moe_summary(meta, text, experts: dict, moe_blocks: dict, breakdown: dict, blocks: str) -> dict:
    """Counts of a mixture of experts: layers with and without experts, experts per layer and per
    token, and its parameters: routed experts (all, and those a token runs), shared experts, routers."""
    import torch
    top_k = next((getattr(text, n) for n in TOP_K_FIELDS if type(getattr(text, n, None)) is int), None)
    if top_k is None:
        raise LesionError(f"a model of type {text.model_type!r} has experts but its config names no number of "
                          f"experts per token ({', '.join(TOP_K_FIELDS)}): a plan cannot count its active parameters")
    routed = idle = shared = router = 0
    per_layer = set()
    for module in experts.values():
        count = len(module) if isinstance(module, torch.nn.ModuleList) else next(
            (p.shape[0] for p in module.parameters(recurse=False) if p.dim() == 3), 0)
        if not count:
            continue
        params = sum(p.numel() for p in module.parameters())
        per_layer.add(count)
        routed += params
        idle += params * (count - min(top_k, count)) // count
    for block in moe_blocks.values():
        for child_name, child in block.named_children():
            if child_name == "experts":
                continue
            params = sum(p.numel() for p in child.parameters())
            if child_name.startswith("shared_expert"):
                shared += params
            else:
                router += params
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    shared_count = getattr(text, "n_shared_experts", None)
    if type(shared_count) is not int:  # one shared expert module per block (qwen2_moe, llama4), or none
        shared_count = sum(n in ("shared_expert", "shared_experts") for n, _ in next(iter(moe_blocks.values()))
                           .named_children())
    return {
        "moe_layers": len(moe_blocks), "dense_layers": layers - len(moe_blocks),
        "experts": sorted(per_layer)[0] if len(per_layer) == 1 else sorted(per_layer),
        "experts_per_token": top_k,
        "shared_experts": shared_count,
        "parameters": {"routed_experts": routed, "routed_experts_active": routed - idle,
                       "shared_experts": shared, "routers": router},
        "neurons": dict(breakdown),
        "idle_parameters": idle,
    }
