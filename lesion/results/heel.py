"""The result of the smallest-heel search (:mod:`lesion.heel`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..files import as_float, as_int, as_list, as_settings
from ..neurons import Neuron
from .sets import NeuronSet


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
    texts: tuple[dict, ...]
    stages: tuple[dict, ...]  # per stage: rows, seconds, set size, Delta
    screen: dict
    certificate: dict
    trace: tuple[dict, ...]
    stopped: str  # "reached", "not reached", "budget" (--max-rows / --time-budget), "interrupted"
    settings: dict = field(default_factory=dict)
    transfer: dict | None = None
    profile: tuple[dict, ...] = ()  # per neuron: layer, kind, Delta alone, where its |activation| peaks
    seconds: float = 0.0  # wall time of the search (signals, screen, selection, pruning, certificate)
    portfolio: dict | None = None  # the sub-searches run (or not, and why) and which one found the answer

    def to_dict(self) -> dict:
        return {"model": self.model, "reached": self.reached, "neurons": [str(n) for n in self.neurons],
                "n": len(self.neurons), "baseline_ppl": self.baseline_ppl, "masked_ppl": self.masked_ppl,
                "delta": self.delta, "rows": self.rows, "seconds": self.seconds, "stopped": self.stopped,
                "texts": list(self.texts), "stages": list(self.stages), "screen": self.screen,
                "certificate": self.certificate, "profile": list(self.profile), "settings": self.settings,
                "transfer": self.transfer, "portfolio": self.portfolio, "trace": list(self.trace)}


    SOURCE = "heel: pass heel.json from `lesion search`"

    @classmethod
    def from_dict(cls, d: dict) -> "Heel":
        return cls(model=str(d["model"]), neurons=tuple(Neuron.parse(s) for s in as_list(d["neurons"], "neurons")),
                   reached=bool(d["reached"]), delta=as_float(d["delta"]), baseline_ppl=as_float(d["baseline_ppl"]),
                   masked_ppl=as_float(d["masked_ppl"]), rows=as_int(d["rows"]),
                   texts=tuple(as_list(d.get("texts", []), "texts")),
                   stages=tuple(as_list(d.get("stages", []), "stages")),
                   screen=dict(d.get("screen") or {}), certificate=dict(d.get("certificate") or {}),
                   trace=tuple(as_list(d.get("trace", []), "trace")), stopped=str(d["stopped"]),
                   settings=as_settings(d["settings"]), transfer=d.get("transfer"),
                   profile=tuple(as_list(d.get("profile", []), "profile")),
                   seconds=as_float(d.get("seconds", 0.0)), portfolio=d.get("portfolio"))
