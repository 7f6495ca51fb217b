"""Component ablation: the top-n noise-ranked neurons restricted to one component kind.

The paper: 1000 top neurons of up_proj or gate_proj move perplexity by 0-1 orders of
magnitude; a handful in down_proj by 5-6.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..method.compare import level_deltas
from ..errors import ParameterError
from ..results.analysis import ComponentsData, ComponentLevel
from ..method.study import Study
from ..method.stage2 import baseline_nll


def component_ablation(study: Study, kinds: Sequence[str] | None = None,
                       levels: Sequence[int] = (1, 3, 10, 100, 1000), **noise_options) -> ComponentsData:
    scores, _ = study.scores("noise", **noise_options)
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    site_kind = torch.cat([torch.full((s.width,), i) for i, s in enumerate(study.index.sites)])
    present = sorted({s.kind for s in study.index.sites})
    unknown = sorted(set(kinds or ()) - set(present))
    if unknown:
        raise ParameterError("kinds", f"names {', '.join(unknown)}, of which this model has no sites: use "
                                      f"{', '.join(present)}")
    kinds = kinds or present
    rows: dict[str, tuple[ComponentLevel, ...]] = {}
    for kind in kinds:
        in_kind = torch.tensor([s.kind == kind for s in study.index.sites])[site_kind]
        flat = torch.nonzero(in_kind).squeeze(1)
        order = flat[torch.sort(scores.values[flat], descending=True, stable=True).indices]
        usable = [n for n in levels if n <= len(order)]
        neurons = study.index.neurons(order[:max(usable)].tolist()) if usable else []
        deltas = level_deltas(study, neurons, usable, clean) if usable else []
        rows[kind] = tuple(ComponentLevel(n=n, delta=d) for n, d in zip(usable, deltas))
    return ComponentsData(levels=tuple(levels), by_kind=rows)
