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
  done with a hook: :mod:`lesion.weight_lesions`);
- residual write: the residual-stream channel a neuron writes into, see
  :func:`residual_writes`; tested by zeroing that channel of the writing module.
A test is causal when its lesion alone raises perplexity at least ten-fold (Delta >= 1, the
paper's epsilon).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import torch

from . import architectures
from .ablation import baseline_nll, set_deltas
from .anytime import Anytime, Stopped
from .errors import LesionError, ParameterError
from .hooks import hooked, mask_neurons, set_neurons
from .metrics import delta, mean_nll, token_nll
from .neurons import Neuron, SiteIndex, discover_sites
from .results.mechanism import (ActivationProfile, AloneDeltas, CarryingWeight, Criteria, LargestWeight,
                                MechanismReport, NeuronProfile, Overlap, ResidualWrite, SuperWeight, TokenLesion,
                                TopActivation, WeightSlice)
from .study import Study
from .stage1 import clean_activations, noise_generator
from .texts import encode
from .weight_lesions import ScalarWeight, weight_deltas
from .weights import RESIDUAL_WRITERS, consumers, matrix, producers

MASSIVE_ABS, MASSIVE_RATIO = 100.0, 1000.0
CAUSAL_DELTA = 1.0  # a lesion is called causal when it alone raises perplexity ten-fold
# Rows per forward when scoring single lesions: a row holds the logits of the whole
# vocabulary at every token (262k words for Gemma 3).
SCORING_ROWS = 8


def activation_profile(acts: dict, index: SiteIndex, neuron: Neuron, flat_max: torch.Tensor) -> ActivationProfile:
    a = acts[neuron.module][:, neuron.channel]
    site_median = float(acts[neuron.module].abs().median())
    peak = float(a.abs().max())
    rank = int((flat_max > flat_max[index.flat(neuron)]).sum()) + 1
    return ActivationProfile(neuron=str(neuron), max_abs=peak, argmax_position=int(a.abs().argmax()),
                             value_at_position_0=float(a[0]), site_median_abs=site_median,
                             ratio_to_median=peak / site_median if site_median else float("inf"),
                             rank_by_max_abs=rank, massive=peak > MASSIVE_ABS and peak > MASSIVE_RATIO * site_median)


def _magnitudes(profile: ActivationProfile) -> dict:
    """The fields of a bare profile, for the record that extends it."""
    return {f.name: getattr(profile, f.name) for f in dataclasses.fields(ActivationProfile)}


def massive_activations(acts: dict, index: SiteIndex, top: int = 10) -> list[TopActivation]:
    flat_max = torch.cat([acts[s.name].abs().max(dim=0).values for s in index.sites])
    order = torch.sort(flat_max, descending=True, stable=True).indices[:top]
    return [TopActivation(**_magnitudes(activation_profile(acts, index, n, flat_max)))
            for n in index.neurons(order.tolist())]


def super_weights(model: torch.nn.Module, index: SiteIndex, top: int = 10) -> list[SuperWeight]:
    """Each ``down`` weight's largest entry relative to that matrix's median |w|, the ``top``
    of them across the model (magnitude only: :func:`mechanism` adds the causal test)."""
    rows = []
    for site in index.sites:
        w = matrix(model.get_submodule(site.name)) if site.kind == "down" else None
        if w is None:  # not a down projection, or one inside fused experts (a slice of a 3-D weight)
            continue
        w = w.detach().float().abs()
        ratio = w / w.median().clamp_min(1e-12)
        flat = int(ratio.argmax())
        out_channel, in_channel = divmod(flat, w.shape[1])
        rows.append(SuperWeight(module=site.name, layer=site.layer, row=out_channel, column=in_channel,
                                abs_weight=float(w[out_channel, in_channel]), ratio_to_median=float(ratio.max())))
    return sorted(rows, key=lambda r: -r.ratio_to_median)[:top]


def _median_abs(w: torch.Tensor, module: str, medians: dict | None) -> float:
    """Median |w| of a whole matrix, kept in ``medians`` per module: a 1.5B model's down
    weight has 14M entries, and every neuron of that module would sort them again."""
    if medians is None or module not in medians:
        value = max(float(w.abs().median()), 1e-12)
        if medians is None:
            return value
        medians[module] = value
    return medians[module]


def largest_producing_weight(model: torch.nn.Module, neuron: Neuron,
                             medians: dict | None = None) -> LargestWeight | None:
    """The entry of the row that produces ``neuron`` with the largest |w|, measured against
    the median |w| of the whole matrix as for :func:`super_weights`; None for a module
    without a 2-D weight (activations, norms)."""
    w = matrix(model.get_submodule(neuron.module))
    if w is None or neuron.channel >= w.shape[0]:
        return None
    w = w.detach()
    row = w[neuron.channel].float().abs()
    column = int(row.argmax())
    return LargestWeight(module=neuron.module, row=neuron.channel, column=column, abs_weight=float(row[column]),
                         ratio_to_median=float(row[column]) / _median_abs(w.float(), neuron.module, medians))


def carrying_weights(model: torch.nn.Module, input_ids: torch.Tensor, neurons: Sequence[Neuron],
                     positions: Sequence[int], medians: dict | None = None) -> list[CarryingWeight | None]:
    """For each neuron, the weight that carries its activation at ``positions[i]`` (where it
    peaks): the entry ``W[channel, col]`` with the largest term |w * x_col| there, and that
    term's share of the activation (of the sum of the terms, bias left out). This is how
    Yu et al. locate a super weight from the activations (row: the output channel that
    spikes, column: the input that spikes), which can differ from the largest |w|. None for
    a module without a 2-D weight."""
    inputs: dict[str, torch.Tensor] = {}
    record = {n.module: (lambda m, i, o, name=n.module: inputs.__setitem__(name, i[0].detach().float()))
              for n in neurons if matrix(model.get_submodule(n.module)) is not None}
    with hooked(model, record, raw=True), torch.inference_mode():
        model.base_model(input_ids=input_ids)
    out: list[CarryingWeight | None] = []
    for n, p in zip(neurons, positions):
        if n.module not in inputs:
            out.append(None)
            continue
        w = matrix(model.get_submodule(n.module)).detach()
        x = inputs[n.module].reshape(-1, w.shape[1])[p]  # batch of one: (T, in) in every layout
        terms = w[n.channel].float() * x
        column = int(terms.abs().argmax())
        total = float(terms.sum())  # the activation less any bias
        out.append(CarryingWeight(
            module=n.module, row=n.channel, column=column, position=p, weight=float(w[n.channel, column]),
            input=float(x[column]), term=float(terms[column]),
            share_of_activation=float(terms[column]) / total if total else None,
            ratio_to_median=abs(float(w[n.channel, column])) / _median_abs(w.float(), n.module, medians)))
    return out


def _scalar(weight: LargestWeight | CarryingWeight | SuperWeight) -> ScalarWeight:
    return ScalarWeight(weight.module, weight.row, weight.column)


def verdict(delta_value: float) -> str:
    return "causal" if delta_value >= CAUSAL_DELTA else "not causal"


def top_weights(slices, k: int = 3) -> list[WeightSlice]:
    out = []
    for s in slices:
        v = s.values.detach().float().reshape(-1)
        idx = v.abs().topk(min(k, v.numel())).indices
        out.append(WeightSlice(slice=s.name, top=tuple((int(i), float(v[i])) for i in idx)))
    return out


def _deltas(study: Study, runs: dict, clean: float) -> dict:
    """{label: Delta}, each run a context manager factory that applies one lesion."""
    out = {}
    for label, make in runs.items():
        with make():
            out[label] = delta(mean_nll(study.lm.model, study.input_ids).item(), clean)
    return out


def resample_values(study: Study, acts_other: dict, neurons: Sequence[Neuron], seed: int) -> dict:
    gen = noise_generator(seed)
    t = study.input_ids.shape[1]
    out = {}
    for n in neurons:
        pool = acts_other[n.module][:, n.channel]
        out[n] = pool[torch.randint(len(pool), (t,), generator=gen)]
    return out


def norm_layers(model: torch.nn.Module) -> list[str]:
    """Names of the norm layers in forward order (block norms, per-head q/k norms, final norm)."""
    return [n for n, m in model.named_modules()
            if next(m.children(), None) is None and architectures.kind_of(n, m) in ("ln", "norm")]


def forward_order(model: torch.nn.Module, input_ids: torch.Tensor) -> list[str]:
    """Leaf modules in the order their forwards finish (registration order is not forward
    order: Llama registers ``input_layernorm`` after ``mlp``)."""
    order: list[str] = []
    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    with hooked(model, {n: (lambda out, n=n: order.append(n)) for n in leaves}), torch.inference_mode():
        model(input_ids=input_ids)
    return order


def following_norm(model: torch.nn.Module, module: str, order: Sequence[str]) -> str | None:
    """The first residual-stream norm to run after ``module``: for a Llama ``down_proj`` the next
    block's ``input_layernorm`` (the final norm after the last block); for Gemma's sandwich
    layout the ``post_feedforward_layernorm`` that reads it directly."""
    later = order[order.index(module) + 1:]
    return next((n for n in later if architectures.kind_of(n, model.get_submodule(n)) == "ln"), None)


def writer_of(model: torch.nn.Module, index: SiteIndex, neuron: Neuron, order: Sequence[str]) -> str | None:
    """The module whose output is added to the residual stream next after ``neuron``: its own
    module for a ``down``/``o`` neuron, else the first residual writer after it in forward
    order (its block's ``down`` for gate/up/act, ``o`` for q/k/v and the q/k norms); None
    after the last one."""
    if index.site(neuron).kind in RESIDUAL_WRITERS:
        return neuron.module
    later = order[order.index(neuron.module) + 1:]
    return next((n for n in later if n in index.by_name and index.by_name[n].kind in RESIDUAL_WRITERS), None)


def residual_writes(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                    neurons: Sequence[Neuron], order: Sequence[str],
                    acts: dict[str, torch.Tensor] | None = None) -> list[ResidualWrite | None]:
    """For each neuron, the residual-stream channel that carries most of its effect.

    Defined by masking, the same way for every kind: mask the neuron and compare the output of
    its next residual writer (:func:`writer_of`) with the clean one; the channel (and
    position) with the largest |change| is the one it writes into. For a ``down``/``o``
    neuron that is its own channel; for a gate/up neuron, mostly the ``down`` row whose input
    column has the largest |w|; for q/k it depends on the attention pattern, which no single
    weight shows. One batch row per neuron (row 0 clean), ``SCORING_ROWS`` at a time. None
    where nothing changes (a dead neuron, or no writer after it).

    With the clean activations ``acts`` (:func:`lesion.stage1.clean_activations`), a neuron
    that is its own writer costs no forward: masking it changes only its own channel, by its
    own activation.
    """
    writers = [writer_of(model, index, n, order) for n in neurons]
    changes: dict[int, torch.Tensor] = {}  # neuron's place -> |change| of its writer's output, (T, C)
    masked = [i for i, (n, w) in enumerate(zip(neurons, writers))
              if w and not (acts is not None and w == n.module and n.module in acts)]
    for i, (n, w) in enumerate(zip(neurons, writers)):
        if w and i not in masked:
            change = torch.zeros_like(acts[w])
            change[:, n.channel] = acts[w][:, n.channel].abs()
            changes[i] = change
    for start in range(0, len(masked), SCORING_ROWS):
        chunk = masked[start:start + SCORING_ROWS]
        outputs = _masked_writer_outputs(model, input_ids, index, [neurons[i] for i in chunk],
                                         [writers[i] for i in chunk])
        for row, i in enumerate(chunk, 1):
            changes[i] = (outputs[writers[i]][row] - outputs[writers[i]][0]).abs()
    out: list[ResidualWrite | None] = []
    for i, (neuron, writer) in enumerate(zip(neurons, writers)):
        change = changes.get(i)
        if change is None or not float(change.max()) > 0:
            out.append(None)
            continue
        position, channel = divmod(int(change.argmax()), change.shape[1])
        out.append(ResidualWrite(neuron=str(Neuron(writer, channel)), writer=writer, channel=channel,
                                 position=position, largest_change=float(change.max()),
                                 how=OWN_OUTPUT if writer == neuron.module else
                                 f"largest change of {writer}'s output when the neuron is masked"))
    return out


def _masked_writer_outputs(model, input_ids, index, neurons, writers) -> dict[str, torch.Tensor]:
    """Each writer's output, (rows, T, C) float32: row 0 clean, row i with ``neurons[i - 1]`` masked."""
    outputs: dict[str, torch.Tensor] = {}
    t = input_ids.shape[1]
    record = {w: (lambda out, w=w: outputs.__setitem__(w, index.by_name[w].channels(out, t).float()))
              for w in set(writers)}
    sets = [[]] + [[n] for n in neurons]
    with mask_neurons(model, index, sets), hooked(model, record), torch.inference_mode():
        model.base_model(input_ids=input_ids.expand(len(sets), -1))
    return outputs


def lesion_tokens(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                  neurons: Sequence[Neuron], clean: float) -> TokenLesion:
    """Delta of masking ``neurons`` with the per-token view a bare Delta hides: how many token
    losses are non-finite, Delta over the finite ones, the first module (in forward order)
    whose output is non-finite, and the largest finite |output| of any module of each block,
    which shows how a value grows towards an overflow."""
    blocks = architectures.block_prefix(model)
    first_nonfinite: list[str] = []
    largest: dict[str, torch.Tensor] = {}

    def watch(name):
        def check(output):
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            finite = torch.isfinite(output)
            if not first_nonfinite and not bool(finite.all()):
                first_nonfinite.append(name)
            largest[name] = output.abs().where(finite, 0).max().double().cpu()
        return check

    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    with mask_neurons(model, index, list(neurons)), hooked(model, {n: watch(n) for n in leaves}), \
            torch.inference_mode():
        nll = token_nll(model, input_ids)[0].double()
    by_layer: dict[int, float] = {}
    for name, value in largest.items():
        if name.startswith(blocks + "."):
            layer = architectures.layer_of(name, blocks)
            by_layer[layer] = max(by_layer.get(layer, 0.0), float(value))
    finite = torch.isfinite(nll)
    return TokenLesion(delta=delta(float(nll.mean()), clean), tokens=int(nll.numel()),
                       nonfinite_tokens=int((~finite).sum()),
                       delta_finite_tokens=delta(float(nll[finite].mean()), clean) if bool(finite.any()) else None,
                       first_nonfinite_module=first_nonfinite[0] if first_nonfinite else None,
                       largest_finite_abs_output=max(map(float, largest.values()), default=0.0),
                       largest_finite_abs_output_by_layer=tuple(by_layer[layer] for layer in sorted(by_layer)))


@contextlib.contextmanager
def frozen_norms(model: torch.nn.Module, input_ids: torch.Tensor, names: Sequence[str] | None = None):
    """The norm layers ``names`` (default: all) reuse the scale statistic of the clean run
    (RMS, or std for LayerNorm): out = (x - mean) / stat_clean * weight (+ bias). The clean
    statistics are recorded on entry, on ``input_ids``, so enter it before any lesion and run
    that same text inside (any number of batch rows); another length is refused."""
    norms = {n: model.get_submodule(n) for n in (norm_layers(model) if names is None else names)}

    def stat(module, x):
        # With the module's own epsilon, so that output * stat_masked / stat_clean is exact.
        x, eps = x.float(), getattr(module, "variance_epsilon", getattr(module, "eps", 0.0))
        if isinstance(module, torch.nn.LayerNorm):
            return (x.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt()
        return (x.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()

    clean: dict[str, list[torch.Tensor]] = {}
    record = {n: (lambda m, i, o, n=n: clean.setdefault(n, []).append(stat(m, i[0]))) for n in norms}
    with hooked(model, record, raw=True), torch.inference_mode():
        model(input_ids=input_ids)
    shared = [n for n, stats in clean.items() if len(stats) > 1]
    if shared:
        raise LesionError(f"cannot freeze {', '.join(shared)}: a norm that runs more than once per forward "
                          "has no single clean statistic")

    def rescale(name):
        clean_stat = clean[name][0]

        # The module already divided by the masked run's statistic: multiplying by
        # stat_masked / stat_clean swaps it for the clean one, for any norm flavour
        # (Gemma's x * (1 + weight) included). In float32: a ratio cast to float16 overflows early.
        def hook(module, inputs, output):
            masked_stat = stat(module, inputs[0])
            if masked_stat.shape[1:] != clean_stat.shape[1:]:
                raise LesionError(f"{name}: frozen on a text of shape {tuple(clean_stat.shape)}, run on "
                                  f"{tuple(masked_stat.shape)}: freeze the norms on the text you run")
            ratio = masked_stat / clean_stat
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                return ((output.float() - bias.float()) * ratio + bias.float()).to(output.dtype)
            return (output.float() * ratio).to(output.dtype)
        return hook

    with hooked(model, {n: rescale(n) for n in norms}, raw=True):
        yield


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
        self.neurons: list[NeuronProfile] = []
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
            self.neurons.append(NeuronProfile(
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
            stopped=Stopped(run.stopped), critical_size=len(self.critical), neurons_tested=len(self.neurons),
            seconds=run.seconds)


def _tested(weight, d: float):
    """``weight`` (a LargestWeight, CarryingWeight or SuperWeight) with the Delta of zeroing it."""
    return dataclasses.replace(weight, delta_zeroed=d, causal=d >= CAUSAL_DELTA)


OWN_OUTPUT = "its own output"  # how a down/o neuron writes the residual stream
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
