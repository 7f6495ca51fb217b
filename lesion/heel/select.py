"""Step 3 of the heel search: building a set that reaches epsilon from the screened candidates (greedy
forward selection, top-k, or the paper's prefix)."""
from __future__ import annotations

import math
from typing import Sequence

from ..model.neurons import Neuron
from .scorer import SetScorer
from .screen import _finite


def greedy_selection(score: SetScorer, screened: Sequence[tuple[Neuron, float]], epsilon: float,
                     rescreen: int = 32, max_size: int = 64, trace: list | None = None) -> list[Neuron]:
    """Forward selection: each step masks the candidate that raises Delta most given the set so
    far; only the ``rescreen`` candidates with the best latest value are re-evaluated."""
    latest = {n: d for n, d in screened}
    current: list[Neuron] = []
    value = -math.inf
    while len(current) < max_size and latest:
        consider = sorted(latest, key=lambda n: -_finite(latest[n]))[:step_width(score, rescreen)]
        values = score([current + [n] for n in consider]) if current else [latest[n] for n in consider]
        latest.update(zip(consider, values))
        pick = max(range(len(consider)), key=lambda i: (_finite(values[i]), -i))
        current.append(consider[pick])
        value = values[pick]
        del latest[consider[pick]]
        if trace is not None:
            trace.append({"stage": "greedy", "added": str(consider[pick]), "size": len(current), "delta": value,
                          "rescreened": len(consider) if len(current) > 1 else 0})
        if value >= epsilon:
            break
    return current


def step_width(score: SetScorer, rescreen: int) -> int:
    """Candidates one greedy step re-evaluates: ``rescreen``, or a quarter of the rows the budget
    still affords when that is fewer (at least 4), so a tight budget still takes several steps."""
    affordable = score.rows_affordable()
    return rescreen if math.isinf(affordable) else max(4, min(rescreen, int(affordable / 4)))


def first_crossing(score: SetScorer, order: Sequence[Neuron], epsilon: float, trace: list | None = None,
                   label: str = "topk") -> list[Neuron]:
    """The first prefix of ``order`` with Delta >= epsilon (exact: every n is tried in order),
    evaluated in growing batches (1, 2, 4, ... prefixes per call); [] if none crosses."""
    width, n = 1, 0
    while n < len(order):
        sizes = list(range(n + 1, min(n + width, len(order)) + 1))
        values = score([list(order[:k]) for k in sizes])
        for k, v in zip(sizes, values):
            if trace is not None:
                trace.append({"stage": label, "size": k, "delta": v})
            if v >= epsilon:
                return list(order[:k])
        n, width = sizes[-1], min(2 * width, 64)
    return []
