"""The result of :func:`lesion.heel.minimal.minimal_sets`: how close the greedy set is to the minimum."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.anytime import Stopped
from .base import Result
from .settings import Settings


@dataclass(frozen=True)
class MinimalSets(Result):
    """The greedy set, the irreducible set pruning leaves, and the smallest set of the pool."""
    greedy: tuple[str, ...]
    greedy_delta: float
    irreducible: tuple[str, ...]
    irreducible_delta: float
    prune_rows: int
    optimum: tuple[str, ...] | None  # None: no subset of the pool reaches epsilon up to max_size
    optimum_delta: float | None
    pool: int
    max_size: int
    search_rows: int  # sets evaluated by the exhaustive search
    search_forwards: int  # batched forward passes of the text those sets took
    greedy_is_optimal: bool | None  # within the pool; None when the pool does not hold the greedy set
    settings: Settings = field(default_factory=Settings)
    # complete, budget or interrupted: a stopped search certifies sizes < searched_size + 1 only
    stopped: Stopped = Stopped.COMPLETE
    searched_size: int = 0  # every subset up to this size was evaluated
    seconds: float = 0.0

    SOURCE = "minimal sets: pass minimal-eps<E>.json from `lesion minimal`"
