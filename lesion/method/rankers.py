"""Rankers: every way of ordering neurons by importance, behind one interface.

A ranker is ``fn(model, input_ids, index, *, seed, **options) -> Scores``: one score per
neuron of ``index`` (flat numbering), higher = more important. :func:`rank` turns the
scores into a :class:`~lesion.results.Ranking`. The rankers are registered, with the heel
search's signals, in :mod:`lesion.method.scorers`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from tqdm.auto import tqdm

from ..runtime import distributed
from ..model import experts
from ..runtime.anytime import forget_interrupt, raise_if_interrupted
from ..runtime.batching import split_on_oom
from ..errors import ParameterError
from ..masking.masks import hooked
from ..model.neurons import SiteIndex
from ..runtime.options import MAX_SAMPLES, check_seed, check_whole_number
from ..results import Ranking, Settings
from .scorers import SCORERS, check_ranker


@dataclass(frozen=True)
class Scores:
    values: torch.Tensor  # (N,) float32, one per neuron of the index
    positions: torch.Tensor | None = None  # (N,) long, token position of each neuron's score
    adaptive: dict | None = None  # --samples auto: K used, confidence, how much of the top is settled


# Adaptive K (``samples="auto"``) looks at the ranking every SETTLE_CHECK_EVERY samples, so the
# K it stops at does not depend on the batch size; the first look needs that many samples for
# a variance estimate worth the name.
SETTLE_CHECK_EVERY = 10
# Noise this much larger than the paper's 5 says nothing about the text, and squared in a norm it
# leaves float32 (3.4e38) from about 1e19: the bound is far below that and far above any study.
MAX_ALPHA = 1e6
CONFIDENCE = 0.95
# How much of the ranking must settle: its head, the neurons scoring at least 1/HEAD_RATIO of
# the top score. Critical neurons are outliers of the ranking (massive activations): every
# critical set we have measured lies in this head (SmolLM2: 1 neuron of a head of 3; Gemma 3
# 270M: 109 of about 200). Stage 2 records whether its answer stayed inside the settled top.
HEAD_RATIO = 10.0


def _reduce(per_position: torch.Tensor, reduce: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(T, C) -> per-channel score; ``max`` is the authors' order (a channel ranks as its best position)."""
    if reduce == "max":
        values, positions = per_position.max(dim=0)
        return values, positions
    if reduce == "mean":
        return per_position.mean(dim=0), None
    raise ParameterError("reduce", f"must be max or mean (got {reduce!r})")


def _collect(index: SiteIndex, per_site: dict[str, torch.Tensor], reduce: str) -> Scores:
    values, positions = [], []
    for site in index.sites:
        v, p = _reduce(per_site[site.name], reduce)
        values.append(v)
        positions.append(p)
    pos = None if positions[0] is None else torch.cat(positions)
    return Scores(torch.cat(values), pos)


def noise_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(check_seed(seed))


def settle_z(entries: int, confidence: float) -> float:
    """One-sided normal quantile that makes ``entries`` bounds hold together with ``confidence``
    (Bonferroni: each bound may fail with probability (1 - confidence) / entries)."""
    return -NormalDist().inv_cdf((1.0 - confidence) / entries)


