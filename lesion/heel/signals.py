"""Where to look for a heel: signals that each score every neuron, and the candidate pool.

Each signal gives one score per neuron of a :class:`SiteIndex` (flat numbering, higher =
more suspect). The pool :func:`candidate_pool` hands to the screen is the union of every
signal's top-m on every text, de-duplicated, in the order the signals were asked for.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import LesionError, ParameterError
from ..neurons import Neuron, SiteIndex
from ..options import SIGNALS
from ..stage1 import activation_gradients, clean_activations, rank_by_activation


def parse_signals(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIGNALS]
    if unknown or not names:
        raise ParameterError("signals", f"names unknown signal(s) {', '.join(unknown) or '(none)'}: use a "
                                        f"comma-separated list of {', '.join(SIGNALS)}")
    return list(dict.fromkeys(names))


def massive_scores(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                   acts: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    acts = clean_activations(model, input_ids, index) if acts is None else acts
    parts = []
    for site in index.sites:
        peak = acts[site.name].abs().max(dim=0).values
        parts.append(peak / acts[site.name].abs().median().clamp_min(1e-12))
    return torch.cat(parts)


def superweight_scores(model: torch.nn.Module, index: SiteIndex) -> torch.Tensor:
    """Only ``down`` rows score (> 0); every other neuron gets 0 and never enters the pool."""
    from ..weights import site_matrix
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
                  noise: Callable[[], torch.Tensor] | None = None,
                  acts: Callable[[], dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
    """(N,) float32 scores of one signal; ``noise`` computes the noise ranking (cached by the caller);
    ``acts`` returns the clean activations, so that activation and massive share one forward."""
    if name == "noise":
        if noise is None:
            raise LesionError("the noise signal needs a Stage 1 ranking")
        return noise().float().cpu()
    if name == "activation":
        clean = None if acts is None else acts()
        return rank_by_activation(model, input_ids, index, clean=clean).values.float().cpu()
    if name == "massive":
        return massive_scores(model, input_ids, index, None if acts is None else acts()).float().cpu()
    if name == "superweight":
        return superweight_scores(model, index).float()
    if name == "attribution":
        return attribution_scores(model, input_ids, index).float()
    raise ParameterError("signals", f"names an unknown signal {name!r}: use one of {', '.join(SIGNALS)}")


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
