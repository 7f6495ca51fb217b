"""Why the critical neurons matter: massive activations, super weights, positions, ablation
designs and normalisation.

Every label has a magnitude criterion and, beside it, a causal test (stated so that results
can be compared):
- massive activation (Sun et al. 2024): a neuron whose largest |activation| on the text is
  > 100 and > 1000x the median |activation| of its module; tested by zeroing its value at
  position 0 only;
- super weight candidate, data-free (after Yu et al. 2024): in each ``down`` weight, the
  entry with the largest |w| relative to the median |w| of that matrix; the top ones across
  the model are listed, and a critical ``down`` neuron matches when it is the row
  (output channel) of one; tested by zeroing that one scalar weight (Yu et al.'s own test,
  done with a hook: :mod:`lesion.masking.weight_lesions`);
- residual write: the residual-stream channel a neuron writes into, see
  :func:`residual_writes`; tested by zeroing that channel of the writing module.
A test is causal when its lesion alone raises perplexity at least ten-fold (Delta >= 1, the
paper's epsilon)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..masking.ablation import baseline_nll, set_deltas
from ..runtime.anytime import Anytime
from ..errors import ParameterError
from ..masking.masks import mask_neurons, set_neurons
from ..model.neurons import Neuron, SiteIndex, discover_sites
from ..results.mechanism import (ActivationProfile, AloneDeltas, CarryingWeight, Criteria, LargestWeight,
                                 MechanismReport, NeuronMechanism, Overlap, ResidualWrite, SuperWeight, TokenLesion,
                                 TopActivation)
from ..method.study import Study
from ..method.rankers import clean_activations
from ..texts.text import encode
from ..masking.weight_lesions import weight_deltas
from ..model.weights import consumers, producers
from .causal import CAUSAL_DELTA, _deltas, _tested, frozen_norms, lesion_tokens, resample_values, verdict
from .detect import (MASSIVE_ABS, MASSIVE_RATIO, _magnitudes, _scalar, activation_profile, carrying_weights,
                     largest_producing_weight, massive_activations, super_weights, top_weights)
from .graph import OWN_OUTPUT, SCORING_ROWS, following_norm, forward_order, residual_writes


def mechanism(study: Study, critical: Sequence[Neuron], *, other_text: str, seed: int = 0,
              max_neurons: int | None = None, time_budget: float | None = None,
              progress: bool = False) -> MechanismReport:
    """Magnitudes and causal tests of ``critical`` on the study's text.

    The cost grows with the set: each neuron tested costs a few masked rows (itself zeroed, at
    position 0 only, its largest and its carrying weight zeroed). ``max_neurons`` tests the
    first that many neurons of the set (its order: Stage 1 rank); the lesions of the whole set
    (positions, ablations, norm statistics) always mask every neuron. The work runs in steps,
    cheapest and widest first; ``time_budget`` (seconds) or Ctrl-C stops it between steps and
    the report holds the steps that finished (``stopped``).
    """
    critical = list(critical)
    if max_neurons is not None and (isinstance(max_neurons, bool) or not isinstance(max_neurons, int)
                                    or max_neurons < 0):
        raise ParameterError("max_neurons", f"must be a whole number >= 0 (0: all), got {max_neurons!r}")
    tested = critical[:max_neurons] if max_neurons else critical
    chunks = [tested[i:i + SCORING_ROWS] for i in range(0, len(tested), SCORING_ROWS)]
    parts = _Parts(critical)
    run = Anytime(4 + len(chunks), "mechanism", time_budget=time_budget, progress=progress)
    with run:
        probe = _Probe(study, critical, other_text, seed)
        parts.magnitudes(probe)
        run.step()
        parts.set_lesions(probe)
        run.step()
        parts.norm_lesions(probe)
        run.step()
        parts.outlier_tests(probe)
        run.step()
        for chunk in chunks:
            parts.neuron_tests(probe, chunk)
            run.step()
    run.check_something_finished()  # an interrupt before the first step: no empty report
    return parts.report(run)


# Steps of :func:`mechanism`, each filling some fields of the report; what a stopped run never
# reached stays empty.
class _Probe:
    """What every step reads: the model, the text, the clean activations and forward order."""

    def __init__(self, study, critical, other_text, seed):
        self.study, self.critical, self.other_text, self.seed = study, critical, other_text, seed
        self.model, self.ids = study.lm.model, study.input_ids
        self.index = discover_sites(self.model, "all")
        self.acts = clean_activations(self.model, self.ids, self.index)
        self.flat_max = torch.cat([self.acts[s.name].abs().max(dim=0).values for s in self.index.sites])
        self.clean = baseline_nll(self.model, self.ids, study.lm.dtype)
        self.order = forward_order(self.model, self.ids)
        self.medians: dict[str, float] = {}  # per module: median |w| (a sort of the whole matrix, done once)

    def set_deltas(self, neurons: Sequence[Neuron], **options) -> dict:
        unique = list(dict.fromkeys(neurons))
        return dict(zip(unique, set_deltas(self.model, self.ids, self.index, [[n] for n in unique], self.clean,
                                           max_rows=SCORING_ROWS, **options)))

    def weight_deltas(self, weights: Sequence[LargestWeight | CarryingWeight | SuperWeight]) -> dict:
        unique = list(dict.fromkeys(_scalar(w) for w in weights))
        return dict(zip(unique, weight_deltas(self.model, self.ids, unique, self.clean, max_rows=SCORING_ROWS)))


class _Parts:
    def __init__(self, critical):
        self.critical = critical
        self.neurons: list[NeuronMechanism] = []
        self.massive: list[TopActivation] = []
        self.supers: list[SuperWeight] = []
        self.positions: dict[str, float] = {}
        self.ablations: dict[str, float] = {}
        self.norm_tokens: dict[str, TokenLesion] = {}
        self.following: list[str] = []

    def magnitudes(self, p: _Probe) -> None:
        self.massive = massive_activations(p.acts, p.index)
        self.supers = super_weights(p.model, p.index)
        self.following = sorted({f for f in (following_norm(p.model, n.module, p.order) for n in self.critical) if f})

    def set_lesions(self, p: _Probe) -> None:
        model, index, critical, t = p.model, p.index, self.critical, p.ids.shape[1]
        self.positions = _deltas(p.study, {
            "all positions": lambda: mask_neurons(model, index, critical),
            "position 0 only": lambda: mask_neurons(model, index, critical, positions=slice(0, 1)),
            "all but position 0": lambda: mask_neurons(model, index, critical, positions=slice(1, t)),
        }, p.clean)
        means = {n: float(p.acts[n.module][:, n.channel].mean()) for n in critical}
        # The resampled values come from the other text, at the critical modules only.
        other_ids = encode(p.study.lm.tokenizer, p.other_text, p.study.lm.device)
        modules = SiteIndex([index.by_name[m] for m in dict.fromkeys(n.module for n in critical)])
        other = clean_activations(model, other_ids, modules)
        self.ablations = _deltas(p.study, {
            "zero": lambda: mask_neurons(model, index, critical),
            "mean": lambda: set_neurons(model, index, means),
            "resample": lambda: set_neurons(model, index, resample_values(p.study, other, critical, p.seed)),
        }, p.clean)

    def norm_lesions(self, p: _Probe) -> None:
        tokens = {"recomputed": lesion_tokens(p.model, p.ids, p.index, self.critical, p.clean)}
        for label, names in (("frozen: following norm only", self.following), ("frozen: every norm", None)):
            with frozen_norms(p.model, p.ids, names):
                tokens[label] = lesion_tokens(p.model, p.ids, p.index, self.critical, p.clean)
        self.norm_tokens = tokens

    def outlier_tests(self, p: _Probe) -> None:
        """The causal test beside each of the model's top outliers, by magnitude."""
        at_0 = p.set_deltas([Neuron.parse(m.neuron) for m in self.massive], ablation="position0")
        zeroed = p.weight_deltas(self.supers)
        self.massive = [dataclasses.replace(m, delta_position0=at_0[Neuron.parse(m.neuron)],
                                            causal=at_0[Neuron.parse(m.neuron)] >= CAUSAL_DELTA) for m in self.massive]
        self.supers = [_tested(w, zeroed[_scalar(w)]) for w in self.supers]

    def neuron_tests(self, p: _Probe, chunk: Sequence[Neuron]) -> None:
        """Each neuron of ``chunk`` alone: zeroed, zeroed at position 0, its weights and its
        residual write zeroed; batched over the chunk."""
        writes = residual_writes(p.model, p.ids, p.index, chunk, p.order, p.acts)
        own = [largest_producing_weight(p.model, n, p.medians) for n in chunk]
        peaks = [int(p.acts[n.module][:, n.channel].abs().argmax()) for n in chunk]
        carrying = carrying_weights(p.model, p.ids, chunk, peaks, p.medians)
        singles = list(chunk) + [Neuron.parse(w.neuron) for w in writes if w]
        zero, at_0 = p.set_deltas(singles), p.set_deltas(singles, ablation="position0")
        zeroed = p.weight_deltas([w for w in own + carrying if w])
        massive_names = {m.neuron for m in self.massive}
        super_rows = {f"{s.module}:{s.row}" for s in self.supers}
        for n, write, weight, carrier in zip(chunk, writes, own, carrying):
            profile = activation_profile(p.acts, p.index, n, p.flat_max)
            alone = AloneDeltas(zero=zero[n], position0=at_0[n])
            weight = None if weight is None else _tested(weight, zeroed[_scalar(weight)])
            carrier = None if carrier is None else _tested(carrier, zeroed[_scalar(carrier)])
            if write:
                residual = Neuron.parse(write.neuron)
                write = dataclasses.replace(write, delta_zero=zero[residual], delta_position0=at_0[residual])
            self.neurons.append(NeuronMechanism(
                **_magnitudes(profile), in_top_massive=str(n) in massive_names, super_weight_row=str(n) in super_rows,
                alone=alone, largest_weight=weight, carrying_weight=carrier, residual_write=write,
                labels=tuple(labels(profile, alone, weight, carrier, write)),
                feeding=tuple(top_weights(producers(p.model, n))),
                leaving=tuple(top_weights(consumers(p.model, p.index, n)))))

    def report(self, run: Anytime) -> MechanismReport:
        names = set(map(str, self.critical))
        massive_names = {m.neuron for m in self.massive}
        super_rows = {f"{s.module}:{s.row}" for s in self.supers}
        return MechanismReport(
            neurons=tuple(self.neurons), massive_activations=tuple(self.massive), super_weights=tuple(self.supers),
            overlap=Overlap(critical_in_top_massive=tuple(sorted(massive_names & names)),
                            critical_on_super_weight_rows=tuple(sorted(super_rows & names))),
            positions=self.positions, ablations=self.ablations,
            normalisation={label: r.delta for label, r in self.norm_tokens.items()},
            normalisation_tokens=self.norm_tokens, following_norms=tuple(self.following), criteria=CRITERIA,
            stopped=run.stopped, critical_size=len(self.critical), neurons_tested=len(self.neurons),
            seconds=run.seconds)