def settled_top(index: SiteIndex, sums: dict[str, torch.Tensor], squares: dict[str, torch.Tensor],
                samples: int, reduce: str, z: float) -> tuple[int, int]:
    """(settled, head). The top i of the ranking is settled when each of its neurons' lower
    bound lies above the upper bound of every neuron ranked below it: then, at the stated
    confidence, the expected scores (K -> infinity) order the top i as the estimates do.

    Each (position, channel) entry is a mean of ``samples`` i.i.d. |A_clean - A_noisy| with a
    normal-approximation interval mean +- z * sd / sqrt(samples). A channel's score is a max
    (or mean) over positions, so its bounds are the max (or mean) of its entries' bounds: if
    every entry's interval holds, so do these, which is why ``z`` covers all entries at once.
    ``head`` counts the neurons scoring at least 1/HEAD_RATIO of the top score.
    """
    lower, upper, score = [], [], []
    for site in index.sites:
        mean = sums[site.name] / samples  # (T, C)
        var = ((squares[site.name] - sums[site.name] * mean) / (samples - 1)).clamp_min(0.0)
        half = z * (var / samples).sqrt()
        if reduce == "max":
            best, at = mean.max(dim=0)
            score.append(best)
            lower.append((mean - half).gather(0, at.unsqueeze(0))[0])  # the max is >= this entry
            upper.append((mean + half).max(dim=0).values)
        else:
            score.append(mean.mean(dim=0))
            lower.append((mean - half).mean(dim=0))
            upper.append((mean + half).mean(dim=0))
    score = torch.cat(score)
    order = torch.sort(score, descending=True, stable=True).indices
    head = int((score >= score[order[0]] / HEAD_RATIO).sum())
    lower_sorted, upper_sorted = torch.cat(lower)[order], torch.cat(upper)[order]
    # below[i] = the highest upper bound among the neurons ranked after i
    below = upper_sorted.flip(0).cummax(0).values.flip(0).roll(-1)
    below[-1] = -math.inf
    separated = lower_sorted > below
    return int(separated.int().cumprod(0).sum()), head


def check_noise_options(samples: int | str = 100, alpha: float = 5.0, batch_size: int = 16, max_samples: int = 100,
                        settle_top: int | None = None, confidence: float = CONFIDENCE, seed: int = 42) -> None:
    """The noise ranking's options (see :func:`rank_by_noise`), checked without a model."""
    if samples != "auto" and (not isinstance(samples, int) or isinstance(samples, bool)):
        raise ParameterError("samples", f"must be a number or 'auto' (got {samples!r}): the paper uses 100")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (alpha > 0 and math.isfinite(alpha)):
        raise ParameterError("alpha", f"must be a finite number > 0 (got {alpha}): the paper uses 5")
    if alpha > MAX_ALPHA:
        raise ParameterError("alpha", f"must be at most {MAX_ALPHA:g} (got {alpha:g}): the noise would swamp the "
                                      "text and overflow float32; the paper uses 5")
    counts = [("batch_size", batch_size, 1, None)]
    if samples == "auto":  # the adaptive stop compares two sample counts at least
        counts += [("max_samples", max_samples, 2, MAX_SAMPLES),
                   ("settle_top", 1 if settle_top is None else settle_top, 1, None)]
    else:
        counts.append(("samples", samples, 1, MAX_SAMPLES))
    for name, value, least, most in counts:
        check_whole_number(name, value, least, most)
    check_seed(seed)
    if samples == "auto" and not 0 < confidence < 1:
        raise ParameterError("confidence", f"must be between 0 and 1, both excluded (got {confidence})")


def check_rank_options(*, samples: int | str = 100, alpha: float = 5.0, seed: int = 42, batch_size: int = 16,
                       max_samples: int | None = None, settle_top: int | None = None) -> int:
    """Stage 1's options as :meth:`lesion.Study.scores` takes them, checked without a model; returns
    the cap on samples (``max_samples`` caps ``samples="auto"`` only: given with a number, it would
    be ignored, so it is refused)."""
    if max_samples is not None and samples != "auto":
        raise ParameterError("max_samples", f"caps `samples` 'auto' only; with samples {samples!r} it would be "
                                            "ignored: drop it, or pass `samples` 'auto'")
    max_samples = 100 if max_samples is None else max_samples
    check_noise_options(samples, alpha, batch_size, max_samples, settle_top, CONFIDENCE, seed)
    return max_samples


def check_keep(keep: int) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ParameterError("keep", f"must be a whole number >= 1 (got {keep!r}): how many top neurons to keep")


