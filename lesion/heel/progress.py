"""What a running search shows: its stage, rows per second, the best Delta so far and the time
left against its budget (a search may end sooner, when it reaches epsilon)."""
from __future__ import annotations

import math
import time

from tqdm.auto import tqdm

from .scorer import SetScorer


class SearchProgress:
    """A tqdm line updated after every evaluated piece of sets; attach with :meth:`attach`."""

    def __init__(self, enabled: bool = True):
        self.bar = tqdm(desc="search", disable=not enabled, leave=False, unit="row",
                        bar_format="{desc}: {n} rows [{elapsed}{postfix}]")

    def attach(self, score: SetScorer) -> "SearchProgress":
        score.listeners.append(self)
        return self

    def __call__(self, score: SetScorer) -> None:
        self.bar.set_description_str(f"search: {score.stage or 'scoring'}", refresh=False)
        self.bar.set_postfix_str(describe(score), refresh=False)
        self.bar.update(score.rows - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def describe(score: SetScorer) -> str:
    rate = score.rows / score.seconds if score.seconds else 0.0
    parts = [f"{rate:.2f} rows/s", f"best Delta {score.best[0]:.3g}"]
    left = time_left(score)
    if left is not None:
        parts.append(f"<= {left:.0f} s left")
    return ", ".join(parts)


def time_left(score: SetScorer) -> float | None:
    """Seconds until the budget runs out: the deadline, or the rows left at the rows/s so far."""
    left = math.inf
    if score.deadline is not None:
        left = max(0.0, score.deadline - time.monotonic())
    if score.rows and score.seconds:
        left = min(left, (score.max_rows - score.rows) * score.seconds / score.rows)
    return None if math.isinf(left) else left
