"""How close is the greedy set to the true minimum?

``prune`` drops neurons from the greedy set while Delta stays >= epsilon, until no single
neuron can go (an irreducible set). ``exhaustive_minimum`` tries every subset of the top-m
candidates, smallest sizes first, and stops at the first size where one reaches epsilon:
the optimum within that pool. Both evaluate their candidate sets in batched forwards.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, islice
from math import comb

from ..masking.ablation import set_deltas
from ..runtime.anytime import Anytime, Stopped
from ..errors import LesionError, ParameterError
from ..masking.metrics import check_epsilon
from ..model.neurons import Neuron
from ..results import CriticalSet, Ranking
from ..results.minimal import MinimalSets
from ..method.study import Study
from .prune import make_irreducible, prune_best_drop
from .scorer import SetScorer


def _deltas(study: Study, sets: list[list[Neuron]], clean: float) -> list[float]:
    return set_deltas(study.lm.model, study.input_ids, study.index, sets, clean, max_rows=64)


def prune(study: Study, neurons: Sequence[Neuron], epsilon: float, score=None) -> tuple[list[Neuron], float, int]:
    """Greedy backward elimination, best drop first (``lesion search --prune best-drop``): the
    irreducible set, its Delta and the sets evaluated (by ``score``, a heel.SetScorer, or a new one)."""
    score = _scorer(study) if score is None else score
    current = make_irreducible(score, prune_best_drop(score, neurons, epsilon), epsilon)
    return current, score([current])[0], score.rows


def _scorer(study: Study):
    return SetScorer.for_model(study.lm.model, study.index, [study.input_ids], dtype=study.lm.dtype,
                               max_rows=2 ** 62)


def exhaustive_minimum(study: Study, pool: Sequence[Neuron], epsilon: float, clean: float, max_size: int,
                       batch: int = 64, progress: bool = True
                       ) -> tuple[list[Neuron] | None, float | None, int, int]:
    """The smallest subset of ``pool`` (up to ``max_size``) reaching epsilon, its Delta, the sets
    evaluated and the forwards used. Among several of the smallest size the highest Delta wins,
    but only within the batch that first holds one: the search stops there."""
    total = sum(comb(len(pool), s) for s in range(1, max_size + 1))
    found = _Search()
    with Anytime(total, "exhaustive search", progress=progress, unit="set") as run:
        found.run(study, pool, epsilon, clean, max_size, batch, run)
    return found.best, found.best_delta, found.rows, found.forwards


class _Search:
    """The exhaustive search's state, kept when a budget or Ctrl-C stops it between batches."""

    def __init__(self):
        self.best: list[Neuron] | None = None
        self.best_delta: float | None = None
        self.rows = self.forwards = self.searched_size = 0

    def run(self, study, pool, epsilon, clean, max_size, batch, run: Anytime) -> None:
        for size in range(1, max_size + 1):
            subsets = combinations(range(len(pool)), size)
            while chunk := list(islice(subsets, batch)):
                sets = [[pool[i] for i in c] for c in chunk]
                deltas = _deltas(study, sets, clean)
                self.rows += len(sets)
                self.forwards += 1
                hits = [i for i, d in enumerate(deltas) if d >= epsilon]
                if hits:
                    best = max(hits, key=lambda i: (deltas[i], -i))
                    self.best, self.best_delta, self.searched_size = sets[best], deltas[best], size
                    return
                run.step(len(sets))
            self.searched_size = size


MAX_POOL = 30  # 2^30 subsets is beyond any budget


def check_search_bounds(pool: int, max_size: int | None) -> None:
    if not 1 <= pool <= MAX_POOL:
        raise ParameterError("pool", f"must be 1..{MAX_POOL} (got {pool}): 2^{pool} subsets is beyond any budget")
    if max_size is not None and not 1 <= max_size <= pool:
        raise ParameterError("max_size", f"must be 1..{pool} (the pool size), got {max_size}")