def rank_by_noise(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 42,
                  alpha: float = 5.0, samples: int | str = 100, batch_size: int = 16, reduce: str = "max",
                  alpha_relative: bool = False, max_samples: int = 100, settle_top: int | None = None,
                  confidence: float = CONFIDENCE, progress: bool = True) -> Scores:
    """Stage 1: Imp = (1/K) sum_k |A_clean - A(embeddings + alpha * N(0, I))|, per neuron and position.

    Noise is drawn on the CPU one sample at a time from a seeded generator, so the scores
    do not depend on the batch size or the device. Sums are streamed: memory holds the
    clean activations and one accumulator, never K activation sets. The LM head is not
    run: only the decoder body is needed to see every neuron.

    ``samples="auto"`` streams sums of squares too and stops at the first multiple of
    SETTLE_CHECK_EVERY samples where the top ``settle_top`` neurons (default: the head, see
    HEAD_RATIO) are settled at ``confidence`` (see :func:`settled_top`), or at ``max_samples``.
    Its samples are the first K of the same seeded stream, so its scores equal those of
    ``samples=K`` (bit for bit when the batch size divides SETTLE_CHECK_EVERY, so that both
    sum the same batches), and the K it stops at does not depend on the batch size.
    """
    adaptive = samples == "auto"
    cap = max_samples if adaptive else samples
    check_noise_options(samples, alpha, batch_size, max_samples, settle_top, confidence, seed)
    checkpoints = list(range(SETTLE_CHECK_EVERY, cap, SETTLE_CHECK_EVERY)) + [cap] if adaptive else [cap]
    body, dtype = model.base_model, _dtype(model)
    with torch.inference_mode():
        clean_embeds = model.get_input_embeddings()(input_ids).float()  # (1, T, H)
        rms = clean_embeds.pow(2).mean().sqrt().item()
        scale = alpha * rms if alpha_relative else alpha
        check_resolution(alpha, alpha_relative, rms, dtype)
        check_stage1_memory(index, clean_embeds, min(batch_size, SETTLE_CHECK_EVERY if adaptive else cap), adaptive)
        clean: dict[str, torch.Tensor] = {}
        with hooked(model, _store(index, clean)):
            body(inputs_embeds=clean_embeds.to(dtype))
        sums = {name: torch.zeros_like(a) for name, a in clean.items()}
        squares = {name: torch.zeros_like(a) for name, a in clean.items()} if adaptive else None
        pending: dict[str, torch.Tensor] = {}
        z = settle_z(index.total * (input_ids.shape[1] + 1), confidence) if adaptive else math.nan

        def run_batch(noise: torch.Tensor) -> list[dict]:
            # Sums land in `pending` and are committed only after the whole forward, so a
            # batch that runs out of memory half-way can be retried in halves.
            pending.clear()
            body(inputs_embeds=(clean_embeds + scale * noise.to(clean_embeds.device)).to(dtype))
            return [dict(pending)]

        done, settled, wanted = 0, 0, settle_top
        forget_interrupt()
        world = distributed.current()  # under torchrun, each rank runs its share of each segment
        accumulate = _accumulate(index, clean, pending, with_squares=adaptive)
        routing: dict = {}
        routed = {s.name: _accumulate_routed(s, clean, pending, adaptive, routing) for s in index.sites
                  if experts.reads_routed(model, s.name)}
        with hooked(model, {n: fn for n, fn in accumulate.items() if n not in routed}), \
                experts.reading_routed(model, routed):
            gen = noise_generator(seed)
            bar = tqdm(total=cap, desc="stage 1: noise samples", disable=not progress or not world.is_main,
                       leave=False)
            for checkpoint in checkpoints:
                # batches end at checkpoints, whatever the batch size
                for noise in world.noise_batches(gen, clean_embeds.shape[1:], done, checkpoint, batch_size):
                    for part in split_on_oom(run_batch, noise):
                        for name, (total, total_sq) in part.items():
                            sums[name] += total
                            if squares is not None:
                                squares[name] += total_sq
                    bar.update(len(noise) * world.size)
                    raise_if_interrupted()
                done = checkpoint
                if adaptive:
                    settled, head = settled_top(index, world.sum_dict(sums), world.sum_dict(squares), done,
                                                reduce, z)
                    wanted = settle_top or head
                    if settled >= wanted:
                        break
            bar.close()
        sums = world.sum_dict(sums)  # all_reduce across ranks (the same dict in one process)
        for total in sums.values():
            total.div_(done)  # in place: a copy of every sum would cost more than the division
    scores = _collect(index, sums, reduce)  # outside inference mode: the scores are ordinary tensors
    check_scores(scores.values, "noise", str(dtype).removeprefix("torch."), alpha)  # before any cache keeps them
    if not adaptive:
        return scores
    return Scores(scores.values, scores.positions,
                  {"samples_used": done, "max_samples": cap, "confidence": confidence, "settle_top": wanted,
                   "settle_rule": "given" if settle_top else f"head: score >= top / {HEAD_RATIO:g}",
                   "settled_top": settled, "stopped": "settled" if settled >= wanted else "cap",
                   "check_every": SETTLE_CHECK_EVERY})


