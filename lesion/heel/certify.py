"""Step 5 of the heel search: the certificate that no smaller set of the top screened candidates reaches epsilon."""
from __future__ import annotations

import math
from itertools import combinations, islice
from math import comb
from typing import Sequence

from ..model.neurons import Neuron
from .scorer import SetScorer
from .screen import _finite


def certify(score: SetScorer, screened: Sequence[tuple[Neuron, float]], found: Sequence[Neuron],
            epsilon: float, pool: int, batch: int = 64) -> dict:
    """Try every subset of the top ``pool`` screened neurons smaller than ``found``, smallest first.
    Returns the best Delta per size and the smaller set if one reaches epsilon."""
    top = [n for n, _ in screened[:pool]]
    best_by_size: dict[int, float] = {1: max((d for _, d in screened), default=-math.inf)}
    smaller, rows_before = None, score.rows
    if len(found) > 1 and best_by_size[1] >= epsilon:
        smaller = [screened[0][0]]
    for size in range(2, len(found) if smaller is None else 2):
        subsets = combinations(top, size)
        best_by_size[size] = -math.inf
        while chunk := [list(c) for c in islice(subsets, batch)]:
            values = score(chunk)
            best_by_size[size] = max(best_by_size[size], *map(_finite, values))
            hits = [i for i, v in enumerate(values) if v >= epsilon]
            if hits:
                smaller = chunk[max(hits, key=lambda i: (values[i], -i))]
                break
        if smaller is not None:
            break
    return {"pool": len(top), "sizes_tried": sorted(best_by_size), "best_delta_by_size": best_by_size,
            "smaller_set": None if smaller is None else [str(n) for n in smaller],
            "rows": score.rows - rows_before,
            "certified": smaller is None and len(found) > 0,
            "subsets": sum(comb(len(top), s) for s in range(2, len(found)))}


def certify_pool_for(found: int, rows: int, cap: int = 30) -> int:
    """The largest top-p whose subsets of sizes 2..found-1 fit in ``rows``."""
    p = 0
    while p < cap and sum(comb(p + 1, s) for s in range(2, found)) <= rows:
        p += 1
    return p


def rests_on(score: SetScorer, answer: Sequence[Neuron]) -> list[list[Neuron]]:
    """The sets whose Deltas a result states or rests on: the answer, the answer less each of its
    neurons (it is irreducible), each of its neurons alone, and the best set of every size (the
    certificate's best Delta by size)."""
    sets = [list(answer), *([m for m in answer if m != n] for n in answer), *([n] for n in answer)]
    best: dict[int, tuple[float, frozenset]] = {}
    for key, deltas in score.known.items():
        value = _finite(score.aggregate(deltas))
        if key and (len(key) not in best or value > best[len(key)][0]):
            best[len(key)] = (value, key)
    return sets + [sorted(key) for _, key in best.values()]
