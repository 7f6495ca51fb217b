"""Where to look for a heel: signals that each score every neuron, and the candidate pool.

Each signal gives one score per neuron of a :class:`SiteIndex` (flat numbering, higher =
more suspect); the signals are registered, with Stage 1's rankers, in :mod:`lesion.method.scorers`.
The pool :func:`candidate_pool` hands to the screen is the union of every signal's top-m on
every text, de-duplicated, in the order the signals were asked for.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import LesionError
from ..model.neurons import Neuron, SiteIndex
from ..method.scorers import SCORERS, check_signals
from ..method.rankers import activation_gradients, clean_activations

__all__ = ["attribution_scores", "candidate_pool", "check_signals", "massive_scores", "portfolio_pools",
           "signal_scores", "superweight_scores", "top_neurons"]


def massive_scores(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                   clean: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    acts = clean_activations(model, input_ids, index) if clean is None else clean
    parts = []
    for site in index.sites:
        peak = acts[site.name].abs().max(dim=0).values
        parts.append(peak / acts[site.name].abs().median().clamp_min(1e-12))
    return torch.cat(parts)


def superweight_scores(model: torch.nn.Module, input_ids: torch.Tensor | None, index: SiteIndex) -> torch.Tensor:
    """Only ``down`` rows score (> 0); every other neuron gets 0 and never enters the pool."""
    from ..model.weights import site_matrix
    parts = []
    for site in index.sites:
        w = site_matrix(model, site.name) if site.kind == "down" else None
        if w is None:
            parts.append(torch.zeros(site.width))
            continue
        w = w.detach().float().abs()  # (out, in)
        parts.append(w.max(dim=1).values.cpu() / w.median().clamp_min(1e-12).cpu())
    return torch.cat(parts)


def attribution_scores(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex) -> torch.Tensor:
    """One forward and one backward: zeroing neuron i moves the loss by about -sum_t a_t g_t."""
    pairs = activation_gradients(model, input_ids, index)
    return torch.cat([(pairs[s.name][0] * pairs[s.name][1]).sum(dim=0).abs().cpu() for s in index.sites])


def signal_scores(name: str, model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                  cached: Callable[[str], torch.Tensor] | None = None,
                  acts: Callable[[], dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
    """(N,) float32 scores of one registered signal. ``cached(name)`` computes a costly signal
    through Stage 1's cache (the caller's); ``acts`` returns the clean activations, so that the
    signals that read them share one forward."""
    scorer = SCORERS[check_signals([name])[0]]
    if scorer.cached:
        if cached is None:
            raise LesionError(f"the {name} signal is computed through Stage 1's cache: pass `cached`")
        return cached(name).float().cpu()
    options = {"clean": acts()} if scorer.reads_activations and acts is not None else {}
    scores = scorer.fn(model, input_ids, index, **options)
    values = scores if isinstance(scores, torch.Tensor) else scores.values  # a signal's tensor, a ranker's Scores
    return values.float().cpu()


def top_neurons(index: SiteIndex, scores: torch.Tensor, m: int) -> list[Neuron]:
    """The m best-scoring neurons with a finite score > 0, ties broken by site order."""
    scores = torch.nan_to_num(scores.float(), nan=0.0, posinf=float(torch.finfo(torch.float32).max))
    order = torch.sort(scores, descending=True, stable=True).indices[:m]
    order = order[scores[order] > 0]
    return index.neurons(order.tolist())


def candidate_pool(per_signal: dict[str, Sequence[Sequence[Neuron]]]) -> tuple[list[Neuron], dict[str, int]]:
    """Union of each signal's top lists (one per text), de-duplicated, interleaved by rank (every
    list's first neuron, then every list's second, ...) so that a screen that stops early has
    seen every signal's best; and how many neurons each signal brought that no other had."""
    lists = [(name, list(neurons)) for name, per_text in per_signal.items() for neurons in per_text]
    pool: dict[Neuron, str] = {}
    for rank in range(max((len(n) for _, n in lists), default=0)):
        for name, neurons in lists:
            if rank < len(neurons):
                pool.setdefault(neurons[rank], name)
    brought = {name: sum(1 for who in pool.values() if who == name) for name in per_signal}
    only = {name: len(set().union(*map(set, per_signal[name])) - set().union(
        *(set(n) for other, lists_ in per_signal.items() if other != name for n in lists_)))
        for name in per_signal}
    return list(pool), {"first_proposed_by": brought, "only_in": only}


# The portfolio's component groups: (kinds, why a search restricted to them can find what the whole misses).
PORTFOLIO_GROUPS = (
    (("gate", "up", "gate_up", "act"), "the MLP's intermediate neurons: no rotation of the residual stream moves them"),
    (("q", "k", "v", "qkv"), "attention's inputs"),
    (("o", "down"), "what writes the residual stream"),
)


def portfolio_pools(index: SiteIndex, scores: dict[str, Sequence[torch.Tensor]],
                    per_signal: int) -> list[tuple[str, list[Neuron]]]:
    """The pools of the portfolio's restricted searches: for each component group that holds some but
    not all of the index's sites, each signal's top ``per_signal`` among the group's neurons only, as
    :func:`candidate_pool` interleaves them. Named by the kinds they hold, so that ``--components NAME``
    searches that part alone (its pool is the one that search builds: every signal scores each neuron
    on its own). Costs no forward: the signals' scores of every neuron are filtered."""
    pools = []
    for kinds, _ in PORTFOLIO_GROUPS:
        held = [i for i, site in enumerate(index.sites) if site.kind in kinds]
        if not held or len(held) == len(index.sites):
            continue
        inside = torch.zeros(index.total, dtype=torch.bool)
        for i in held:
            inside[int(index.offsets[i]):int(index.offsets[i + 1])] = True
        lists = {name: [top_neurons(index, values.where(inside, 0.0), per_signal) for values in per_text]
                 for name, per_text in scores.items()}
        name = ",".join(k for k in kinds if any(index.sites[i].kind == k for i in held))
        pools.append((name, candidate_pool(lists)[0]))
    return pools
