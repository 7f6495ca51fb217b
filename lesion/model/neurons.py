"""Neuron addressing: what a neuron is, where the neurons of a model are, how to number them.

A neuron is one output channel of one leaf module inside a transformer block. Modules
whose output has more than one channel axis (Gemma 3's per-head ``q_norm`` emits
``(B, heads, T, head_dim)``) get flattened channel indices over all non-batch,
non-token axes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from . import architectures, experts
from ..errors import LesionError, ModelError, ParameterError
from .expert_list import unrouted_shapes
from .hook_points import hooked


@dataclass(frozen=True, order=True)
class Neuron:
    module: str
    channel: int

    def __str__(self) -> str:
        return f"{self.module}:{self.channel}"

    @classmethod
    def parse(cls, text: str) -> "Neuron":
        module, sep, channel = str(text).strip().rpartition(":")
        # fullmatch, not isdigit: isdigit accepts '²' and other digits int() cannot read; a ':' left in
        # the module part is a second channel ('m:507:3'), which no module name of a model holds
        if not sep or not module or ":" in module or not re.fullmatch(r"[0-9]+", channel):
            raise LesionError(f"bad neuron {text!r}: write it as '<module name>:<channel>', "
                              "e.g. 'model.layers.11.mlp.down_proj:507'")
        return cls(module, int(channel))


@dataclass(frozen=True)
class Site:
    """A leaf module whose output channels are neurons."""
    name: str
    layer: int
    kind: str
    channel_shape: tuple[int, ...]
    token_axis: int  # axis of the output indexing tokens; 0: batch and tokens flattened (OPT's MLP)

    @property
    def width(self) -> int:
        return math.prod(self.channel_shape)

    def channels(self, output: torch.Tensor, tokens: int | None = None) -> torch.Tensor:
        """Module output as (B, T, C) with C the flattened channels.

        ``tokens`` is needed only for a flattened (B*T, ...) output with B > 1.
        """
        if self.token_axis == 0:
            return output.reshape(-1, tokens or output.shape[0], self.width)
        moved = output.movedim(self.token_axis, 1)
        return moved.reshape(moved.shape[0], moved.shape[1], self.width)


class SiteIndex:
    """All sites of a model in a fixed order, and a flat numbering of their neurons.

    Flat index ``offsets[i] + channel`` addresses channel ``channel`` of ``sites[i]``;
    rankers produce one score per flat index.
    """

    def __init__(self, sites: Sequence[Site]):
        if not sites:
            raise ParameterError("components", "selects no neuron site of this model (known kinds: "
                                 f"{', '.join(architectures.KINDS)})")
        self.sites = tuple(sites)
        self.by_name = {s.name: s for s in self.sites}
        widths = torch.tensor([s.width for s in self.sites])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), widths.cumsum(0)])
        self.total = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.total

    def neuron(self, flat: int) -> Neuron:
        i = int(torch.searchsorted(self.offsets, torch.tensor(flat), right=True)) - 1
        return Neuron(self.sites[i].name, int(flat - self.offsets[i]))

    def neurons(self, flat: Iterable[int]) -> list[Neuron]:
        flat = torch.as_tensor(list(flat), dtype=torch.long)
        site_ids = torch.searchsorted(self.offsets, flat, right=True) - 1
        channels = flat - self.offsets[site_ids]
        return [Neuron(self.sites[i].name, c) for i, c in zip(site_ids.tolist(), channels.tolist())]

    def flat(self, neuron: Neuron) -> int:
        return int(self.offsets[self.sites.index(self.site(neuron))]) + neuron.channel

    def site(self, neuron: Neuron) -> Site:
        site = self.by_name.get(neuron.module)
        if site is None:
            raise LesionError(f"neuron {neuron}: module {neuron.module!r} is not a neuron site of this "
                              "model (or not in `components`); list sites with `lesion sites`")
        if not 0 <= neuron.channel < site.width and experts.expert_label(str(neuron)) != str(neuron):
            raise LesionError(f"expert {experts.expert_label(str(neuron))} is out of range: the block has "
                              f"{site.width} experts (0..{site.width - 1})")
        if not 0 <= neuron.channel < site.width:
            raise LesionError(f"neuron {neuron}: channel out of range, {neuron.module} has "
                              f"{site.width} channels (0..{site.width - 1})")
        return site

    def check(self, neurons: Iterable[Neuron]) -> None:
        for n in neurons:
            self.site(n)

    def of_kinds(self, kinds: Iterable[str]) -> "SiteIndex":
        kinds = set(kinds)
        return SiteIndex([s for s in self.sites if s.kind in kinds])


def discover_sites(model: torch.nn.Module, components: Iterable[str] | None = None) -> SiteIndex:
    """Find every neuron site of ``model`` by running two tiny probe forwards.

    The probes tell, for each leaf module inside a block, its output layout (the token
    axis is the one whose size follows the probe length), and drop modules that
    re-emit their input (dropout, identity) or never run.
    """
    kinds = architectures.resolve_components(components)
    moe_blocks = experts.instrument(model)
    blocks = architectures.block_prefix(model)
    candidates = {}
    for name, module in model.named_modules():
        if next(module.children(), None) is not None or not name.startswith(blocks + "."):
            continue
        if isinstance(module, (torch.nn.Dropout, torch.nn.Identity)) or experts.internal(model, name):
            continue
        kind = architectures.kind_of(name, module)
        if kind in kinds:
            candidates[name] = kind
    if experts.MOE_BLOCK_KIND in kinds:
        candidates.update({name: experts.MOE_BLOCK_KIND for name in moe_blocks})
    shapes = [unrouted_shapes(model, candidates, _probe_shapes(model, candidates, length)) for length in (5, 7)]
    sites = []
    for name, kind in candidates.items():
        a, b = shapes[0].get(name), shapes[1].get(name)
        if a is None or b is None or len(a) != len(b):
            continue
        varying = [ax for ax in range(len(a)) if a[ax] != b[ax]]
        if len(varying) != 1 or a[varying[0]] != 5:
            continue
        axis = varying[0]
        channel_shape = tuple(d for ax, d in enumerate(a) if ax not in (0, axis))
        layer = architectures.layer_of(name, blocks)
        sites.append(Site(name, layer, kind, channel_shape, axis))
    if not sites and kinds == {"expert"}:
        raise ParameterError("components", "expert (or `unit` expert) takes whole experts, and this model has none "
                                           "lesion can take out: it is not a mixture of experts, or its experts are "
                                           "a list of modules; study its neurons instead")
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return SiteIndex(sorted(sites, key=lambda s: order[s.name]))


def _probe_shapes(model, modules: dict, length: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...] | None] = {}

    def recorder(name):
        def record(module, inputs, output):
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                output = output[0]  # a block that also returns its router logits (Llama 4's MoE)
            is_alias = isinstance(output, torch.Tensor) and any(output is x for x in inputs)
            # A module run twice per forward (shared) has no single layout: drop it.
            if name in shapes or not isinstance(output, torch.Tensor) or is_alias:
                shapes[name] = None
            else:
                shapes[name] = tuple(output.shape)
        return record

    device = next(model.parameters()).device
    ids = torch.arange(1, length + 1, device=device).unsqueeze(0) % model.config.vocab_size
    with hooked(model, {n: recorder(n) for n in modules}, raw=True), torch.inference_mode():
        try:
            model(input_ids=ids, use_cache=False)
        except (RuntimeError, ValueError, IndexError, TypeError, AttributeError, NotImplementedError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ModelError(f"cannot run a forward through this {getattr(model.config, 'model_type', '')} model "
                             f"to find its neurons ({first}): lesion studies causal LMs whose forward runs on "
                             "input ids alone") from None
    return {n: s for n, s in shapes.items() if s is not None}
