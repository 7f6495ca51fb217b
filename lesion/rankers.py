"""Rankers: every way of ordering neurons by importance, behind one interface.

A ranker is ``fn(model, input_ids, index, *, seed, **options) -> Scores``: one score per
neuron of ``index`` (flat numbering), higher = more important. :func:`rank` turns the
scores into a :class:`~lesion.results.Ranking`, and ``RANKERS`` maps ``--ranker`` names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .batching import split_on_oom
from .errors import LesionError
from .hooks import hooked
from .neurons import SiteIndex
from .results import Ranking


@dataclass(frozen=True)
class Scores:
    values: torch.Tensor  # (N,) float32, one per neuron of the index
    positions: torch.Tensor | None = None  # (N,) long, token position of each neuron's score


def _reduce(per_position: torch.Tensor, reduce: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(T, C) -> per-channel score; ``max`` is the authors' order (a channel ranks as its best position)."""
    if reduce == "max":
        values, positions = per_position.max(dim=0)
        return values, positions
    if reduce == "mean":
        return per_position.mean(dim=0), None
    raise LesionError(f"unknown reduction {reduce!r}: use max or mean")


def _collect(index: SiteIndex, per_site: dict[str, torch.Tensor], reduce: str) -> Scores:
    values, positions = [], []
    for site in index.sites:
        v, p = _reduce(per_site[site.name], reduce)
        values.append(v)
        positions.append(p)
    pos = None if positions[0] is None else torch.cat(positions)
    return Scores(torch.cat(values), pos)


def noise_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def rank_by_noise(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 42,
                  alpha: float = 5.0, samples: int = 100, batch_size: int = 16, reduce: str = "max",
                  alpha_relative: bool = False, progress: bool = True) -> Scores:
    """Stage 1: Imp = (1/K) sum_k |A_clean - A(embeddings + alpha * N(0, I))|, per neuron and position.

    Noise is drawn on the CPU one sample at a time from a seeded generator, so the scores
    do not depend on the batch size or the device. Sums are streamed: memory holds the
    clean activations and one accumulator, never K activation sets. The LM head is not
    run: only the decoder body is needed to see every neuron.
    """
    if alpha <= 0 or samples < 1 or batch_size < 1:
        raise LesionError("need alpha > 0, samples >= 1 and batch size >= 1: fix --alpha/--samples")
    body, dtype = model.base_model, _dtype(model)
    with torch.inference_mode():
        clean_embeds = model.get_input_embeddings()(input_ids).float()  # (1, T, H)
        scale = alpha * clean_embeds.pow(2).mean().sqrt().item() if alpha_relative else alpha
        clean: dict[str, torch.Tensor] = {}
        with hooked(model, _store(index, clean)):
            body(inputs_embeds=clean_embeds.to(dtype))
        sums = {name: torch.zeros_like(a) for name, a in clean.items()}
        pending: dict[str, torch.Tensor] = {}

        def run_batch(noise: torch.Tensor) -> list[dict]:
            # Sums land in `pending` and are committed only after the whole forward, so a
            # batch that runs out of memory half-way can be retried in halves.
            pending.clear()
            body(inputs_embeds=(clean_embeds + scale * noise.to(clean_embeds.device)).to(dtype))
            return [dict(pending)]

        with hooked(model, _accumulate(index, clean, pending)):
            gen = noise_generator(seed)
            bar = tqdm(total=samples, desc="stage 1: noise samples", disable=not progress, leave=False)
            for start in range(0, samples, batch_size):
                b = min(batch_size, samples - start)
                noise = torch.stack([torch.randn(clean_embeds.shape[1:], generator=gen) for _ in range(b)])
                for part in split_on_oom(run_batch, noise):
                    for name, value in part.items():
                        sums[name] += value
                bar.update(b)
            bar.close()
    return _collect(index, {n: s / samples for n, s in sums.items()}, reduce)


def _dtype(model) -> torch.dtype:
    return model.get_input_embeddings().weight.dtype


def _store(index, clean):
    return {s.name: (lambda out, s=s: clean.__setitem__(s.name, s.channels(out)[0].float()))
            for s in index.sites}


def _accumulate(index, clean, pending):
    def add(out, site):
        ref = clean[site.name]
        pending[site.name] = (site.channels(out, ref.shape[0]).float() - ref).abs().sum(dim=0)
    return {s.name: (lambda out, s=s: add(out, s)) for s in index.sites}


