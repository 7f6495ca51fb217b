"""Sensitivity of the critical set to alpha, K and the noise seed: n*, Delta and overlap with
the reference set (alpha, K and seed as given)."""
from __future__ import annotations

from typing import Sequence

import dataclasses

from ..runtime.anytime import Anytime
from ..results.analysis import SweepData, SweepPoint, SweepRow
from ..method.study import Study


def jaccard(a, b) -> float:
    a, b = set(map(str, a)), set(map(str, b))
    return len(a & b) / len(a | b) if a | b else 1.0


def sensitivity_sweep(study: Study, alphas: Sequence[float] = (1, 3, 5, 7, 10),
                      samples: Sequence[int] = (25, 50, 75, 100, 125), seeds: Sequence[int] = (), *,
                      ref_alpha: float = 5.0, ref_samples: int = 100, seed: int = 42, epsilon: float = 1.0,
                      stage2: str = "linear", progress: bool = True, time_budget: float | None = None,
                      **options) -> SweepData:
    """Each grid varies one of alpha, K and seed and holds the others at the reference. Another
    seed at the reference alpha and K says how much of the set is the noise draw's.
    ``time_budget`` (seconds) or Ctrl-C stops between points; ``stopped`` says why."""
    def point(alpha: float, k: int, s: int) -> SweepPoint:
        _, critical = study.scan(alpha=alpha, samples=k, seed=s, epsilon=epsilon, stage2=stage2, progress=progress,
                                 **options)
        return SweepPoint(alpha=alpha, samples=k, seed=s, n_star=len(critical.neurons) if critical.reached else None,
                          delta=critical.delta, neurons=tuple(str(n) for n in critical.neurons))

    grid = [("alpha", a, ref_samples, seed) for a in alphas] + \
        [("samples", ref_alpha, k, seed) for k in samples] + [("seed", ref_alpha, ref_samples, s) for s in seeds]
    reference: SweepPoint | None = None
    rows: list[SweepRow] = []
    # Each point is a scan: a budget or Ctrl-C keeps the points that finished.
    run = Anytime(1 + len(grid), "sweep", time_budget=time_budget, progress=progress, unit="point")
    with run:
        reference = point(ref_alpha, ref_samples, seed)
        run.step()
        for varied, alpha, k, s in grid:
            rows.append(SweepRow(**_fields(point(alpha, k, s)), varied=varied))
            run.step()
    if reference is not None:
        rows = [dataclasses.replace(row, jaccard_to_reference=jaccard(row.neurons, reference.neurons)) for row in rows]
    return SweepData(reference=reference, rows=tuple(rows), epsilon=epsilon, stopped=run.stopped)


def _fields(point: SweepPoint) -> dict:
    return {f.name: getattr(point, f.name) for f in dataclasses.fields(SweepPoint)}
