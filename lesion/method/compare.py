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
from ..masking.metrics import perplexity
from .rankers import check_ranker
from ..results.compare import Comparison, LevelDelta
from .study import Study


def level_deltas(study: Study, neurons: Sequence, levels: Sequence[int], clean: float) -> list[float]:
    return set_deltas(study.lm.model, study.input_ids, study.index, [list(neurons[:n]) for n in levels], clean)


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
    if isinstance(random_runs, bool) or not isinstance(random_runs, int) or random_runs < 1:
        raise ParameterError("random_runs", f"must be a whole number >= 1 (got {random_runs!r})")
    levels = sorted(set(levels))
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    rows, fallbacks = [], {}
    run = Anytime(len(rankers), "compare", time_budget=time_budget, progress=progress, unit="ranker")
    with run:
        for ranker in rankers:
            seeds = [seed + i for i in range(random_runs)] if ranker == "random" else [seed]
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
