"""The result of :func:`lesion.mechanism.mechanism`: why the critical neurons matter."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..files import as_list, as_settings
from .base import Result


@dataclass(frozen=True)
class MechanismReport(Result):
    """Magnitudes and causal tests of a critical set, as written to ``mechanism.json``.

    ``neurons`` holds one profile per neuron tested (the first ``neurons_tested`` of the
    ``critical_size`` critical neurons, in the set's order); the set-level lesions
    (``positions``, ``ablations``, ``normalisation``) always mask the whole set. A run stopped
    by its budget or by Ctrl-C (``stopped``) keeps the parts that finished; a part not reached
    is empty.
    """
    neurons: tuple[dict, ...]
    massive_activations: tuple[dict, ...]
    super_weights: tuple[dict, ...]
    overlap: dict
    positions: dict
    ablations: dict
    normalisation: dict
    normalisation_tokens: dict
    following_norms: tuple[str, ...]
    criteria: dict
    stopped: str = "complete"  # complete | budget | interrupted
    critical_size: int = 0
    neurons_tested: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    SOURCE = "mechanism report: pass mechanism.json from `lesion mechanism`"

    def to_dict(self) -> dict:
        return {"neurons": list(self.neurons), "massive_activations": list(self.massive_activations),
                "super_weights": list(self.super_weights), "overlap": self.overlap, "positions": self.positions,
                "ablations": self.ablations, "normalisation": self.normalisation,
                "normalisation_tokens": self.normalisation_tokens, "following_norms": list(self.following_norms),
                "criteria": self.criteria, "stopped": self.stopped, "critical_size": self.critical_size,
                "neurons_tested": self.neurons_tested, "seconds": self.seconds, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "MechanismReport":
        return cls(neurons=tuple(as_list(d["neurons"], "neurons")),
                   massive_activations=tuple(as_list(d["massive_activations"], "massive_activations")),
                   super_weights=tuple(as_list(d["super_weights"], "super_weights")), overlap=dict(d["overlap"]),
                   positions=dict(d["positions"]), ablations=dict(d["ablations"]),
                   normalisation=dict(d["normalisation"]), normalisation_tokens=dict(d["normalisation_tokens"]),
                   following_norms=tuple(as_list(d["following_norms"], "following_norms")),
                   criteria=dict(d["criteria"]), stopped=str(d.get("stopped", "complete")),
                   critical_size=int(d.get("critical_size", len(d["neurons"]))),
                   neurons_tested=int(d.get("neurons_tested", len(d["neurons"]))),
                   seconds=float(d.get("seconds", 0.0)), settings=as_settings(d.get("settings", {})))

    @property
    def finished(self) -> bool:
        return self.stopped == "complete" and self.neurons_tested == self.critical_size
