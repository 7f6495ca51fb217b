"""What every result records about how it was computed: :class:`Settings`, a typed record.

Each command recorded its own keys in its own order (a scan's critical set the ranking's keys and
then Stage 2's, a search the model's, its signals' and then its plan's), and files must keep their
bytes: a :class:`Settings` holds the keys present, in the order they were given or read, and is
written back exactly so. The keys lesion knows are typed fields (None while absent); any other key
(a newer lesion's, or an analysis's own) is kept in ``extra`` and written back as read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.hub import is_commit
from .record import OpenRecord

DEFAULT_EPSILON = 1.0  # what a result written before epsilon was recorded was made with


@dataclass(frozen=True)
class Settings(OpenRecord):
    """The settings of a result: typed fields for the keys lesion writes, ``extra`` for others,
    ``present`` for which keys the file holds, in their order (a key present may hold null: a
    multi-text search records ``text: null``)."""
    # the model (lesion.method.provenance.model_provenance)
    model: str | None = None
    model_revision: str | None = None
    model_fingerprint: str | None = None
    dtype: str | None = None
    device: str | None = None
    versions: dict[str, Any] | None = None
    partial_view: dict[str, Any] | None = None
    # the text (a long one in a file beside the result while on disk)
    components: str | None = None
    text_sha256: str | dict[str, str] | None = None  # a dict: one hash per named text (robustness)
    text: str | None = None
    text_file: str | None = None
    tokens: int | None = None
    texts: tuple[str, ...] | None = None
    # Stage 1
    ranker: str | None = None
    seed: int | None = None
    alpha: float | None = None
    samples: int | str | None = None
    alpha_relative: bool | None = None
    reduce: str | None = None
    batch_size: int | None = None
    max_samples: int | None = None
    samples_used: int | None = None
    confidence: float | None = None
    settle_top: int | None = None
    settle_rule: str | None = None
    settled_top: int | None = None
    stopped: str | None = None  # samples="auto": "settled" or "cap"
    check_every: int | None = None
    keep: int | None = None
    # Stage 2
    epsilon: float | None = None
    step: int | None = None
    max_neurons: int | None = None
    stage2: str | None = None
    gallop: dict[str, Any] | None = None
    critical_within_settled: bool | None = None
    # search (lesion.heel): the signals and the plan
    signals: tuple[str, ...] | None = None
    per_signal: int | None = None
    noise: dict[str, Any] | None = None
    bare_row_seconds: float | None = None
    signals_left_out: dict[str, str] | None = None
    strategy: str | None = None
    prune: str | None = None
    ablation: str | None = None
    objective: str | None = None
    rescreen: int | None = None
    max_size: int | None = None
    certify_rows: int | None = None
    max_rows: int | None = None
    screen: int | None = None
    time_budget: float | None = None
    pool: int | None = None
    # comparison of rankers, evaluation
    rankers: tuple[str, ...] | None = None
    random_runs: int | None = None
    window: int | None = None
    stride: int | None = None
    max_tokens: int | None = None
    loss_dtype: str | None = None

    def __post_init__(self) -> None:
        # A recorded revision is the commit a hub snapshot was loaded at, and is passed back to the hub
        # client (which joins it into paths) when a later command loads the model the result names.
        if self.model_revision is not None and not is_commit(self.model_revision):
            raise ValueError(f"settings.model_revision: {self.model_revision!r} is not a 40-hex commit")

    @property
    def epsilon_or_default(self) -> float:
        """The epsilon the result was made with (1.0 for results written before it was recorded)."""
        return DEFAULT_EPSILON if self.epsilon is None else self.epsilon

__all__ = ["DEFAULT_EPSILON", "Settings"]
