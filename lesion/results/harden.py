"""The record of a hardening (:mod:`lesion.harden`), kept as lesion-harden.json in the model folder."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..files import as_settings
from .base import Result


@dataclass(frozen=True)
class HardenRecord(Result):
    """The rotation (method, seed, what was rotated), the source model and its fingerprint, and,
    once measured, the proof that the function is kept and the heel before and after."""
    source_model: str
    source_fingerprint: str
    hardened_fingerprint: str
    rotation: dict
    proof: dict = field(default_factory=dict)  # per precision: PPL, logits, generations, speed
    heel: dict = field(default_factory=dict)  # before/after: outliers, masked neuron, n*, search
    settings: dict = field(default_factory=dict)

    SOURCE = "hardening record: pass the lesion-harden.json of a `lesion harden` folder"

    def to_dict(self) -> dict:
        return {"source_model": self.source_model, "source_fingerprint": self.source_fingerprint,
                "hardened_fingerprint": self.hardened_fingerprint, "rotation": self.rotation,
                "proof": self.proof, "heel": self.heel, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "HardenRecord":
        return cls(source_model=str(d["source_model"]), source_fingerprint=str(d["source_fingerprint"]),
                   hardened_fingerprint=str(d["hardened_fingerprint"]), rotation=dict(d["rotation"]),
                   proof=dict(d.get("proof") or {}), heel=dict(d.get("heel") or {}),
                   settings=as_settings(d.get("settings", {})))

    def with_(self, **changes) -> "HardenRecord":
        return replace(self, **changes)
