"""Sensitivity of the critical set to alpha, K and the noise seed: n*, Delta and overlap with
the reference set (alpha, K and seed as given)."""
from __future__ import annotations

from typing import Sequence

from ..study import Study


def jaccard(a, b) -> float:
    a, b = set(map(str, a)), set(map(str, b))
    return len(a & b) / len(a | b) if a | b else 1.0


def sensitivity_sweep(study: Study, alphas: Sequence[float] = (1, 3, 5, 7, 10),
                      samples: Sequence[int] = (25, 50, 75, 100, 125), seeds: Sequence[int] = (), *,
                      ref_alpha: float = 5.0, ref_samples: int = 100, seed: int = 42, epsilon: float = 1.0,
                      stage2: str = "linear", progress: bool = True, **options) -> dict:
    """Each grid varies one of alpha, K and seed and holds the others at the reference. Another
    seed at the reference alpha and K says how much of the set is the noise draw's."""
    def point(alpha: float, k: int, s: int) -> dict:
        _, critical = study.scan(alpha=alpha, samples=k, seed=s, epsilon=epsilon, stage2=stage2, progress=progress,
                                 **options)
        return {"alpha": alpha, "samples": k, "seed": s,
                "n_star": len(critical.neurons) if critical.reached else None,
                "delta": critical.delta, "neurons": [str(n) for n in critical.neurons]}

    reference = point(ref_alpha, ref_samples, seed)
    rows = [dict(p, varied="alpha") for p in (point(a, ref_samples, seed) for a in alphas)]
    rows += [dict(p, varied="samples") for p in (point(ref_alpha, k, seed) for k in samples)]
    rows += [dict(p, varied="seed") for p in (point(ref_alpha, ref_samples, s) for s in seeds)]
    for row in rows:
        row["jaccard_to_reference"] = jaccard(row["neurons"], reference["neurons"])
    return {"reference": reference, "rows": rows, "epsilon": epsilon}
