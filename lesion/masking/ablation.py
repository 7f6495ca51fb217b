"""The one place that scores lesions: Delta of many neuron sets under one ablation.

An ablation says what a masked neuron's activation becomes:

- ``zero``: 0 at every token position (the paper's lesion);
- ``mean``: its mean over the text's positions, at every position (mean ablation);
- ``position0``: 0 at the first token only, the attention-sink position.

Every set is one batch row; ``max_rows`` rows go through one forward, fewer if memory
runs out. An empty set is the unmasked model.

Shared prefix: when no set of a batch masks anything below block L, every row computes the
same hidden states up to block L. They are computed once, on one row, and the batch runs
only blocks L.. (the blocks below return the shared states instead of computing them)::

    embeddings -> block 0 .. block L-1 -> h_L          once, batch of 1
                                          h_L x rows -> block L (masked) .. -> head -> NLL per row

Masks, rotary tables and sliding windows are made by the model forward from positions, as
in a full forward, so blocks L.. see the same inputs; only the batch size of blocks
0..L-1 differs, which can move the last bits of a float (tests hold it to 1e-5 of the
NLL). Families not in ``architectures.SEQUENTIAL_BLOCKS`` always run the full forward.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from ..model import architectures
from ..runtime import distributed
from ..runtime.anytime import forget_interrupt, raise_if_interrupted
from ..runtime.batching import split_on_oom
from ..errors import ModelError, ParameterError
from .masks import hooked, mask_neurons
from .metrics import delta, mean_nll
from ..model.neurons import Neuron, SiteIndex
from ..runtime.options import ABLATIONS


def check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ParameterError("ablation", f"must be one of {', '.join(ABLATIONS)} (got {ablation!r})")


def channel_means(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                  modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per module, each channel's mean activation over the text's positions, (C,) float32."""
    means: dict[str, torch.Tensor] = {}
    sites = [index.by_name[m] for m in dict.fromkeys(modules)]
    record = {s.name: (lambda out, s=s: means.__setitem__(s.name, s.channels(out)[0].float().mean(dim=0)))
              for s in sites}
    body: Any = model.base_model  # a transformers model without its head: the logits are not needed
    with hooked(model, record), torch.inference_mode():
        body(input_ids=input_ids)
    return means


def masked_nll(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
               neuron_sets: Sequence[Sequence[Neuron]], max_rows: int = 32, ablation: str = "zero",
               means: dict[str, torch.Tensor] | None = None, share_prefix: bool = True) -> list[float]:
    """Mean NLL of the text under each neuron set (one set per batch row).

    ``share_prefix`` computes the blocks below the lowest masked one once per batch instead of
    once per row (see the module notes), ordering rows by their lowest masked block before
    batching them; False always runs the full forward, ``max_rows`` rows at a time in order.
    """
    check_ablation(ablation)
    sets = [list(s) for s in neuron_sets]
    if ablation == "mean" and means is None:
        means = channel_means(model, input_ids, index, [n.module for s in sets for n in s])
    positions = slice(0, 1) if ablation == "position0" else None
    fill = means if ablation == "mean" else None
    blocks = _sequential_blocks(model) if share_prefix else None
    prefixes: dict[int, object] = {}  # first masked block -> output of the block below it

    def first_block(chunk: Sequence[Sequence[Neuron]]) -> int:
        return min((index.site(n).layer for s in chunk for n in s), default=len(blocks)) if blocks else 0

    def run(chunk: Sequence[Sequence[Neuron]]) -> list[float]:
        first = first_block(chunk)
        with mask_neurons(model, index, chunk, positions=positions, fill=fill):
            if first == 0 or blocks is None:  # first_block is 0 when no blocks are shared
                return mean_nll(model, input_ids, rows=len(chunk)).tolist()
            if first not in prefixes:
                prefixes[first] = _prefix_output(model, input_ids, blocks, first)
            with _replay_prefix(blocks, first, prefixes[first]):
                return mean_nll(model, input_ids, rows=len(chunk)).tolist()

    # Rows are ordered by their lowest masked block, highest first, before being cut into
    # batches of max_rows: a batch then shares as much prefix as its rows allow, and no
    # batch is split smaller than max_rows to share more (extra forwards cost more than
    # the blocks they would save on a handful of rows).
    world = distributed.current()  # under torchrun, each rank runs a contiguous share of the rows
    order = world.rows(sorted(range(len(sets)), key=lambda i: -first_block([sets[i]])))
    nlls: list[float] = [math.nan] * len(sets)
    forget_interrupt()
    for start in range(0, len(order), max_rows):
        batch = order[start:start + max_rows]
        for i, nll in zip(batch, split_on_oom(run, [sets[i] for i in batch])):
            nlls[i] = nll
        raise_if_interrupted()
    return world.gather_rows(nlls, order)