CRITERIA = Criteria(massive=f"|a| > {MASSIVE_ABS} and > {MASSIVE_RATIO}x its module's median |a|",
                    super_weight="largest |w| / median |w| of each down_proj weight",
                    causal=f"the lesion alone gives Delta >= {CAUSAL_DELTA} (ten-fold perplexity)",
                    massive_test="the neuron zeroed at position 0 only",
                    super_weight_test="that one scalar weight zeroed (a hook subtracting w * x)",
                    carrying_weight="the entry of the neuron's weight row with the largest |w * x| "
                                    "where the neuron peaks (Yu et al.'s activation-based locator)",
                    residual_write="the channel of the next residual writer (down/o) whose output "
                                   "changes most when the neuron is masked; its own channel for "
                                   "down/o neurons")


def labels(profile: ActivationProfile, alone: AloneDeltas, weight: LargestWeight | None,
           carrier: CarryingWeight | None, write: ResidualWrite | None) -> list[str]:
    """One honest sentence per label: the magnitude criterion and what its causal test gave."""
    out = []
    if profile.massive:
        d = alone.position0
        out.append(f"massive activation (max |a| {profile.max_abs:.4g} at position {profile.argmax_position}); "
                   f"zeroing it at position 0: Delta {d:.2f}, {verdict(d)}")
    if weight and weight.delta_zeroed is not None:
        d = weight.delta_zeroed
        name = "super weight" if d >= CAUSAL_DELTA else "largest by magnitude"
        out.append(f"{name}: W[{weight.row}, {weight.column}] = {weight.ratio_to_median:.1f}x the "
                   f"median |w|; zeroing it: Delta {d:.2f}, {verdict(d)}")
    if carrier and carrier.delta_zeroed is not None:
        d = carrier.delta_zeroed
        share = "" if carrier.share_of_activation is None else f", {carrier.share_of_activation:.0%} of it"
        out.append(f"carried at position {carrier.position} by W[{carrier.row}, {carrier.column}] "
                   f"= {carrier.weight:.4g} x input {carrier.input:.4g} (term {carrier.term:.4g}{share}); "
                   f"zeroing that weight: Delta {d:.2f}, {verdict(d)}")
    if write and write.delta_zero is not None and write.delta_position0 is not None:
        target = "its own channel" if write.how == OWN_OUTPUT else write.neuron
        out.append(f"writes into residual channel {write.channel} ({target}); zeroing that: Delta "
                   f"{write.delta_zero:.2f}, at position 0 only: {write.delta_position0:.2f}")
    return out
