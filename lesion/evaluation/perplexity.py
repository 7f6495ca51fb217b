"""Sliding-window perplexity of a whole corpus, token-weighted, with and without masks.

The corpus is one token stream (documents joined by a blank line). It is scored in
blocks of ``stride`` target tokens (at most ``window - 1``); each block is predicted by
one forward over a window that ends at the block's last token and reaches back
``window`` tokens, so every token but the first is scored exactly once, with as much
context as the window allows. Window=6, stride=4, 12 tokens::

    tokens    t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11
    window 0  [t0 t1 t2 t3 t4]                         scores t1..t4 (t0 has no context)
    window 1           [t3 t4 t5 t6 t7 t8]             scores t5..t8 (t3 t4: context only)
    window 2                    [t6 t7 t8 t9 t10 t11]  scores t9..t11

Losses are computed in float32 whatever the model dtype. Non-finite token losses are
counted, never dropped: a level with any has perplexity ``inf`` (``nan`` if a loss is
NaN), and ``ppl_finite_only`` gives the perplexity over the finite tokens beside it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..runtime.batching import split_on_oom
from ..errors import LesionError, ParameterError
from ..masking.masks import mask_neurons
from ..masking.metrics import LN10, perplexity, token_nll
from ..model.neurons import Neuron, SiteIndex
from ..texts.corpora import CHARS_PER_TOKEN, take_chars


@dataclass(frozen=True)
class Span:
    begin: int  # first token of the window
    end: int  # one past its last token
    first: int  # first token it scores (those before are context only)


def windows(n_tokens: int, window: int, stride: int) -> list[Span]:
    if window < 2 or stride < 1 or stride > window:
        raise ParameterError("stride", f"must be 1..`window` and `window` >= 2 (got {stride}, {window}): a "
                                       "larger stride would leave tokens unscored")
    block = min(stride, window - 1)  # the window's first token is context for the rest
    spans = []
    for first in range(1, n_tokens, block):
        end = min(first + block, n_tokens)
        spans.append(Span(max(0, end - window), end, first))
    return spans


@dataclass(frozen=True)
class LevelResult:
    corpus: str
    level: int  # neurons masked: the first `level` of the file
    tokens: int
    nll_sum: float  # over finite token losses
    nonfinite_tokens: int
    nan_tokens: int
    ppl: float
    ppl_finite_only: float
    log10_ratio: float  # to level 0 of the same corpus


def stream_tokens(tokenizer, documents: Sequence[str], max_tokens: int | None) -> torch.Tensor:
    """The corpus as one (N,) token stream, cut at ``max_tokens``; reads only what it needs."""
    text = take_chars(documents, None if max_tokens is None else max_tokens * CHARS_PER_TOKEN)
    ids = tokenizer("\n\n".join(text), return_tensors="pt").input_ids[0]
    return ids if max_tokens is None else ids[:max_tokens]


def window_losses(model, ids: torch.Tensor, spans: Sequence[Span], batch_size: int,
                  progress: bool = False) -> torch.Tensor:
    """Loss of every scored token, in stream order: (number of scored tokens,) float32."""
    device = model.get_input_embeddings().weight.device

    def run(group: Sequence[Span]) -> list[torch.Tensor]:
        batch = torch.stack([ids[s.begin:s.end] for s in group]).to(device)
        with torch.inference_mode():
            nll = token_nll(model, batch).cpu()
        return [row[s.first - s.begin - 1:] for row, s in zip(nll, group)]

    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(spans):
        by_length.setdefault(s.end - s.begin, []).append(i)
    results: dict[int, torch.Tensor] = {}
    bar = tqdm(total=len(spans), desc="windows", disable=not progress, leave=False)
    for idxs in by_length.values():
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start:start + batch_size]
            for i, losses in zip(chunk, split_on_oom(run, [spans[i] for i in chunk])):
                results[i] = losses
            bar.update(len(chunk))
    bar.close()
    out = [results[i] for i in range(len(spans))]
    return torch.cat(out) if out else torch.zeros(0)


def summarise(corpus: str, level: int, losses: torch.Tensor, base: LevelResult | None) -> LevelResult:
    finite = torch.isfinite(losses)
    nll_sum = float(losses[finite].double().sum())
    n, n_finite = losses.numel(), int(finite.sum())
    nan = int(torch.isnan(losses).sum())
    ppl = math.nan if nan else (math.inf if n_finite < n else perplexity(nll_sum / n))
    ppl_finite = perplexity(nll_sum / n_finite) if n_finite else math.nan
    if base is None:
        ratio = 0.0
    elif n_finite < n or base.nonfinite_tokens:
        ratio = math.inf if n_finite < n else -math.inf
    else:
        ratio = (nll_sum / n - base.nll_sum / base.tokens) / LN10
    return LevelResult(corpus, level, n, nll_sum, n - n_finite, nan, ppl, ppl_finite, ratio)


def corpus_perplexity(model, tokenizer, index: SiteIndex, corpus_name: str, documents: Sequence[str],
                      neurons: Sequence[Neuron], levels: Sequence[int], *, window: int = 512,
                      stride: int = 512, max_tokens: int | None = 20000, batch_size: int = 4,
                      progress: bool = True) -> list[LevelResult]:
    """Perplexity of one corpus with the first ``level`` neurons masked, for each level."""
    return list(corpus_levels(model, tokenizer, index, corpus_name, documents, neurons, levels, window=window,
                              stride=stride, max_tokens=max_tokens, batch_size=batch_size, progress=progress))


def corpus_levels(model, tokenizer, index: SiteIndex, corpus_name: str, documents: Sequence[str],
                  neurons: Sequence[Neuron], levels: Sequence[int], *, window: int = 512, stride: int = 512,
                  max_tokens: int | None = 20000, batch_size: int = 4,
                  progress: bool = True) -> Iterator[LevelResult]:
    """:func:`corpus_perplexity` one level at a time, level 0 first: a caller with a budget
    keeps the levels that finished."""
    ids = stream_tokens(tokenizer, documents, max_tokens)
    if ids.numel() < 2:
        raise LesionError(f"corpus {corpus_name!r} has fewer than 2 tokens: give it more text")
    spans = windows(ids.numel(), window, stride)
    base: LevelResult | None = None
    for level in sorted(set(levels) | {0}):  # level 0, the unmasked model, is the reference
        with mask_neurons(model, index, list(neurons[:level])):
            losses = window_losses(model, ids, spans, batch_size, progress)
        result = summarise(corpus_name, level, losses, base)
        base = base or result
        yield result