def clean_activations(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex) -> dict[str, torch.Tensor]:
    """Every site's activations on the text, as (T, C) float32."""
    clean: dict[str, torch.Tensor] = {}
    with hooked(model, _store(index, clean)), torch.inference_mode():
        model.base_model(input_ids=input_ids)
    return clean


def rank_by_activation(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 0,
                       reduce: str = "max", progress: bool = False) -> Scores:
    """Baseline: |A| on the clean text (magnitude, not signed value)."""
    clean = clean_activations(model, input_ids, index)
    return _collect(index, {n: a.abs() for n, a in clean.items()}, reduce)


def rank_by_gradient(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 0,
                     reduce: str = "max", progress: bool = False) -> Scores:
    """Baseline: |dLoss/dA|, the gradient of the text's mean NLL wrt each neuron's activation.

    ``torch.autograd.grad`` on the activations only: no parameter ``.grad`` is touched.
    """
    outputs: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), hooked(model, {s.name: (lambda out, s=s: outputs.__setitem__(s.name, out))
                                             for s in index.sites}):
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:])
        names = [s.name for s in index.sites]
        grads = torch.autograd.grad(loss, [outputs[n] for n in names], allow_unused=True)
    tokens = input_ids.shape[1]
    per_site = {}
    for site, grad in zip(index.sites, grads):
        grad = torch.zeros_like(outputs[site.name]) if grad is None else grad
        per_site[site.name] = site.channels(grad.detach(), tokens)[0].float().abs()
    return _collect(index, per_site, reduce)


def rank_by_random(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, *, seed: int = 0,
                   progress: bool = False) -> Scores:
    """Baseline: a seeded uniform random order over exactly the neurons the other rankers score."""
    return Scores(torch.rand(index.total, generator=noise_generator(seed)))


@dataclass(frozen=True)
class RankerSpec:
    """A ranker, registered once: its name, function, and the options that determine its scores."""
    name: str
    fn: Callable[..., Scores]
    options: tuple[str, ...]  # keyword options of ``fn`` (besides seed and progress), all in the cache key
    summary: str


RANKER_SPECS: dict[str, RankerSpec] = {spec.name: spec for spec in (
    RankerSpec("noise", rank_by_noise, ("alpha", "samples", "alpha_relative", "reduce", "batch_size"),
               "the paper's Stage 1: mean |A_clean - A_noisy| under embedding noise"),
    RankerSpec("activation", rank_by_activation, ("reduce",), "baseline: |A| on the clean text"),
    RankerSpec("gradient", rank_by_gradient, ("reduce",), "baseline: |dLoss/dA|"),
    RankerSpec("random", rank_by_random, (), "baseline: a seeded random order"),
)}
RANKERS: dict[str, Callable[..., Scores]] = {name: spec.fn for name, spec in RANKER_SPECS.items()}


def check_ranker(name: str) -> str:
    """``name`` if it is registered, else one line naming the closest registered ranker."""
    if name in RANKER_SPECS:
        return name
    import difflib
    close = difflib.get_close_matches(name, list(RANKER_SPECS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise LesionError(f"unknown ranker {name!r}: {hint}use one of {', '.join(RANKER_SPECS)}")


def rank(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex, ranker: str = "noise",
         keep: int = 5000, model_name: str = "", settings: dict | None = None, **options) -> Ranking:
    """Run a ranker and keep its top ``keep`` neurons, ties broken by site order."""
    scores = RANKER_SPECS[check_ranker(ranker)].fn(model, input_ids, index, **options)
    return ranking_from_scores(index, scores, ranker, keep, model_name, settings or {})


def ranking_from_scores(index: SiteIndex, scores: Scores, ranker: str, keep: int, model_name: str,
                        settings: dict) -> Ranking:
    values = scores.values.float().cpu()
    if not torch.isfinite(values).all():
        raise LesionError(f"the {ranker} ranker produced non-finite scores (the model overflows in this "
                          "dtype): use --dtype float32")
    order = torch.sort(values, descending=True, stable=True).indices[:keep]
    pos = None if scores.positions is None else tuple(scores.positions.cpu()[order].tolist())
    return Ranking(model=model_name, ranker=ranker, neurons=tuple(index.neurons(order.tolist())),
                   scores=tuple(values[order].tolist()), positions=pos, total_neurons=index.total,
                   settings=settings)
