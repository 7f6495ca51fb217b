"""What share of a model lesion sees: the parameters its neuron sites read or write.

A site sees the parameters of its own module: a linear map's weight and bias, a norm's scale; a
tap inside fused experts sees the experts' 3-D weights, a router's logits the router's weight.
Parameters inside the blocks that no site sees are lesion's blind spots. Attention parameters
outside any projection (gpt-oss's attention sinks) are reported; an MLP, expert or router
parameter no site sees means lesion would rank and mask a model with a part missing, so
:func:`check` refuses it unless the caller accepts a partial view. Embeddings, the final norm
and the LM head lie outside the blocks: they are never sites, and are reported as such.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from . import architectures, experts
from ..errors import ModelError, ParameterError

PARTS = ("attention", "mlp", "experts", "router", "norms", "other")
# Parts whose blind spots are refused: a lesion study of the MLP is the paper's whole question, and a
# parameter lesion cannot place (an SSM mixer, a family's own MLP naming) may be one.
MUST_SEE = ("mlp", "experts", "router", "other")


def _is_router(name: str, owner: torch.nn.Module) -> bool:
    """A router lesion tapped, or a 2-D ``router``/``gate`` weight of a family it does not know."""
    if isinstance(getattr(owner, "logits", None), experts.Tap):
        return True
    weight = getattr(owner, "weight", None)
    return (re.search(r"\.(router|gate)\.weight$", name) is not None and weight is not None and weight.dim() == 2
            and re.search(r"(gate_proj|shared_expert_gate)", name) is None)


def part_of(name: str, owner: torch.nn.Module) -> str:
    """The part of a block a parameter belongs to, from its name and owner."""
    if _is_router(name, owner):
        return "router"
    if re.search(r"\.experts?\.|shared_expert", name):
        return "experts"
    if re.search(r"(norm|ln_\w+|\.ln\d*)\.", name) or re.search(r"(layernorm|layer_norm)", name):
        return "norms"
    if re.search(r"(self_attn|attention|\.attn)\.", name):
        return "attention"
    if re.search(r"\.(mlp|feed_forward|ffn|block_sparse_moe|moe)\.", name):
        return "mlp"
    return "other"


@dataclass(frozen=True)
class Coverage:
    """Parameter counts: ``seen`` and ``unseen`` by part of the blocks, ``outside`` the blocks."""
    seen: dict[str, int]
    unseen: dict[str, int]
    outside: int
    blind: tuple[str, ...]  # MLP, expert and router parameters no site sees (their names)

    @property
    def total(self) -> int:
        return sum(self.seen.values()) + sum(self.unseen.values()) + self.outside

    @property
    def partial(self) -> bool:
        return bool(self.blind)

    def share(self) -> float:
        """The share of all parameters that some site reads or writes."""
        return sum(self.seen.values()) / max(self.total, 1)

    def line(self) -> str:
        parts = []
        for part in PARTS:
            seen, unseen = self.seen.get(part, 0), self.unseen.get(part, 0)
            if seen + unseen:
                parts.append(f"{part} {100 * seen / (seen + unseen):.0f}%")
        total = max(self.total, 1)
        return (f"sites see {100 * self.share():.1f}% of the parameters ({', '.join(parts)} of each part; "
                f"embeddings and head {100 * self.outside / total:.1f}%, never sites)")

    def to_dict(self) -> dict:
        return {"seen": dict(self.seen), "unseen": dict(self.unseen), "outside": self.outside,
                "blind": list(self.blind)}


def measure(model: torch.nn.Module, sites) -> Coverage:
    """Count the parameters the sites of ``sites`` (a SiteIndex of the model) see."""
    owners_seen: set[int] = set()
    for site in sites.sites:
        module = model.get_submodule(site.name)
        owners_seen.add(id(module))
        if isinstance(module, experts.Tap):  # a tap sees the fused module or router it sits in
            parent = site.name.rpartition(".")[0]
            while parent and not any(True for _ in model.get_submodule(parent).parameters(recurse=False)):
                parent = parent.rpartition(".")[0]
            if parent:  # with what the fused module or router holds (ERNIE's routing bias statistics)
                owners_seen.update(id(m) for m in model.get_submodule(parent).modules())
    blocks = architectures.block_prefix(model) + "."
    seen = dict.fromkeys(PARTS, 0)
    unseen = dict.fromkeys(PARTS, 0)
    outside, blind, counted = 0, [], set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in counted:  # tied (an LM head sharing the embeddings' matrix): counted once
                continue
            counted.add(id(p))
            name = f"{module_name}.{pname}"
            if not name.startswith(blocks):
                outside += p.numel()
                continue
            part = part_of(name, module)
            if id(module) in owners_seen:
                seen[part] += p.numel()
            else:
                unseen[part] += p.numel()
                if part in MUST_SEE:
                    blind.append(name)
    return Coverage({k: v for k, v in seen.items() if v}, {k: v for k, v in unseen.items() if v}, outside,
                    tuple(blind))


def check(model: torch.nn.Module, partial_view: bool = False) -> Coverage:
    """The model's coverage by every site lesion can find; refuses a model whose MLP, experts or
    router lesion cannot see, unless ``partial_view``."""
    from .neurons import discover_sites
    try:
        sites = discover_sites(model, "all")
    except ParameterError:  # not one site, whatever the components: nothing lesion knows in its blocks
        raise ModelError(f"lesion finds no neuron site in this {getattr(model.config, 'model_type', '')} model: "
                         "none of its blocks' modules has an output lesion can read") from None
    coverage = measure(model, sites)
    if coverage.partial and not partial_view:
        count = sum(coverage.unseen.get(p, 0) for p in MUST_SEE)
        more = f" and {len(coverage.blind) - 1} more" if len(coverage.blind) > 1 else ""
        raise ParameterError(
            "partial_view", f"is needed to study this {getattr(model.config, 'model_type', '')} model: lesion "
            f"sees no neuron of {count:,} of its MLP/expert parameters ({coverage.blind[0]}{more}), so any answer "
            "would leave that part out; set it only to accept that partial view (it is recorded in every result)")
    return coverage
