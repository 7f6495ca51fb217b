"""Step 4 of the heel search: pruning a set that reaches epsilon to an irreducible one (delta debugging
then backward elimination, or best-drop)."""
from __future__ import annotations

import math
from typing import Sequence

from ..model.neurons import Neuron
from .scorer import SetScorer
from .screen import _finite


def prune_elimination(score: SetScorer, members: Sequence[Neuron], epsilon: float,
                      importance: dict[Neuron, float], trace: list | None = None) -> list[Neuron]:
    """Delta debugging while the set is large, then one backward-elimination pass."""
    current = list(members)
    chunks = 2
    while len(current) >= 8 and len(current) // chunks >= 4:
        size = math.ceil(len(current) / chunks)
        parts = [current[i:i + size] for i in range(0, len(current), size)]
        rests = [[n for n in current if n not in set(p)] for p in parts]
        values = score(rests)
        hits = [i for i, v in enumerate(values) if v >= epsilon]
        if hits:
            best = max(hits, key=lambda i: (values[i], -i))
            current = rests[best]
            chunks = max(chunks - 1, 2)
            _log(trace, "ddmin", size=len(current), delta=values[best], dropped=len(parts[best]))
        else:
            chunks *= 2
    for n in sorted(current, key=lambda n: (_finite(importance.get(n, math.inf)), str(n))):
        if len(current) == 1:
            break
        rest = [m for m in current if m != n]
        value = score([rest])[0]
        if value >= epsilon:
            current = rest
        _log(trace, "eliminate", neuron=str(n), delta_without=value, dropped=value >= epsilon)
    return make_irreducible(score, current, epsilon, trace)


def prune_best_drop(score: SetScorer, members: Sequence[Neuron], epsilon: float,
                    trace: list | None = None) -> list[Neuron]:
    """Each round tries every leave-one-out and drops the one that keeps Delta highest (O(n^2) rows)."""
    current = list(members)
    while len(current) > 1:
        rests = [current[:i] + current[i + 1:] for i in range(len(current))]
        values = score(rests)
        best = max(range(len(rests)), key=lambda i: (_finite(values[i]), -i))
        if values[best] < epsilon:
            break
        _log(trace, "best-drop", neuron=str(current[best]), delta_without=values[best])
        current = rests[best]
    return current


def make_irreducible(score: SetScorer, members: Sequence[Neuron], epsilon: float,
                     trace: list | None = None) -> list[Neuron]:
    """Drop members while some single one can go (one batched forward per round): dropping one
    member can make an earlier-kept one dispensable, since Delta is not monotone."""
    current = list(members)
    while len(current) > 1:
        rests = [current[:i] + current[i + 1:] for i in range(len(current))]
        values = score(rests)
        hits = [i for i, v in enumerate(values) if v >= epsilon]
        if not hits:
            break
        best = max(hits, key=lambda i: (values[i], -i))
        _log(trace, "irreducible-check", neuron=str(current[best]), delta_without=values[best])
        current = rests[best]
    return current


def _log(trace: list | None, stage: str, **fields) -> None:
    if trace is not None:
        trace.append({"stage": stage, **fields})
