"""Stage 2: causal identification by greedy masking of the top-n of a ranking."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .errors import LesionError
from .ablation import baseline_nll, masked_nll
from .metrics import delta, perplexity
from .neurons import Neuron, SiteIndex
from .results import CriticalSet, Step


def _growing_chunks(sizes: list[int], batch_size: int) -> Iterator[list[int]]:
    """1, 2, 4, ... sizes per forward: a collapse at n=1 costs one row, a long search few forwards."""
    width, i = 1, 0
    while i < len(sizes):
        yield sizes[i:i + width]
        i += width
        width = min(2 * width, batch_size)


def find_critical_set(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                      candidates: Sequence[Neuron], *, epsilon: float = 1.0, step: int = 1,
                      max_neurons: int = 1000, batch_size: int = 8, model_name: str = "",
                      settings: dict | None = None, progress: bool = True) -> CriticalSet:
    """Mask the top n = step, 2*step, ... candidates; stop at the first Delta >= epsilon.

    Delta is not monotone in n, so the first crossing is the answer, as in the paper.
    When no n up to ``max_neurons`` crosses, the result has ``reached=False``, no neurons,
    and the Delta and perplexity of the best n tried.
    """
    if epsilon <= 0 or step < 1 or max_neurons < 1:
        raise LesionError("need epsilon > 0, step >= 1 and max-neurons >= 1: fix --epsilon/--step")
    candidates = list(candidates)[:max_neurons]
    if not candidates:
        raise LesionError("the ranking is empty: rank some neurons first (lesion rank) or widen --components")
    index.check(candidates)
    clean = baseline_nll(model, input_ids, (settings or {}).get("dtype", ""))
    sizes = list(range(step, len(candidates) + 1, step))
    if sizes[-1] != len(candidates):
        sizes.append(len(candidates))
    trajectory: list[Step] = []
    rows = 1
    bar = tqdm(total=len(sizes), desc="stage 2: greedy masking", disable=not progress, leave=False)
    try:
        for chunk in _growing_chunks(sizes, batch_size):
            nlls = masked_nll(model, input_ids, index, [candidates[:n] for n in chunk])
            rows += len(chunk)
            bar.update(len(chunk))
            for n, nll in zip(chunk, nlls):
                trajectory.append(Step(n, perplexity(nll), delta(nll, clean)))
                if trajectory[-1].delta >= epsilon:
                    return CriticalSet(model_name, tuple(candidates[:n]), perplexity(clean),
                                       trajectory[-1].ppl, trajectory[-1].delta, True, tuple(trajectory),
                                       rows, settings or {})
    finally:
        bar.close()
    best = max(trajectory, key=lambda s: s.delta)
    return CriticalSet(model_name, (), perplexity(clean), best.ppl, best.delta, False, tuple(trajectory),
                       rows, settings or {})
