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


NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def as_float(value: Any) -> float:
    """A number as written by :func:`write_json`: a JSON number or one of the non-finite strings."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def as_settings(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("settings is not an object")
    return value


def as_list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return value


def unsettled_note(settings: dict) -> str | None:
    """What a --samples auto ranking could not vouch for in this critical set, in one line."""
    if settings.get("critical_within_settled") is not False:
        return None
    settled, cap = settings.get("settled_top", 0), settings.get("max_samples", "its")
    if settings.get("stopped") != "settled":
        return (f"--samples auto used all {cap} samples and settled the order of only the top {settled} "
                f"neuron(s) at {settings.get('confidence', 0.95):.0%} confidence: the critical set's other "
                "neurons are ordered within noise, so another --seed can give another set (lesion analyze sweep "
                "--alphas '' --sample-grid '' measures by how much; lesion search finds a seed-free heel)")
    return (f"the critical set reaches past the top {settled} neuron(s) that --samples auto settled: "
            f"re-run with --samples {cap} or a larger --max-samples")


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (non-finite floats as strings)."""
    if dataclasses.is_dataclass(data):
        data = data.to_dict()
    return write_text(path, json.dumps(_finite_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_output_path(path: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output that would replace something other than a regular file
    (a folder, a device node such as /dev/null, a pipe): the atomic rename would swap it out."""
    path = Path(path)
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise LesionError(f"{flag} {str(path)!r} is {what}: pass the path of a file to write")
    if not str(path.name) or path.name in (".", ".."):
        raise LesionError(f"{flag} {str(path)!r} names no file: pass the path of a file to write")
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write a file atomically: a reader (or an interrupted run) never sees half a file.

    The file gets the permissions a plain ``open`` would (0666 less the umask), not the
    private 0600 of a temp file; a failed write (read-only, full disk, no permission) is
    one line naming the path, and leaves nothing behind.
    """
    from .cache import remove_orphans
    path = check_output_path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent, f".{path.name}.*.tmp")  # left by a run killed while writing this file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # a full disk reports here, not after the rename
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise LesionError(f"cannot write {str(path)!r} ({e.strerror or e}): choose a writable path "
                          "with free space") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise LesionError(f"{str(path)!r} is a folder: pass the JSON file written by an earlier lesion run")
    if not path.is_file():
        raise LesionError(f"{str(path)!r} not found: pass the JSON written by an earlier lesion run")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LesionError(f"{str(path)!r} is not valid JSON ({e}): re-create it with lesion") from None
    except OSError as e:
        raise LesionError(f"cannot read {str(path)!r} ({e.strerror or e}): check its permissions") from None
    if not isinstance(data, dict):
        raise LesionError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object: pass a lesion "
                          "result file")
    return data


class _Loadable:
    """``load(path)``: a result file back into its type, or one line saying what to pass."""
    SOURCE = ""

    @classmethod
    def load(cls, path: str | Path):
        """The result in ``path``, its text restored from where it was kept and checked (:mod:`lesion.run`)."""
        from .run import restore_text
        data = read_json(path)
        try:
            result = cls.from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            detail = f"missing {e}" if isinstance(e, KeyError) else str(e) or "unexpected structure"
            raise LesionError(f"{str(path)!r} is not a lesion {cls.SOURCE} ({detail})") from None
        return dataclasses.replace(result, settings=restore_text(result.settings, Path(path).parent, path))


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
        neurons = tuple(Neuron.parse(s) for s in as_list(d["neurons"], "neurons"))
        scores = tuple(as_float(s) for s in as_list(d["scores"], "scores"))
        positions = None if d.get("positions") is None else tuple(as_int(p) for p in as_list(d["positions"],
                                                                                            "positions"))
        if len(scores) != len(neurons) or (positions is not None and len(positions) != len(neurons)):
            raise ValueError("neurons, scores and positions differ in length")
        return cls(model=str(d["model"]), ranker=str(d["ranker"]), neurons=neurons, scores=scores,
                   positions=positions, total_neurons=as_int(d["total_neurons"]),
                   settings=as_settings(d["settings"]))


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
        return cls(model=str(d["model"]), neurons=tuple(Neuron.parse(s) for s in as_list(d["neurons"], "neurons")),
                   baseline_ppl=as_float(d["baseline_ppl"]), masked_ppl=as_float(d["masked_ppl"]),
                   delta=as_float(d["delta"]), reached=bool(d.get("reached", True)),
                   trajectory=tuple(Step(as_int(s["n"]), as_float(s["ppl"]), as_float(s["delta"]))
                                    for s in as_list(d.get("trajectory", []), "trajectory")),
                   forward_rows=as_int(d.get("forward_rows", 0)), settings=as_settings(d["settings"]))