def minimal_sets(study: Study, ranking: Sequence[Neuron], greedy: Sequence[Neuron], *, epsilon: float = 1.0,
                 pool: int = 20, max_size: int | None = None, progress: bool = True,
                 time_budget: float | None = None, max_rows: int | None = None) -> MinimalSets:
    """Greedy vs irreducible vs the optimum within the top ``pool``. ``time_budget`` (seconds),
    ``max_rows`` (sets evaluated, pruning included) or Ctrl-C stop the work between batches:
    the result keeps the irreducible set if pruning finished (else the greedy set) and says how
    far the exhaustive search got (``stopped``, ``searched_size``)."""
    if not greedy:
        raise LesionError("the critical set is empty (threshold not reached): nothing to prune")
    check_search_bounds(pool, max_size)
    score = _scorer(study)
    clean = score.clean[0]  # the baseline NLL, computed once for pruning and the exhaustive search
    greedy_delta = score([list(greedy)])[0]  # pruning starts from it: scored once
    irreducible, irreducible_delta = list(greedy), greedy_delta
    candidates = list(ranking[:pool])
    search = _Search()
    total = sum(comb(len(candidates), s) for s in range(1, (max_size or len(candidates)) + 1))
    run = Anytime(total, "exhaustive search", time_budget=time_budget, progress=progress, unit="set",
                  max_steps=max_rows)
    with run:
        irreducible, irreducible_delta, _ = prune(study, greedy, epsilon, score)
        run.step(score.rows)
        # The optimum is no larger than the irreducible set when the pool holds it; searching
        # sizes below that certifies (or beats) it.
        in_pool = set(irreducible) <= set(candidates)
        max_size = max_size or (len(irreducible) if in_pool else min(len(candidates), 4))
        search.run(study, candidates, epsilon, clean, max_size, 64, run)
    optimum = search.best
    optimal = None if not set(greedy) <= set(candidates) or run.stopped != Stopped.COMPLETE else \
        (optimum is not None and len(optimum) == len(greedy))
    return MinimalSets(tuple(map(str, greedy)), greedy_delta, tuple(map(str, irreducible)), irreducible_delta,
                       score.rows, None if optimum is None else tuple(map(str, optimum)), search.best_delta,
                       len(candidates), max_size or 0, search.rows, search.forwards, optimal,
                       study.settings(epsilon=epsilon, pool=pool), stopped=run.stopped,
                       searched_size=search.searched_size, seconds=round(run.seconds, 1))


def minimal_epsilon(epsilon: float | None, critical: CriticalSet | None) -> float:
    """``epsilon``, checked, or the one ``critical`` was found at when it is None."""
    if epsilon is None:
        if critical is None:
            raise ParameterError("epsilon", "is needed when no `critical` set is given")
        return critical.settings.epsilon_or_default
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise ParameterError("epsilon", f"must be a number (got {epsilon!r}): the paper uses 1")
    check_epsilon(epsilon)
    return float(epsilon)


def minimal_at(study: Study, ranking: Ranking, epsilon: float | None = None, *, critical: CriticalSet | None = None,
               pool: int = 20, max_size: int | None = None, progress: bool = True,
               time_budget: float | None = None, max_rows: int | None = None) -> MinimalSets:
    """``lesion minimal`` as one call: the greedy set at ``epsilon``, the irreducible set pruned
    from it and the optimum among the top ``pool`` of ``ranking`` (see :func:`minimal_sets`).

    The greedy set is ``critical``'s when it was found at this epsilon (``epsilon`` None: the one
    it was found at); at any other epsilon Stage 2 finds it again on ``ranking`` (a
    :class:`~lesion.errors.ParameterError` on ``epsilon`` when no prefix of the ranking reaches it).

        result = minimal_at(study, ranking, epsilon=2.0, pool=12)
        result.greedy, result.irreducible, result.optimum
    """
    epsilon = minimal_epsilon(epsilon, critical)
    check_search_bounds(pool, max_size)
    if critical is not None and critical.settings.epsilon_or_default == epsilon:
        greedy = list(critical.neurons)
    else:
        found = study.identify(ranking, epsilon=epsilon, progress=progress)
        if not found.reached:
            raise ParameterError("epsilon", f"{epsilon:g} is not reached by greedy masking of up to "
                                            f"{found.trajectory[-1].n} neurons (best Delta {found.delta:.2f}): "
                                            "use a lower one")
        greedy = list(found.neurons)
    return minimal_sets(study, ranking.neurons, greedy, epsilon=epsilon, pool=pool, max_size=max_size,
                        progress=progress, time_budget=time_budget, max_rows=max_rows)
