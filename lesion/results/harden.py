"""The record of a hardening (:mod:`lesion.harden`), kept as lesion-harden.json in the model folder.

Every part is a typed record, its fields declared in the order the file holds them: the rotation,
the proof per precision and the heel before and after (:class:`HeelComparison`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..runtime.anytime import Stopped
from .base import Result
from .record import Record, decode, encode, optional
from .sets import NeuronDelta
from .settings import Settings


@dataclass(frozen=True)
class HeadRotation(Record):
    """What rotating inside the heads did: values/o_proj per head, and in how many layers the
    queries/keys' rotary planes; how their angles were chosen ("fitted" on the ``calibration``
    texts, "random", "none"), how many (layer, key head, plane) rotations were made and how many a
    per-channel q/k norm pinned; the largest |R R^T - I| of the value rotations."""
    values: bool
    queries_keys_layers: int
    qk_angles: str | None = optional()  # None: a file written before the choice existed (random angles)
    qk_planes: int | None = optional()
    qk_planes_pinned: int | None = optional()
    calibration: tuple[str, ...] | None = optional()
    orthogonality_error: float | None = optional()


@dataclass(frozen=True)
class ChannelSpread(Record):
    """How a residual channel (the heel's) is spread by Q: the largest share of its energy one new
    channel holds (even spread: ``uniform_share``), and max |Q_cj| sqrt(n) (1: perfectly even)."""
    channel: int
    flatness: float
    top_share: float
    uniform_share: float


@dataclass(frozen=True)
class Rotation(Record):
    """The change of basis: method, seed, the residual width and the checks made on Q (with
    ``residual`` false, for a family whose stream no rotation keeps, only the heads were rotated:
    the checks are the head rotations')."""
    method: str
    seed: int
    heads: HeadRotation | None  # None: the heads were not rotated
    model_type: str
    hidden_size: int
    untied_embeddings: bool
    seconds: float
    orthogonality_error: float
    spread: ChannelSpread | None = optional()  # the watched channel's (the heel's), when one was given
    text_sha256: str | None = optional()  # the text the heel was measured on
    residual: bool | None = optional()  # whether the stream was rotated; None: a file from before, when it always was


@dataclass(frozen=True)
class TextProof(Record):
    """One text, the original model against the hardened one."""
    ppl_before: float
    ppl_after: float
    ppl_rel_diff: float
    max_abs_logit_diff: float
    max_abs_logit: float
    tokens: int


@dataclass(frozen=True)
class GenerationProof(Record):
    """One greedy generation of both models, token for token."""
    tokens: int
    identical: bool
    first_difference: int | None  # None: identical


@dataclass(frozen=True)
class Proof(Record):
    """The function is kept, in one precision: per text, the largest differences, the generations."""
    texts: dict[str, TextProof]
    max_ppl_rel_diff: float
    max_abs_logit_diff: float
    generations: tuple[GenerationProof, ...]
    generations_identical: bool


@dataclass(frozen=True)
class Budget(Record):
    """The heel search's budget, the same for the original and the hardened model so their heels
    compare: Stage 2 candidates, masked rows of ``lesion search``, Stage 1 samples K, the seed."""
    max_neurons: int = 1000
    max_rows: int = 2000
    samples: int = 100
    seed: int = 42


@dataclass(frozen=True)
class OutlierLayer(Record):
    """One block's residual channel with the largest |activation|, against the median channel."""
    layer: int
    channel: int
    max: float
    median: float
    ratio: float


@dataclass(frozen=True)
class Outliers(Record):
    """Each block's largest residual channel, and the most massive of them."""
    layers: tuple[OutlierLayer, ...]
    max_ratio: float
    layer: int
    channel: int


@dataclass(frozen=True)
class Where(Record):
    """Where a set sits: neurons by module kind and by layer."""
    modules: dict[str, int]
    layers: dict[str, int]


@dataclass(frozen=True)
class SetSummary(Record):
    """A set one search found: its size, Delta, first neurons and where they sit. A scan adds its
    best Delta when the threshold was not reached; a heel search why it stopped, its epsilon,
    every neuron of the set and which part of its portfolio found it."""
    n: int
    reached: bool
    delta: float
    neurons: tuple[str, ...]
    where: Where
    rows: int | None = optional()  # masked rows the search spent
    best_delta: float | None = optional()
    stopped: Stopped | None = optional()  # the heel search's: reached, not reached, budget, interrupted
    epsilon: float | None = optional()
    all_neurons: tuple[str, ...] | None = optional()
    found_by: str | None = optional()  # the heel search's portfolio part that found the set ("all", "q,k,v"...)


@dataclass(frozen=True)
class SameSet(Record):
    """A set found on the original, masked as one set on the hardened model (by the same names)."""
    n: int
    same_set: bool
    delta: float
    reached: bool
    neurons: tuple[str, ...]
    where: Where
    rows: int


@dataclass(frozen=True)
class HeelProfile(Record):
    """Everything the report compares on one model; the searches only with a budget. The hardened
    model's ``fixed_basis`` (and ``original_heel``) is the original's set masked as it is."""
    outliers: Outliers
    masked: tuple[NeuronDelta, ...]
    scan: SetSummary | None = optional()
    search: SetSummary | None = optional()
    original_heel: SameSet | None = optional()
    fixed_basis: SetSummary | SameSet | None = optional()


@dataclass(frozen=True)
class HeelComparison(Record):
    """The heel before and after hardening, on the text of ``text_sha256``."""
    text_sha256: str
    before: HeelProfile
    after: HeelProfile
    budget: Budget | None  # None: no search was made


@dataclass(frozen=True)
class HardenRecord(Result, Record):
    """The rotation (method, seed, what was rotated), the source model and its fingerprint, and,
    once measured, the proof that the function is kept (by precision) and the heel before and
    after (None until measured)."""
    source_model: str
    source_fingerprint: str
    hardened_fingerprint: str
    rotation: Rotation
    proof: dict[str, Proof] = field(default_factory=dict)
    heel: HeelComparison | None = None
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self):
        if not isinstance(self.settings, Settings):  # a plain mapping given by a caller
            object.__setattr__(self, "settings", Settings.of(self.settings))

    SOURCE = "hardening record: pass the lesion-harden.json of a `lesion harden` folder"

    def to_dict(self) -> dict:
        out = encode(self)
        if self.heel is None:  # not measured: an empty object, as files have always held
            out["heel"] = {}
        return out

    @classmethod
    def from_dict(cls, d: Any) -> "HardenRecord":
        if isinstance(d, dict):  # written before the proof or the heel was measured: empty
            d = {**d, "proof": d.get("proof") or {}, "heel": d.get("heel") or None}
        return decode(cls, d, cls.__name__)

    def with_(self, **changes) -> "HardenRecord":
        return replace(self, **changes)
