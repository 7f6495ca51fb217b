"""The result of :func:`lesion.mechanism.run.mechanism`: why the critical neurons matter.

Every part of ``mechanism.json`` is a typed record; the fields are declared in the order the file
holds them. A causal test that a stopped run never reached is absent from the file (``None``
here), as it always was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..runtime.anytime import Stopped
from .base import Result
from .record import Record, decode, encode, optional
from .settings import Settings


@dataclass(frozen=True)
class WeightSlice(Record):
    """The largest |w| of one weight slice feeding (or reading) a neuron: (index, w) pairs."""
    slice: str
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class LargestWeight(Record):
    """The entry of the row producing a neuron with the largest |w|, and its causal test."""
    module: str
    row: int
    column: int
    abs_weight: float
    ratio_to_median: float
    delta_zeroed: float | None = optional()
    causal: bool | None = optional()


@dataclass(frozen=True)
class CarryingWeight(Record):
    """The weight carrying a neuron's activation where it peaks (the largest |w * x|)."""
    module: str
    row: int
    column: int
    position: int
    weight: float
    input: float
    term: float
    share_of_activation: float | None  # None: the terms sum to zero
    ratio_to_median: float
    delta_zeroed: float | None = optional()
    causal: bool | None = optional()


@dataclass(frozen=True)
class ResidualWrite(Record):
    """The residual-stream channel a neuron writes into most, and that channel zeroed."""
    neuron: str
    writer: str
    channel: int
    position: int
    largest_change: float
    how: str
    delta_zero: float | None = optional()
    delta_position0: float | None = optional()


@dataclass(frozen=True)
class AloneDeltas(Record):
    """Delta of a neuron masked alone: everywhere, and at position 0 only."""
    zero: float
    position0: float


@dataclass(frozen=True)
class ActivationProfile(Record):
    """A neuron's magnitudes on the text: its largest |activation|, where, and against its module."""
    neuron: str
    max_abs: float
    argmax_position: int
    value_at_position_0: float
    site_median_abs: float
    ratio_to_median: float
    rank_by_max_abs: int
    massive: bool


@dataclass(frozen=True)
class TopActivation(ActivationProfile):
    """One of the model's top activations by magnitude and its causal test (zeroed at position 0)."""
    delta_position0: float | None = optional()
    causal: bool | None = optional()


@dataclass(frozen=True)
class NeuronMechanism(ActivationProfile):
    """A critical neuron tested one by one: its magnitudes, where it sits among the outliers, its
    Deltas alone, the weights and the residual channel that carry it (None: none), in words."""
    in_top_massive: bool
    super_weight_row: bool
    alone: AloneDeltas
    largest_weight: LargestWeight | None
    carrying_weight: CarryingWeight | None
    residual_write: ResidualWrite | None
    labels: tuple[str, ...]
    feeding: tuple[WeightSlice, ...]
    leaving: tuple[WeightSlice, ...]


@dataclass(frozen=True)
class SuperWeight(Record):
    """A data-free super-weight candidate: a down weight's largest |w| / median |w|."""
    module: str
    layer: int
    row: int
    column: int
    abs_weight: float
    ratio_to_median: float
    delta_zeroed: float | None = optional()
    causal: bool | None = optional()


@dataclass(frozen=True)
class Overlap(Record):
    """The critical neurons among the top activations and on the super-weight candidates' rows."""
    critical_in_top_massive: tuple[str, ...]
    critical_on_super_weight_rows: tuple[str, ...]


@dataclass(frozen=True)
class TokenLesion(Record):
    """Delta of the critical set masked, with the per-token view a bare Delta hides."""
    delta: float
    tokens: int
    nonfinite_tokens: int
    delta_finite_tokens: float | None  # None: no token loss is finite
    first_nonfinite_module: str | None
    largest_finite_abs_output: float
    largest_finite_abs_output_by_layer: tuple[float, ...]


@dataclass(frozen=True)
class Criteria(Record):
    """Each label's magnitude criterion and causal test, in words."""
    massive: str
    super_weight: str
    causal: str
    massive_test: str
    super_weight_test: str
    carrying_weight: str
    residual_write: str


@dataclass(frozen=True)
class MechanismReport(Result, Record):
    """Magnitudes and causal tests of a critical set, as written to ``mechanism.json``.

    ``neurons`` holds one profile per neuron tested (the first ``neurons_tested`` of the
    ``critical_size`` critical neurons, in the set's order); the set-level lesions
    (``positions``, ``ablations``, ``normalisation``: Delta by lesion) always mask the whole
    set. A run stopped by its budget or by Ctrl-C (``stopped``) keeps the parts that finished; a
    part not reached is empty.
    """
    neurons: tuple[NeuronMechanism, ...]
    massive_activations: tuple[TopActivation, ...]
    super_weights: tuple[SuperWeight, ...]
    overlap: Overlap
    positions: dict[str, float]
    ablations: dict[str, float]
    normalisation: dict[str, float]
    normalisation_tokens: dict[str, TokenLesion]
    following_norms: tuple[str, ...]
    criteria: Criteria
    stopped: Stopped = Stopped.COMPLETE
    critical_size: int = 0
    neurons_tested: int = 0
    seconds: float = 0.0
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self):
        if not isinstance(self.settings, Settings):  # a plain mapping given by a caller
            object.__setattr__(self, "settings", Settings.of(self.settings))

    SOURCE = "mechanism report: pass mechanism.json from `lesion mechanism`"

    def to_dict(self) -> dict:
        return encode(self)

    @classmethod
    def from_dict(cls, d: Any) -> "MechanismReport":
        if isinstance(d, dict) and isinstance(d.get("neurons"), list):  # written before these two were
            d = {**d, "critical_size": d.get("critical_size", len(d["neurons"])),
                 "neurons_tested": d.get("neurons_tested", len(d["neurons"]))}
        return decode(cls, d, cls.__name__)

    @property
    def finished(self) -> bool:
        return self.stopped == Stopped.COMPLETE and self.neurons_tested == self.critical_size