def _sequential_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's blocks when its family may share a prefix, else None."""
    if getattr(model.config, "model_type", None) not in architectures.SEQUENTIAL_BLOCKS:
        return None
    if getattr(model, "hf_device_map", None) is not None:
        return None  # accelerate moves hidden states between devices inside blocks: leave it be
    blocks = model.get_submodule(architectures.block_prefix(model))
    if not isinstance(blocks, torch.nn.ModuleList):
        return None
    return blocks if len(blocks) == getattr(model.config, "num_hidden_layers", None) else None


class _PrefixCaptured(Exception):
    """Stops the forward once the shared prefix is captured: the blocks above are not needed."""


def _prefix_output(model: torch.nn.Module, input_ids: torch.Tensor, blocks: torch.nn.ModuleList, first: int):
    """What block ``first - 1`` returns on the unmasked text (batch of one)."""
    captured = []

    def capture(module, inputs, output):
        captured.append(output)
        raise _PrefixCaptured

    name = f"{architectures.block_prefix(model)}.{first - 1}"
    with hooked(model, {name: capture}, raw=True), torch.inference_mode():
        try:
            model(input_ids=input_ids, use_cache=False)
        except _PrefixCaptured:
            pass
    return captured[0]


@contextmanager
def _replay_prefix(blocks: torch.nn.ModuleList, first: int, output) -> Iterator[None]:
    """Blocks below ``first`` return ``output`` (repeated for every row) instead of computing.

    Each block's own ``forward`` attribute is overridden and put back in ``finally``, so a
    forward set on the instance by someone else (accelerate) is restored too.
    """
    expanded: dict[int, object] = {}  # rows -> what the skipped blocks return, made once per forward

    def repeated(rows: int):
        if rows not in expanded:
            hidden = output[0] if isinstance(output, tuple) else output
            # A copy: block `first` may add to its input in place, and the prefix is reused.
            hidden = hidden.expand(rows, *hidden.shape[1:]).clone(memory_format=torch.contiguous_format)
            expanded[rows] = (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return expanded[rows]

    def replay(*args, **kwargs):
        hidden_states = args[0] if args else kwargs["hidden_states"]
        return repeated(hidden_states.shape[0])

    replaced: list[tuple[torch.nn.Module, Any]] = []  # (block, the forward set on it before, or None)
    try:
        for block in blocks[:first]:
            replaced.append((block, block.__dict__.get("forward")))
            block.forward = replay
        yield
    finally:
        for block, forward in replaced:
            if forward is None:
                del block.forward
            else:
                block.forward = forward


def baseline_nll(model: torch.nn.Module, input_ids: torch.Tensor, dtype: str = "") -> float:
    """The unmasked model's mean NLL on the text; a non-finite one is refused, not averaged."""
    nll = mean_nll(model, input_ids)[0].item()
    if not math.isfinite(nll):
        raise ModelError(f"the unmasked model's perplexity is non-finite{' in ' + dtype if dtype else ''}: "
                         "use `dtype` float32")
    return nll


def set_deltas(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
               neuron_sets: Sequence[Sequence[Neuron]], clean: float, **options) -> list[float]:
    """Delta (log10 perplexity ratio to ``clean``, a mean NLL) of each set; options as :func:`masked_nll`."""
    return [delta(nll, clean) for nll in masked_nll(model, input_ids, index, neuron_sets, **options)]