def resolution(dtype: torch.dtype) -> float:
    """The relative spacing of the numbers the noisy embeddings pass through: they are summed in
    float32 and then cast to the model's dtype, so the coarser of the two."""
    return max(torch.finfo(torch.float32).eps, torch.finfo(dtype).eps)


def check_resolution(alpha: float, alpha_relative: bool, rms: float, dtype: torch.dtype) -> None:
    """Refuse noise too small to change the embeddings: alpha * N(0, 1) added to values of typical
    magnitude ``rms`` (the embeddings' RMS) is lost in rounding when its scale is below the spacing
    of ``dtype``'s numbers at that magnitude, eps x RMS; the scores would then measure rounding, or
    be all zero and leave the ranking in module order."""
    eps = resolution(dtype)
    scale, floor = alpha * rms if alpha_relative else alpha, eps * rms
    if scale >= floor:
        return
    name = str(dtype).removeprefix("torch.")
    least = _round_up(eps if alpha_relative else floor)
    unit = " (relative: times the embeddings' RMS)" if alpha_relative else ""
    raise ParameterError("alpha", f"{alpha:g}{unit} gives noise below {name}'s resolution at these embeddings "
                                  f"(eps x RMS = {eps:.3g} x {rms:.3g} = {floor:.3g}): it would vanish in rounding; "
                                  f"use alpha >= {least:g} (the paper uses 5)")


def _round_up(x: float) -> float:
    """``x`` to three significant digits, rounded up (a bound the user copies must hold)."""
    shown = float(f"{x:.3g}")
    return shown if shown >= x else float(f"{x * 1.005:.3g}")  # half a unit of the third digit at most


def check_stage1_memory(index: SiteIndex, clean_embeds: torch.Tensor, rows: int, adaptive: bool) -> None:
    """Refuse a batch of noise samples that cannot fit where the model runs, before Stage 1
    allocates its state: per neuron and token, the clean activations, the running sums and a
    batch's pending sums (and sums of squares with their pending batch for ``samples="auto"``),
    and per batch row the noise, the noisy embeddings, one difference buffer per site width and
    the widest output of a forward, float32 each (a floor: a forward holds more)."""
    from ..runtime.options import check_fits
    tokens, hidden = clean_embeds.shape[1], clean_embeds.shape[2]
    widths = {s.width for s in index.sites}
    fixed = (5 if adaptive else 3) * tokens * index.total * 4
    per_row = 4 * tokens * (2 * hidden + sum(widths) + max(widths))
    check_fits("batch_size", rows, per_row, fixed=fixed, device=clean_embeds.device,
               what=f"Stage 1's state and {rows:,} noisy forward(s) of {tokens} tokens",
               hint="a shorter text or fewer `components`")


