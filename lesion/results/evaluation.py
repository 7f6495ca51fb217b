"""The result of :func:`lesion.evaluation.evaluate`: scores with and without the critical set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..runtime.anytime import Stopped
from .base import Result
from .record import optional
from .settings import Settings

PARTS = ("perplexity", "tasks", "humaneval", "ifbench")


@dataclass(frozen=True)
class EvalReport(Result):
    """What ``eval.json`` holds. Each part (``perplexity`` rows, lm-eval ``tasks``, ``humaneval``,
    ``ifbench``, the last three by level) is None when it was not asked for; a run stopped by
    its budget or Ctrl-C (``stopped``) keeps the levels that finished."""
    model: str
    neurons: tuple[str, ...]
    levels: tuple[int, ...]
    settings: Settings = field(default_factory=Settings)
    perplexity: tuple[dict[str, Any], ...] | None = optional()
    tasks: dict[str, Any] | None = optional()
    humaneval: dict[str, Any] | None = optional()
    ifbench: dict[str, Any] | None = optional()
    seconds: float = 0.0
    stopped: Stopped = Stopped.COMPLETE  # complete, budget or interrupted

    SOURCE = "evaluation: pass eval.json from `lesion eval`"
