"""The neuron-set results: a Stage 1 ranking and a Stage 2 critical set."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..files import as_float, as_int, as_list, as_settings
from ..neurons import Neuron
from .base import Result


def unsettled_note(settings: dict) -> str | None:
    """What a ``samples="auto"`` ranking could not vouch for in this critical set, in one line
    (parameters in backticks, as in errors: the CLI shows them as flags)."""
    if settings.get("critical_within_settled") is not False:
        return None
    settled, cap = settings.get("settled_top", 0), settings.get("max_samples", "its")
    if settings.get("stopped") != "settled":
        return (f"`samples` auto used all {cap} samples and settled the order of only the top {settled} "
                f"neuron(s) at {settings.get('confidence', 0.95):.0%} confidence: the critical set's other "
                "neurons are ordered within noise, so another `seed` can give another set (the sweep analysis "
                "over seeds alone measures by how much; a heel search finds a seed-free heel)")
    return (f"the critical set reaches past the top {settled} neuron(s) that `samples` auto settled: "
            f"re-run with `samples` {cap} or a larger `max_samples`")


class NeuronSet(Result):
    """A set of neurons whose masking was scored: what :class:`CriticalSet` and
    :class:`~lesion.results.Heel` share, and what ``lesion mask --neurons`` reads."""
    model: str
    neurons: tuple[Neuron, ...]
    baseline_ppl: float
    masked_ppl: float
    delta: float
    reached: bool

    @property
    def n(self) -> int:
        return len(self.neurons)

    def inconsistency(self, data: dict) -> str | None:
        return check_neuron_set(self, data)


DELTA_TOLERANCE = 1e-6  # |delta - log10(masked / baseline)|: float round-off is far below it


def check_neuron_set(result: NeuronSet, data: dict) -> str | None:
    """What contradicts itself in a neuron set read from ``data`` (naming the field), or None.

    Checked: ``n`` against the neurons listed, no neuron twice, positive perplexities, ``delta``
    against the two perplexities, and ``reached`` against ``delta`` and the recorded epsilon."""
    neurons, n = result.neurons, data.get("n", len(result.neurons))
    if n != len(neurons):
        return f"n is {n!r} but neurons lists {len(neurons)}"
    if len(set(neurons)) != len(neurons):
        return "neurons lists a neuron twice"
    if not (math.isfinite(result.baseline_ppl) and result.baseline_ppl > 0):
        return f"baseline_ppl is {result.baseline_ppl}, not a positive perplexity"
    if not (result.masked_ppl > 0 or (math.isnan(result.masked_ppl) and not neurons)):
        return f"masked_ppl is {result.masked_ppl}, not a positive perplexity"
    if neurons and math.isnan(result.delta):
        return "delta is nan"
    if math.isfinite(result.masked_ppl):
        implied = math.log10(result.masked_ppl / result.baseline_ppl)
        if not abs(implied - result.delta) <= DELTA_TOLERANCE * max(1.0, abs(implied)):
            return f"delta is {result.delta} but log10(masked_ppl / baseline_ppl) is {implied:.6g}"
    epsilon = result.settings.get("epsilon")
    if isinstance(epsilon, (int, float)) and result.reached != (bool(neurons) and result.delta >= epsilon):
        return f"reached is {str(result.reached).lower()} but delta {result.delta:.6g} with {len(neurons)} " \
               f"neuron(s) against epsilon {epsilon:g} says otherwise"
    return None


@dataclass(frozen=True)
class Ranking(Result):
    """Neurons in decreasing order of importance (the top ``len(neurons)`` of ``total_neurons``)."""
    model: str
    ranker: str
    neurons: tuple[Neuron, ...]
    scores: tuple[float, ...]
    positions: tuple[int, ...] | None  # token position of each neuron's best score
    total_neurons: int
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "ranker": self.ranker, "total_neurons": self.total_neurons,
                "settings": self.settings, "neurons": [str(n) for n in self.neurons],
                "scores": list(self.scores),
                "positions": None if self.positions is None else list(self.positions)}

    SOURCE = "ranking: pass ranking.json from `lesion rank` or `lesion scan`"

    def inconsistency(self, data: dict) -> str | None:
        """Finite scores in decreasing order, each neuron once, positions inside the text."""
        if not all(math.isfinite(s) for s in self.scores):
            return "scores holds a value that is not finite"
        if any(a < b for a, b in zip(self.scores, self.scores[1:])):
            return "scores are not in decreasing order"
        if len(set(self.neurons)) != len(self.neurons):
            return "neurons lists a neuron twice"
        if len(self.neurons) > self.total_neurons:
            return f"total_neurons is {self.total_neurons} but neurons lists {len(self.neurons)}"
        tokens = self.settings.get("tokens")
        if self.positions is not None and isinstance(tokens, int):
            outside = [p for p in self.positions if not 0 <= p < tokens]
            if outside:
                return f"positions holds {outside[0]}, outside the text's {tokens} tokens"
        return None

    @classmethod
    def from_dict(cls, d: dict) -> "Ranking":
        neurons = tuple(Neuron.parse(s) for s in as_list(d["neurons"], "neurons"))
        scores = tuple(as_float(s) for s in as_list(d["scores"], "scores"))
        positions = None if d.get("positions") is None else tuple(as_int(p) for p in as_list(d["positions"],
                                                                                            "positions"))
        if len(scores) != len(neurons) or (positions is not None and len(positions) != len(neurons)):
            raise ValueError("neurons, scores and positions differ in length")
        return cls(model=str(d["model"]), ranker=str(d["ranker"]), neurons=neurons, scores=scores,
                   positions=positions, total_neurons=as_int(d["total_neurons"]),
                   settings=as_settings(d["settings"]))


@dataclass(frozen=True)
class Step:
    n: int
    ppl: float
    delta: float


@dataclass(frozen=True)
class CriticalSet(NeuronSet):
    """The first top-n of a ranking whose masking reaches Delta >= epsilon."""
    model: str
    neurons: tuple[Neuron, ...]
    baseline_ppl: float
    masked_ppl: float
    delta: float
    reached: bool  # False: the threshold was not reached within the candidate cap
    trajectory: tuple[Step, ...]
    forward_rows: int  # sequences evaluated by the search (each a forward of the text)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "reached": self.reached, "neurons": [str(n) for n in self.neurons],
                "n": len(self.neurons), "baseline_ppl": self.baseline_ppl, "masked_ppl": self.masked_ppl,
                "delta": self.delta, "forward_rows": self.forward_rows, "settings": self.settings,
                "trajectory": [dataclasses.asdict(s) for s in self.trajectory]}

    SOURCE = "critical set: pass critical.json from `lesion identify` or `lesion scan`"

    def inconsistency(self, data: dict) -> str | None:
        """As every neuron set, and the trajectory: it holds the crossing (the set's own figures)
        and, when nothing reached epsilon, its best point is the one recorded."""
        problem = check_neuron_set(self, data)
        if problem or not self.trajectory:
            return problem
        steps = {s.n: s for s in self.trajectory}
        if self.neurons:
            hit = steps.get(len(self.neurons))
            if hit is None or self.trajectory[-1].n < len(self.neurons):
                return f"the trajectory has no point at n = {len(self.neurons)}, the set's size"
            if hit.delta != self.delta or hit.ppl != self.masked_ppl:
                return (f"delta is {self.delta} but the trajectory gives {hit.delta} at n = {len(self.neurons)}")
        elif max(s.delta for s in self.trajectory) != self.delta:
            return f"delta is {self.delta} but the trajectory's best point is {max(s.delta for s in self.trajectory)}"
        return None

    @classmethod
    def from_dict(cls, d: dict) -> "CriticalSet":
        return cls(model=str(d["model"]), neurons=tuple(Neuron.parse(s) for s in as_list(d["neurons"], "neurons")),
                   baseline_ppl=as_float(d["baseline_ppl"]), masked_ppl=as_float(d["masked_ppl"]),
                   delta=as_float(d["delta"]), reached=bool(d.get("reached", True)),
                   trajectory=tuple(Step(as_int(s["n"]), as_float(s["ppl"]), as_float(s["delta"]))
                                    for s in as_list(d.get("trajectory", []), "trajectory")),
                   forward_rows=as_int(d.get("forward_rows", 0)), settings=as_settings(d["settings"]))
