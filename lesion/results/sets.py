"""The neuron-set results: a Stage 1 ranking and a Stage 2 critical set."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..model.neurons import Neuron
from .base import Result, model_inconsistency
from .record import Record
from .settings import Settings


def unsettled_note(settings: Settings) -> str | None:
    """What a ``samples="auto"`` ranking could not vouch for in this critical set, in one line
    (parameters in backticks, as in errors: the CLI shows them as flags)."""
    if settings.critical_within_settled is not False:
        return None
    settled = settings.settled_top or 0
    cap = "its" if settings.max_samples is None else settings.max_samples
    if settings.stopped != "settled":
        confidence = 0.95 if settings.confidence is None else settings.confidence
        return (f"`samples` auto used all {cap} samples and settled the order of only the top {settled} "
                f"neuron(s) at {confidence:.0%} confidence: the critical set's other "
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
    settings: Settings

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
    problem = model_inconsistency(result)
    if problem:
        return problem
    neurons, n = result.neurons, data.get("n", len(result.neurons))
    if type(n) is not int or n != len(neurons):
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
    epsilon = result.settings.epsilon
    if epsilon is not None and result.reached != (bool(neurons) and result.delta >= epsilon):
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
    settings: Settings = field(default_factory=Settings)

    LAYOUT = ("model", "ranker", "total_neurons", "settings", "neurons", "scores", "positions")
    SOURCE = "ranking: pass ranking.json from `lesion rank` or `lesion scan`"

    def inconsistency(self, data: dict) -> str | None:
        """As many scores (and positions) as neurons, finite, in decreasing order, each neuron once,
        positions inside the text; the model its settings record."""
        problem = model_inconsistency(self)
        if problem:
            return problem
        if len(self.scores) != len(self.neurons) or (self.positions is not None
                                                      and len(self.positions) != len(self.neurons)):
            return "neurons, scores and positions differ in length"
        if not all(math.isfinite(s) for s in self.scores):
            return "scores holds a value that is not finite"
        if any(a < b for a, b in zip(self.scores, self.scores[1:])):
            return "scores are not in decreasing order"
        if len(set(self.neurons)) != len(self.neurons):
            return "neurons lists a neuron twice"
        if len(self.neurons) > self.total_neurons:
            return f"total_neurons is {self.total_neurons} but neurons lists {len(self.neurons)}"
        tokens = self.settings.tokens
        if self.positions is not None and tokens is not None:
            outside = [p for p in self.positions if not 0 <= p < tokens]
            if outside:
                return f"positions holds {outside[0]}, outside the text's {tokens} tokens"
        return None


@dataclass(frozen=True)
class Step(Record):
    """The top ``n`` of a ranking masked, their perplexity and Delta: one point of Stage 2's
    trajectory or of the phase curve."""
    n: int
    ppl: float
    delta: float


@dataclass(frozen=True)
class NeuronDelta(Record):
    """A neuron and the Delta of masking it alone (screened, measured after hardening, or the phase's)."""
    neuron: str
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
    settings: Settings = field(default_factory=Settings)

    LAYOUT = ("model", "reached", "neurons", "n", "baseline_ppl", "masked_ppl", "delta", "forward_rows", "settings",
              "trajectory")
    LEGACY = {"reached": True, "trajectory": [], "forward_rows": 0}  # files older than these fields
    SOURCE = "critical set: pass critical.json from `lesion identify` or `lesion scan`"

    def inconsistency(self, data: dict) -> str | None:
        """As every neuron set, and the trajectory: it holds the crossing (the set's own figures)
        and, when nothing reached epsilon, its best point is the one recorded."""
        problem = check_neuron_set(self, data)
        if problem or not self.trajectory:
            return problem
        ns = [s.n for s in self.trajectory]
        if ns[0] < 1 or any(a >= b for a, b in zip(ns, ns[1:])):
            return f"the trajectory's n are not increasing from 1 ({ns[:6]}{'...' if len(ns) > 6 else ''})"
        for step in self.trajectory:
            implied = math.log10(step.ppl / self.baseline_ppl) if step.ppl > 0 and math.isfinite(step.ppl) else None
            if implied is not None and not abs(implied - step.delta) <= DELTA_TOLERANCE * max(1.0, abs(implied)):
                return f"the trajectory's delta at n = {step.n} is {step.delta} but its ppl gives {implied:.6g}"
            if not step.ppl > 0:
                return f"the trajectory's ppl at n = {step.n} is {step.ppl}, not a positive perplexity"
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
