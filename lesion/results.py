"""Result types that serialise to JSON, and atomic JSON writing.

Non-finite floats are written as the strings "inf", "-inf", "nan" so that any strict JSON
reader can load the files; :func:`as_float` turns them back.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LesionError
from .neurons import Neuron


def _finite_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_safe(v) for v in value]
    return value


def as_float(value: Any) -> float:
    return float(value)  # float("inf") and float("nan") parse the strings written above


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (non-finite floats as strings)."""
    if dataclasses.is_dataclass(data):
        data = data.to_dict()
    return write_text(path, json.dumps(_finite_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_text(path: str | Path, text: str) -> Path:
    """Write a file atomically: a reader (or an interrupted run) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LesionError(f"{str(path)!r} not found: pass the JSON written by an earlier lesion run")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LesionError(f"{str(path)!r} is not valid JSON ({e}): re-create it with lesion") from None


class _Loadable:
    """``load(path)``: a result file back into its type, or one line saying what to pass."""
    SOURCE = ""

    @classmethod
    def load(cls, path: str | Path):
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, AttributeError) as e:
            detail = f"missing {e}" if isinstance(e, KeyError) else "unexpected structure"
            raise LesionError(f"{str(path)!r} is not a lesion {cls.SOURCE} ({detail})") from None


@dataclass(frozen=True)
class Ranking(_Loadable):
    """Neurons in decreasing order of importance (the top ``len(neurons)`` of ``total_neurons``)."""
    model: str
    ranker: str
    neurons: tuple[Neuron, ...]
    scores: tuple[float, ...]
    positions: tuple[int, ...] | None  # token position of each neuron's best score
    total_neurons: int
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "ranker": self.ranker, "total_neurons": self.total_neurons,
                "settings": self.settings, "neurons": [str(n) for n in self.neurons],
                "scores": list(self.scores),
                "positions": None if self.positions is None else list(self.positions)}

    SOURCE = "ranking: pass ranking.json from `lesion rank` or `lesion scan`"

    def _repr_html_(self) -> str:  # a notebook shows the ranking as a table and a figure
        from .notebook import ranking_html
        return ranking_html(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Ranking":
        return cls(model=d["model"], ranker=d["ranker"], neurons=tuple(Neuron.parse(s) for s in d["neurons"]),
                   scores=tuple(as_float(s) for s in d["scores"]),
                   positions=None if d.get("positions") is None else tuple(d["positions"]),
                   total_neurons=d["total_neurons"], settings=d.get("settings", {}))


@dataclass(frozen=True)
class Step:
    n: int
    ppl: float
    delta: float


@dataclass(frozen=True)
class CriticalSet(_Loadable):
    """The first top-n of a ranking whose masking reaches Delta >= epsilon."""
    model: str
    neurons: tuple[Neuron, ...]
    baseline_ppl: float
    masked_ppl: float
    delta: float
    reached: bool  # False: the threshold was not reached within the candidate cap
    trajectory: tuple[Step, ...]
    forward_rows: int  # sequences evaluated by the search (each a forward of the text)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "reached": self.reached, "neurons": [str(n) for n in self.neurons],
                "n": len(self.neurons), "baseline_ppl": self.baseline_ppl, "masked_ppl": self.masked_ppl,
                "delta": self.delta, "forward_rows": self.forward_rows, "settings": self.settings,
                "trajectory": [dataclasses.asdict(s) for s in self.trajectory]}

    SOURCE = "critical set: pass critical.json from `lesion identify` or `lesion scan`"

    def _repr_html_(self) -> str:  # a notebook shows the set, its verdict and the Stage 2 trajectory
        from .notebook import critical_html
        return critical_html(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CriticalSet":
        return cls(model=d["model"], neurons=tuple(Neuron.parse(s) for s in d["neurons"]),
                   baseline_ppl=as_float(d["baseline_ppl"]), masked_ppl=as_float(d["masked_ppl"]),
                   delta=as_float(d["delta"]), reached=bool(d.get("reached", True)),
                   trajectory=tuple(Step(s["n"], as_float(s["ppl"]), as_float(s["delta"]))
                                    for s in d.get("trajectory", [])),
                   forward_rows=d.get("forward_rows", 0), settings=d.get("settings", {}))
