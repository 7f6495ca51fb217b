"""The result of :func:`lesion.method.compare.compare_rankers`: Delta of each ranker's top-n."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..runtime.anytime import Stopped
from .base import Result
from .record import Record
from .settings import Settings


@dataclass(frozen=True)
class LevelDelta(Record):
    """One ranker's top-n masked: Delta (random: the mean over its seeds), its spread, the perplexity."""
    ranker: str
    n: int
    delta: float  # mean over runs (random: over seeds)
    delta_std: float
    ppl: float  # perplexity at the mean Delta
    runs: int


@dataclass(frozen=True)
class Comparison(Result):
    """What ``compare.json`` holds: every ranker's Delta at every level, and where Delta falls back."""
    model: str
    baseline_ppl: float
    levels: tuple[int, ...]
    rows: tuple[LevelDelta, ...]
    fallbacks: dict[str, Any]  # ranker -> levels where Delta falls below the previous level's
    settings: Settings = field(default_factory=Settings)
    stopped: Stopped = Stopped.COMPLETE  # complete, budget or interrupted: rows hold the rankers that finished
    seconds: float = 0.0

    SOURCE = "comparison: pass compare.json from `lesion compare`"

    @property
    def rankers(self) -> list[str]:
        return list(dict.fromkeys(r.ranker for r in self.rows))

    def delta(self, ranker: str, n: int) -> float:
        return next(r.delta for r in self.rows if r.ranker == ranker and r.n == n)
