"""Phase transition: Delta as n grows from 0 past n*, and each critical neuron alone vs jointly."""
from __future__ import annotations

from typing import Sequence

from ..metrics import delta, perplexity
from ..neurons import Neuron
from ..pipeline import Study
from ..search import baseline_nll, masked_nll


def phase_transition(study: Study, ranking: Sequence[Neuron], critical: Sequence[Neuron],
                     max_n: int | None = None, epsilon: float = 1.0) -> dict:
    n_star = len(critical)
    max_n = max_n or max(2 * n_star + 5, 20)
    levels = list(range(0, min(max_n, len(ranking)) + 1))
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    nlls = masked_nll(study.lm.model, study.input_ids, study.index, [list(ranking[:n]) for n in levels])
    alone = masked_nll(study.lm.model, study.input_ids, study.index, [[n] for n in critical]) if critical else []
    joint = masked_nll(study.lm.model, study.input_ids, study.index, [list(critical)])[0] if critical else clean
    return {"baseline_ppl": perplexity(clean), "n_star": n_star, "epsilon": epsilon,
            "curve": [{"n": n, "ppl": perplexity(v), "delta": delta(v, clean)} for n, v in zip(levels, nlls)],
            "alone": [{"neuron": str(n), "delta": delta(v, clean)} for n, v in zip(critical, alone)],
            "joint_delta": delta(joint, clean),
            "sum_of_alone": sum(delta(v, clean) for v in alone)}
