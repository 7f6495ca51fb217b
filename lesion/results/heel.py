"""The result of the smallest-heel search (:mod:`lesion.heel`), and its typed parts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model.neurons import Neuron
from ..runtime.anytime import SEARCH_STOPS, Stopped
from .record import OpenRecord, Record, optional
from .sets import NeuronDelta, NeuronSet
from .settings import Settings


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
class EstimateCheck(Record):
    """How well the first-order estimate ranked the candidates then masked alone (Spearman's rho)."""
    signal: str
    masked: int
    spearman: float | None  # None: too few to rank


@dataclass(frozen=True)
class Screen(OpenRecord):
    """The candidate pool and its screen: which signal first proposed how many neurons (and how many
    only it did), each signal's seconds, how the screen was ordered and sized, how well the first-order
    estimate ranked the masked Delta, the top screened, and each heel neuron's Delta alone."""
    first_proposed_by: dict[str, int] | None = None
    only_in: dict[str, int] | None = None
    per_signal: int | None = None
    signal_seconds: dict[str, float] | None = None
    resumed_sets: int | None = None  # sets read back from the journal
    order: str | None = None
    confirmed_sets: int | None = None  # sets of the journal scored again because the answer rests on them
    sizing: dict[str, Any] | None = None
    estimate: EstimateCheck | None = None
    pool: int | None = None
    screened: int | None = None
    top: tuple[NeuronDelta, ...] | None = None
    heel_alone: dict[str, float] | None = None
    journal_failure: str | None = None  # why the journal stopped (a full disk): the search went on without it


@dataclass(frozen=True)
class TraceStep(OpenRecord):
    """One step of the selection or pruning, with the fields its kind of step logs."""
    stage: str | None = None
    part: str | None = None
    added: str | None = None
    neuron: str | None = None
    size: int | None = None
    delta: float | None = None
    delta_without: float | None = None
    dropped: bool | int | None = None
    rescreened: int | None = None


@dataclass(frozen=True)
class PortfolioRun(Record):
    """One part of the portfolio: the whole pool (``all``) or the neurons of some components; what it
    found, or why it did not run."""
    name: str
    pool: int
    screened: int | None = optional()
    size: int | None = optional()
    reached: bool | None = optional()
    stopped: Stopped | None = optional()
    rows: int | None = optional()
    seconds: float | None = optional()
    ran: bool | None = optional()
    why: str | None = optional()


@dataclass(frozen=True)
class Portfolio(Record):
    found_by: str  # "all", "certificate" or the name of a part
    parts: tuple[PortfolioRun, ...]


@dataclass(frozen=True)
class TransferRow(Record):
    neurons: tuple[str, ...]
    deltas: tuple[float | None, ...]  # on each text; None for an empty heel


@dataclass(frozen=True)
class Transfer(Record):
    """The Delta of every heel (joint and each text's own) on every text."""
    texts: tuple[str, ...]
    rows: dict[str, TransferRow]
    own_sizes: dict[str, int]
    own_rows: dict[str, int]
    transfer_rows: int


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
    screen: Screen
    certificate: Certificate
    trace: tuple[TraceStep, ...]  # every step of the selection and pruning
    stopped: Stopped
    settings: Settings = field(default_factory=Settings)
    transfer: Transfer | None = None
    profile: tuple[NeuronProfile, ...] = ()
    seconds: float = 0.0  # wall time of the search (signals, screen, selection, pruning, certificate)
    portfolio: Portfolio | None = None  # the sub-searches run (or not, and why) and which one found the answer

    LAYOUT = ("model", "reached", "neurons", "n", "baseline_ppl", "masked_ppl", "delta", "rows", "seconds",
              "stopped", "texts", "stages", "screen", "certificate", "profile", "settings", "transfer", "portfolio",
              "trace")
    LEGACY = {"texts": [], "stages": [], "screen": {}, "certificate": {}, "trace": []}
    SOURCE = "heel: pass heel.json from `lesion search`"
    STOPS = SEARCH_STOPS
