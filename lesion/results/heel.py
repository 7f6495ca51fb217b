"""The result of the smallest-heel search (:mod:`lesion.heel`), and its typed parts."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..neurons import Neuron
from .record import OpenRecord, Record, optional
from .sets import NeuronSet
from .settings import Settings


class Stopped(str, enum.Enum):
    """Why a search stopped (the strings the files hold)."""
    REACHED = "reached"
    NOT_REACHED = "not reached"
    BUDGET = "budget"  # max_rows or time_budget
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TextScore(Record):
    """One text the heel was measured on: its name, hash and length (absent when the search was
    given none) and its Delta under the heel."""
    name: str | None = optional()
    sha256: str | None = optional()
    tokens: int | None = optional()
    baseline_ppl: float = 0.0
    delta: float = 0.0
    masked_ppl: float | None = None  # None: no set was found


@dataclass(frozen=True)
class Stage(Record):
    """One stage of the search: rows and seconds it took, the size and Delta of its set."""
    stage: str
    rows: int
    seconds: float
    size: int
    delta: float | None  # None: the stage found no set


@dataclass(frozen=True)
class Certificate(OpenRecord):
    """What is known of smaller sets: which sizes were tried among the top ``pool`` screened, the best
    Delta of each size, a smaller set found (then the answer), and a note saying it in words."""
    pool: int | None = None
    sizes_tried: tuple[int, ...] | None = None
    best_delta_by_size: dict[str, float] | None = None
    smaller_set: tuple[str, ...] | None = None
    rows: int | None = None
    certified: bool | None = None
    subsets: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class NeuronProfile(Record):
    """Where a heel neuron sits, its Delta alone, and where (on the first text) its |activation| peaks."""
    neuron: str
    layer: int
    kind: str
    alone: float | None
    peak_position: int
    peak_abs: float
    median_abs_of_module: float


@dataclass(frozen=True)
class Heel(NeuronSet):
    """The smallest set ``lesion search`` found, how it was found, and how it was certified."""
    model: str
    neurons: tuple[Neuron, ...]
    reached: bool
    delta: float  # the objective: worst (or mean) Delta over the texts
    baseline_ppl: float
    masked_ppl: float
    rows: int
    texts: tuple[TextScore, ...]
    stages: tuple[Stage, ...]
    screen: dict[str, Any]  # the pool's signals, the sizing, the top screened, the heel's Delta alone
    certificate: Certificate
    trace: tuple[dict[str, Any], ...]  # every step of the selection and pruning, as each step logs it
    stopped: Stopped
    settings: Settings = field(default_factory=Settings)
    transfer: dict[str, Any] | None = None
    profile: tuple[NeuronProfile, ...] = ()
    seconds: float = 0.0  # wall time of the search (signals, screen, selection, pruning, certificate)
    portfolio: dict[str, Any] | None = None  # the sub-searches run (or not, and why) and which one found the answer

    LAYOUT = ("model", "reached", "neurons", "n", "baseline_ppl", "masked_ppl", "delta", "rows", "seconds",
              "stopped", "texts", "stages", "screen", "certificate", "profile", "settings", "transfer", "portfolio",
              "trace")
    LEGACY = {"texts": [], "stages": [], "screen": {}, "certificate": {}, "trace": []}
    SOURCE = "heel: pass heel.json from `lesion search`"