def check_scores(values: torch.Tensor, ranker: str, dtype: str | None = None, alpha: float | None = None) -> None:
    """Scores a ranking can be made from: finite, and not all zero (a ranking of ties would list
    the neurons in module order and call it an order of importance)."""
    finite = bool(torch.isfinite(values).all())
    if finite and not (values.numel() and not bool((values != 0).any())):
        return
    if not finite and dtype not in (None, "float32"):
        raise ParameterError("dtype", f"is too narrow for this model: the {ranker} ranker's scores overflow to "
                                      "non-finite values; use float32")
    if ranker == "noise":  # the noise's size is what the user can change
        given = "" if alpha is None else f"{alpha:g} "
        raise ParameterError("alpha", f"{given}gives non-finite noise scores even in float32: lower it (the paper "
                                      "uses 5)" if not finite else
                                      f"{given}gives all-zero noise scores: the noise changed no activation, so the "
                                      "ranking would be module order; raise it (the paper uses 5)")
    raise ParameterError("ranker", f"{ranker} gives non-finite scores even in float32 on this model: use another "
                                   "ranker" if not finite else
                                   f"{ranker} gives all-zero scores on this model, so the ranking would be module "
                                   "order: use another ranker")


def _dtype(model) -> torch.dtype:
    return model.get_input_embeddings().weight.dtype


def _store(index, clean):
    return {s.name: (lambda out, s=s: clean.__setitem__(s.name, s.channels(out)[0].float()))
            for s in index.sites}


