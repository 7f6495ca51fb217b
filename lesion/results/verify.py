"""The result of :func:`lesion.replay.verify.verify`: every fingerprinted weight slice of a critical set, checked."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Result
from .record import Record
from .settings import Settings


@dataclass(frozen=True)
class SliceCheck(Record):
    """One weight slice around a critical neuron, as found on the model checked."""
    neuron: str
    slice: str
    status: str  # intact | zeroed | scaled | altered | missing
    detail: str


@dataclass(frozen=True)
class VerifyReport(Result):
    """Every fingerprinted weight slice of a critical set, checked on a (deployed) model."""
    model: str
    checks: tuple[SliceCheck, ...]
    whole_model_matches: bool  # the whole model's fingerprint is the one the critical set recorded
    settings: Settings

    LAYOUT = ("model", "intact", "checks", "whole_model_matches", "settings")
    SOURCE = "verify report: pass the file a verify wrote"

    @property
    def changed(self) -> list[SliceCheck]:
        return [c for c in self.checks if c.status != "intact"]

    @property
    def intact(self) -> bool:
        return not self.changed
