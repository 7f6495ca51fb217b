"""The result of :func:`lesion.evaluation.evaluate`: scores with and without the critical set."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..files import as_list, as_settings
from .base import Result

PARTS = ("perplexity", "tasks", "humaneval", "ifbench")


@dataclass(frozen=True)
class EvalReport(Result):
    """What ``eval.json`` holds. Each part (``perplexity`` rows, lm-eval ``tasks``, ``humaneval``,
    ``ifbench``, the last three by level) is None when it was not asked for; a run stopped by
    its budget or Ctrl-C (``stopped``) keeps the levels that finished."""
    model: str
    neurons: tuple[str, ...]
    levels: tuple[int, ...]
    settings: dict = field(default_factory=dict)
    perplexity: tuple[dict, ...] | None = None
    tasks: dict | None = None
    humaneval: dict | None = None
    ifbench: dict | None = None
    seconds: float = 0.0
    stopped: str = "complete"  # complete | budget | interrupted

    SOURCE = "evaluation: pass eval.json from `lesion eval`"

    def to_dict(self) -> dict:
        out = {"model": self.model, "neurons": list(self.neurons), "levels": list(self.levels),
               "settings": self.settings}
        for part in PARTS:
            value = getattr(self, part)
            if value is not None:
                out[part] = list(value) if part == "perplexity" else value
        return {**out, "seconds": self.seconds, "stopped": self.stopped}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalReport":
        rows = d.get("perplexity")
        return cls(model=str(d["model"]), neurons=tuple(as_list(d["neurons"], "neurons")),
                   levels=tuple(int(v) for v in as_list(d["levels"], "levels")), settings=as_settings(d["settings"]),
                   perplexity=None if rows is None else tuple(as_list(rows, "perplexity")), tasks=d.get("tasks"),
                   humaneval=d.get("humaneval"), ifbench=d.get("ifbench"), seconds=float(d.get("seconds", 0.0)),
                   stopped=str(d.get("stopped", "complete")))
