"""Step 2 of the heel search: Delta of every pool neuron masked alone, and the order the screen reads the pool in."""
from __future__ import annotations

import math
from typing import Callable, Sequence

from ..model.neurons import Neuron
from .scorer import SetScorer


def screen(score: SetScorer, pool: Sequence[Neuron], epsilon: float = math.inf,
           limit: Callable[[int], int] | None = None) -> list[tuple[Neuron, float]]:
    """Each candidate alone, highest Delta first (ties in pool order), in growing chunks that stop
    once one neuron alone reaches ``epsilon``: then no smaller heel exists and the rest is not needed.
    ``limit(screened so far)`` says how much of the pool to screen (the budget's share)."""
    deltas: list[float] = []
    width = 8
    while len(deltas) < min(len(pool), limit(len(deltas)) if limit else len(pool)):
        end = min(len(deltas) + width, limit(len(deltas)) if limit else len(pool))
        deltas += score([[n] for n in pool[len(deltas):end]])
        if max(deltas) >= epsilon:
            break
        width *= 2
    return _by_delta(pool, deltas)


def _by_delta(pool: Sequence[Neuron], deltas: Sequence[float]) -> list[tuple[Neuron, float]]:
    order = sorted(range(len(deltas)), key=lambda i: (-_finite(deltas[i]), i))
    return [(pool[i], deltas[i]) for i in order]


def screened_so_far(score: SetScorer, pool: Sequence[Neuron]) -> list[tuple[Neuron, float]]:
    """The pool neurons already evaluated alone (a screen cut short keeps what it ran)."""
    done = [n for n in pool if frozenset([n]) in score.known]
    return _by_delta(done, [score.aggregate(score.known[frozenset([n])]) for n in done])


SCREEN_SHARE = 0.4  # of the rows a budget affords, what the screen may take (the rest builds the set)
SCREEN_TOP = 20  # neurons of the screen shown in a heel (screen.top), strongest first


def screen_order(pool: Sequence[Neuron], estimate: dict[Neuron, float] | None) -> list[Neuron]:
    """The pool in screening order: alternately the next by the first-order estimate and the next
    of the signals' interleaved order, so a screen the budget cuts short holds both the
    estimate's picks and every signal's best (the estimate misses neurons whose effect is far
    from linear, as at the attention sink)."""
    if not estimate:
        return list(pool)
    ranked = sorted(pool, key=lambda n: -_finite(estimate.get(n, 0.0)))  # stable: ties keep pool order
    order: dict[Neuron, None] = {}
    for a, b in zip(ranked, pool):
        order.setdefault(a)
        order.setdefault(b)
    return list(order)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None below 3 pairs or with no spread."""
    if len(xs) < 3:
        return None
    rx, ry = _ranks([_finite(x) for x in xs]), _ranks([_finite(y) for y in ys])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var > 0 else None


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _finite(x: float) -> float:
    return 1e300 if x != x else x  # NaN losses count as a collapse, as metrics.delta does