class BatchBuffers:
    """Scratch tensors by shape for one batch size at a time: a batch of another size (the last,
    shorter batch, or the halves of a batch that ran out of memory) drops the others first, so a
    retry after an out-of-memory error does not also hold the failed batch's buffers."""

    def __init__(self):
        self.by_shape: dict[tuple, torch.Tensor] = {}

    def get(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        key = (tuple(shape), like.dtype, like.device)
        found = self.by_shape.get(key)
        if found is None:
            if any(other[0][0] != shape[0] for other in self.by_shape):
                self.by_shape.clear()
            found = self.by_shape[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return found


def _accumulate(index, clean, pending, with_squares: bool = False):
    # One (B, T, C) buffer per shape, shared by the sites of that shape and kept across batches:
    # a fresh buffer per hook costs more than the subtraction itself (the allocator hands back
    # untouched pages, each faulted in on first write). The subtraction promotes a narrower dtype
    # to float32 itself (the same values as .float() first, without its copy), and abs and square
    # run in place. Every op is the one it replaces, in the same order: the same bits.
    buffers = BatchBuffers()

    def add(out, site):
        ref = clean[site.name]
        noisy = site.channels(out, ref.shape[0])
        if torch.promote_types(noisy.dtype, ref.dtype) != ref.dtype:  # float64: to float32 first, as always
            noisy = noisy.float()
        change = torch.sub(noisy, ref, out=buffers.get(noisy.shape, ref)).abs_()  # (B, T, C)
        total = change.sum(dim=0)
        pending[site.name] = (total, change.square_().sum(dim=0) if with_squares else None)
    return {s.name: (lambda out, s=s: add(out, s)) for s in index.sites}


def _accumulate_routed(site, clean, pending, with_squares: bool, routing: dict):
    """The sums of :func:`_accumulate` for an expert's neuron, from its routed rows alone: at a token
    not routed to the expert the noisy activation is 0, so each such row adds |A_clean| (and A_clean^2):
    (rows of the batch at that position not routed) x |A_clean|, plus the routed rows' own terms.

    ``routing`` is shared by the readers of one Stage 1 run: an expert's gate, up, act and down see
    the same rows tensor, so its positions and unrouted counts are worked out once per expert."""
    constant: dict[str, torch.Tensor] = {}  # |A_clean| and A_clean^2, made once

    def add(values: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int]) -> None:
        ref = clean[site.name]  # (T, C)
        if not constant:
            constant.update(abs=ref.abs(), square=ref.square() if with_squares else None)
        if routing.get("rows") is not rows or routing.get("shape") != shape:
            batch, tokens = shape
            at = rows % tokens
            unrouted = (batch - torch.bincount(at, minlength=tokens)).to(ref.dtype).unsqueeze(1)  # (T, 1)
            routing.update(rows=rows, shape=shape, at=at, unrouted=unrouted)
        at, unrouted = routing["at"], routing["unrouted"]
        moved = ref.index_select(0, at).sub_(values.float())  # A_clean - A_noisy on the routed rows
        squares = None
        if with_squares:
            squares = (constant["square"] * unrouted).index_add_(0, at, moved.square())
        total = (constant["abs"] * unrouted).index_add_(0, at, moved.abs_())
        pending[site.name] = (total, squares)
    return add


def clean_activations(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex) -> dict[str, torch.Tensor]:
    """Every site's activations on the text, as (T, C) float32."""
    clean: dict[str, torch.Tensor] = {}
    with hooked(model, _store(index, clean)), torch.inference_mode():
        model.base_model(input_ids=input_ids)
    return clean


def rank_by_activation(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 0,
                       reduce: str = "max", progress: bool = False,
                       clean: dict[str, torch.Tensor] | None = None) -> Scores:
    """Baseline: |A| on the clean text (magnitude, not signed value). ``clean``: the text's
    activations when the caller already has them (no second forward)."""
    clean = clean_activations(model, input_ids, index) if clean is None else clean
    return _collect(index, {n: a.abs() for n, a in clean.items()}, reduce)


def activation_gradients(model: torch.nn.Module, input_ids: torch.Tensor,
                         index: SiteIndex) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each site's activation on the text and the gradient of the text's mean NLL wrt it, both
    (T, C) float32 (a zero gradient where the loss does not depend on the site).

    ``torch.autograd.grad`` on the activations only: no parameter ``.grad`` is touched.
    """
    outputs: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), hooked(model, {s.name: (lambda out, s=s: outputs.__setitem__(s.name, out))
                                             for s in index.sites}):
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:])
        grads = torch.autograd.grad(loss, [outputs[s.name] for s in index.sites], allow_unused=True)
    tokens = input_ids.shape[1]
    pairs = {}
    for site, grad in zip(index.sites, grads):
        activation = outputs[site.name].detach()
        grad = torch.zeros_like(activation) if grad is None else grad.detach()
        pairs[site.name] = (site.channels(activation, tokens)[0].float(), site.channels(grad, tokens)[0].float())
    return pairs


def rank_by_gradient(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 0,
                     reduce: str = "max", progress: bool = False) -> Scores:
    """Baseline: |dLoss/dA|, the gradient of the text's mean NLL wrt each neuron's activation."""
    pairs = activation_gradients(model, input_ids, index)
    return _collect(index, {name: grad.abs() for name, (_, grad) in pairs.items()}, reduce)


def rank_by_random(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 0,
                   progress: bool = False) -> Scores:
    """Baseline: a seeded uniform random order over exactly the neurons the other rankers score."""
    return Scores(torch.rand(index.total, generator=noise_generator(seed)))


def rank(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, ranker: str = "noise",
         keep: int = 5000, model_name: str = "", settings: Settings | None = None, **options) -> Ranking:
    """Run a ranker and keep its top ``keep`` neurons, ties broken by site order."""
    scores = SCORERS[check_ranker(ranker)].fn(model, input_ids, index, **options)
    return ranking_from_scores(index, scores, ranker, keep, model_name, settings or Settings())


def ranking_from_scores(index: SiteIndex, scores: Scores, ranker: str, keep: int, model_name: str,
                        settings: Settings) -> Ranking:
    values = scores.values.float().cpu()
    check_scores(values, ranker, settings.dtype, settings.alpha)
    order = torch.sort(values, descending=True, stable=True).indices[:keep]
    pos = None if scores.positions is None else tuple(scores.positions.cpu()[order].tolist())
    return Ranking(model=model_name, ranker=ranker, neurons=tuple(index.neurons(order.tolist())),
                   scores=tuple(values[order].tolist()), positions=pos, total_neurons=index.total,
                   settings=settings)
