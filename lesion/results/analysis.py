"""The result of :func:`lesion.analysis.run_analysis`: one of the paper's analyses.

Each analysis' figures are a typed record (:data:`ANALYSIS_DATA` names the record of each), its
fields declared in the order ``analysis-NAME.json`` holds them, beside the file's ``analysis``,
``model`` and ``settings``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..runtime.anytime import Stopped
from .base import Result
from .record import Record, decode, optional, spread
from .sets import NeuronDelta, Step
from .settings import Settings

ENVELOPE = ("analysis", "model", "settings")  # the file's keys around the figures


@dataclass(frozen=True)
class LayerKindCell(Record):
    layer: int
    kind: str
    count: int


@dataclass(frozen=True)
class LayerKindCounts(Record):
    """Where a set of neurons sits: per (layer, kind) cell, by kind (most common first), by layer."""
    cells: tuple[LayerKindCell, ...]
    by_kind: dict[str, int]
    by_layer: dict[str, int]


@dataclass(frozen=True)
class DistributionData(Record):
    """The critical set and each top-k of the ranking (``top``: {"top10": counts, ...}), by layer
    and kind, over the model's ``layers`` and ``kinds``."""
    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    critical: LayerKindCounts
    top: dict[str, LayerKindCounts] = spread()


@dataclass(frozen=True)
class PhaseData(Record):
    """Delta as the top n are masked, n from 0 past n*; each critical neuron alone and all jointly."""
    baseline_ppl: float
    n_star: int
    epsilon: float
    curve: tuple[Step, ...]
    alone: tuple[NeuronDelta, ...]
    joint_delta: float
    sum_of_alone: float


@dataclass(frozen=True)
class ComponentLevel(Record):
    """The top-n noise-ranked neurons of one component kind masked together: Delta."""
    n: int
    delta: float


@dataclass(frozen=True)
class ComponentsData(Record):
    """Delta of the top-n noise-ranked neurons of each component kind, at each level n."""
    levels: tuple[int, ...]
    by_kind: dict[str, tuple[ComponentLevel, ...]]


@dataclass(frozen=True)
class SweepPoint(Record):
    """One scan of the sweep: its alpha, K and seed, n* (None: not reached), Delta and set."""
    alpha: float
    samples: int
    seed: int
    n_star: int | None
    delta: float
    neurons: tuple[str, ...]


@dataclass(frozen=True)
class SweepRow(SweepPoint):
    """A point beside the reference: which parameter it varies and its set's overlap with the
    reference set (None until compared)."""
    varied: str
    jaccard_to_reference: float | None = optional()


@dataclass(frozen=True)
class SweepData(Record):
    reference: SweepPoint | None  # None: stopped before the reference scan finished
    rows: tuple[SweepRow, ...]
    epsilon: float
    stopped: Stopped


@dataclass(frozen=True)
class TextScan(Record):
    """The critical set found on one text."""
    tokens: int
    reached: bool
    n_star: int
    delta: float
    neurons: tuple[str, ...]


@dataclass(frozen=True)
class CommonNeuron(Record):
    neuron: str
    texts: int  # on how many texts it is critical


@dataclass(frozen=True)
class RobustnessData(Record):
    """The critical set of each text, their pairwise Jaccard overlap (in ``names`` order) and the
    neurons most often critical."""
    texts: dict[str, TextScan]
    names: tuple[str, ...]
    jaccard: tuple[tuple[float, ...], ...]
    most_common: tuple[CommonNeuron, ...]
    stopped: Stopped


@dataclass(frozen=True)
class PrecisionRow(Record):
    """The scan in one dtype, and its set masked in float32 (absent when the set is empty)."""
    dtype: str
    reached: bool
    n_star: int
    baseline_ppl: float
    masked_ppl: float
    delta: float
    neurons: tuple[str, ...]
    error: str | None = None  # None: the scan ran
    delta_in_float32: float | None = optional()


@dataclass(frozen=True)
class PrecisionFailure(Record):
    """A dtype the scan refused (e.g. a non-finite baseline in float16): a finding, kept as such."""
    dtype: str
    reached: bool
    n_star: int | None  # None: no scan
    error: str
    neurons: tuple[str, ...]


@dataclass(frozen=True)
class PrecisionData(Record):
    rows: tuple[PrecisionRow | PrecisionFailure, ...]
    epsilon: float


AnalysisData = DistributionData | PhaseData | ComponentsData | SweepData | RobustnessData | PrecisionData
ANALYSIS_DATA: dict[str, type] = {"distribution": DistributionData, "phase": PhaseData,
                                  "components": ComponentsData, "sweep": SweepData,
                                  "robustness": RobustnessData, "precision": PrecisionData}


def analysis_data(name: str, d: Any) -> AnalysisData:
    """The figures of analysis ``name`` from a file's object (``analysis``/``model``/``settings``
    beside them, or the figures alone as the analysis functions return them)."""
    if name not in ANALYSIS_DATA:
        raise ValueError(f"{name!r} is not an analysis lesion writes (one of {', '.join(ANALYSIS_DATA)})")
    if not isinstance(d, dict):
        raise ValueError(f"analysis {name!r} is not an object")
    figures = {k: v for k, v in d.items() if k not in ENVELOPE}
    return decode(ANALYSIS_DATA[name], figures, name)


@dataclass(frozen=True)
class AnalysisResult(Result):
    """What ``analysis-NAME.json`` holds: the analysis' name, the model, its figures (``data``, a
    record whose fields are the file's top-level keys) and the settings."""
    analysis: str
    model: str | None
    data: AnalysisData
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self):
        if not isinstance(self.settings, Settings):  # a plain mapping given by a caller
            object.__setattr__(self, "settings", Settings.of(self.settings))

    SOURCE = "analysis: pass analysis-NAME.json from `lesion analyze`"

    def to_dict(self) -> dict:
        return {"analysis": self.analysis, "model": self.model, **self.data.to_dict(),
                "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "AnalysisResult":
        name, model = d["analysis"], d.get("model")
        if not isinstance(name, str) or not (model is None or isinstance(model, str)):
            raise ValueError("its analysis or model is not a name")
        settings = Settings.from_dict(d["settings"])
        return cls(analysis=name, model=model, data=analysis_data(name, d), settings=settings)
