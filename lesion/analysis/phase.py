"""Phase transition: Delta as n grows from 0 past n*, and each critical neuron alone vs jointly."""
from __future__ import annotations

from typing import Sequence

from ..masking.ablation import baseline_nll, masked_nll, set_deltas
from ..masking.metrics import delta, perplexity
from ..model.neurons import Neuron
from ..results.analysis import PhaseData
from ..results.sets import NeuronDelta, Step
from ..method.compare import check_rows_fit
from ..method.study import Study


def phase_transition(study: Study, ranking: Sequence[Neuron], critical: Sequence[Neuron],
                     max_n: int | None = None, epsilon: float = 1.0) -> PhaseData:
    n_star = len(critical)
    max_n = max_n or max(2 * n_star + 5, 20)
    levels = list(range(0, min(max_n, len(ranking)) + 1))
    check_rows_fit("max_n", levels)  # the curve's rows list the top 0, 1, ..., max_n: quadratic in it
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    model, ids, index = study.lm.model, study.input_ids, study.index
    nlls = masked_nll(model, ids, index, [list(ranking[:n]) for n in levels])  # the curve also needs PPL
    # One call for each neuron alone and the whole set jointly (the last row).
    sets = [[n] for n in critical] + [list(critical)] if critical else []
    deltas = set_deltas(model, ids, index, sets, clean) if critical else [0.0]
    alone, joint = deltas[:-1], deltas[-1]
    curve = tuple(Step(n=n, ppl=perplexity(v), delta=delta(v, clean)) for n, v in zip(levels, nlls))
    return PhaseData(baseline_ppl=perplexity(clean), n_star=n_star, epsilon=epsilon, curve=curve,
                     alone=tuple(NeuronDelta(neuron=str(n), delta=d) for n, d in zip(critical, alone)),
                     joint_delta=joint, sum_of_alone=sum(alone))
