"""Noise ranking against the baselines: Delta when masking the top-n of each ranking.

All levels of one ranking are evaluated in batched forwards (one mask per batch row).
Random is averaged over several seeds (mean and standard deviation). Delta is not
monotone in n, so each ranker's fall-backs (a level whose Delta is below the level
before) are reported rather than assumed away.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

from ..masking.ablation import baseline_nll, set_deltas
from ..runtime.anytime import Anytime
from ..errors import ParameterError
from ..runtime.options import GIB, available_memory, check_fits, check_whole_number
from ..masking.metrics import perplexity
from .rankers import check_ranker
from ..results.compare import Comparison, LevelDelta
from .study import Study


# What one masked row of n neurons costs while its set is listed (the caller's list and the
# scorer's copy: a pointer per neuron and a list header each), and what a random run keeps (its
# Delta at every level, as Python floats in a list).
POINTER, LIST = 8, 56
FLOAT = 24 + POINTER


def prefix_sets_bytes(sizes: Sequence[int]) -> int:
    """Memory of the neuron lists of masked rows of the given sizes (the top-n of a ranking each)."""
    return 2 * sum(POINTER * n + LIST for n in sizes)


def check_rows_fit(parameter: str, sizes: Sequence[int]) -> None:
    """Refuse (on ``parameter``) masked rows of these sizes whose neuron lists cannot fit in host
    memory, naming the largest size up to which the rows would fit."""
    available = available_memory()
    need = prefix_sets_bytes(sizes)
    if available is None or need <= available:
        return
    ordered, fits = sorted(sizes), 0
    while fits < len(ordered) and prefix_sets_bytes(ordered[:fits + 1]) <= available:
        fits += 1
    largest = f"the rows up to n={ordered[fits - 1]:,} fit" if fits else "not even the smallest fits"
    raise ParameterError(parameter, f"asks for {len(sizes):,} masked rows of {sum(sizes):,} neurons in all, about "
                                    f"{need / GIB:.3g} GiB of neuron lists, but {available / GIB:.3g} GiB is "
                                    f"available: ask for fewer or smaller rows ({largest})")


def level_deltas(study: Study, neurons: Sequence, levels: Sequence[int], clean: float,
                 parameter: str = "levels") -> list[float]:
    """Delta of the top-n of ``neurons`` for each n of ``levels``; levels whose rows cannot fit in
    memory are refused on ``parameter`` first."""
    sizes = [min(n, len(neurons)) for n in levels]
    check_rows_fit(parameter, sizes)
    return set_deltas(study.lm.model, study.input_ids, study.index, [list(neurons[:n]) for n in sizes], clean)


def compare_rankers(study: Study, rankers: Sequence[str] = ("noise", "random", "activation", "gradient"),
                    levels: Sequence[int] = (1, 10, 100, 1000), *, random_runs: int = 10, seed: int = 42,
                    progress: bool = True, time_budget: float | None = None, **noise_options) -> Comparison:
    """Delta of each ranker's top-n, for each n in ``levels``. Each ranker (random: all its
    seeds) is a step; ``time_budget`` (seconds) or Ctrl-C stops between steps and the
    result holds the rankers that finished (``stopped``)."""
    rankers = [check_ranker(r, "rankers") for r in rankers]
    if not rankers:
        raise ParameterError("rankers", "is empty: name at least one, e.g. noise,random")
    if not levels or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in levels):
        raise ParameterError("levels", f"must be whole numbers >= 1, e.g. 1,10,100 (got {list(levels)!r})")
    check_whole_number("random_runs", random_runs, 1)
    levels = sorted(set(levels))
    check_rows_fit("levels", [min(n, study.index.total) for n in levels])  # before any ranking runs
    if "random" in rankers:  # every run's Delta at every level is kept for the mean and spread
        check_fits("random_runs", random_runs, LIST + POINTER + FLOAT * len(levels),
                   what=f"the Delta of every run at {len(levels)} level(s)")
    if isinstance(noise_options.get("alpha"), int) and not isinstance(noise_options["alpha"], bool):
        noise_options["alpha"] = float(noise_options["alpha"])  # recorded as --alpha records it
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    rows, fallbacks = [], {}
    run = Anytime(len(rankers), "compare", time_budget=time_budget, progress=progress, unit="ranker")
    with run:
        for ranker in rankers:
            seeds = range(seed, seed + random_runs) if ranker == "random" else [seed]
            per_seed = []
            for s in seeds:
                ranking = study.rank(ranker, keep=max(levels), seed=s, progress=progress,
                                     **(noise_options if ranker == "noise" else {}))
                per_seed.append(level_deltas(study, ranking.neurons, levels, clean))
            rows += _level_rows(ranker, levels, per_seed, clean)
            means = [r.delta for r in rows[-len(levels):]]
            fallbacks[ranker] = [n for n, prev, cur in zip(levels[1:], means, means[1:]) if cur < prev]
            run.step()
    run.check_something_finished()  # an interrupt before the first ranker finished: no empty table
    settings = study.settings(rankers=list(rankers), random_runs=random_runs, seed=seed, **noise_options)
    return Comparison(study.lm.name, perplexity(clean), tuple(levels), tuple(rows), fallbacks, settings,
                      stopped=run.stopped, seconds=round(run.seconds, 1))


def _level_rows(ranker: str, levels: Sequence[int], per_seed: list[list[float]], clean: float) -> list[LevelDelta]:
    rows = []
    for i, n in enumerate(levels):
        values = [run[i] for run in per_seed]
        mean = statistics.fmean(values)
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        rows.append(LevelDelta(ranker, n, mean, std, perplexity(clean + mean * math.log(10)), len(values)))
    return rows
