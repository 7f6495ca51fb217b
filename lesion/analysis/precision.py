"""Precision: is the collapse numerical? The same scan in float32, bfloat16 and float16, and each
low-precision set re-evaluated in float32."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from ..masking.ablation import baseline_nll, set_deltas
from ..errors import LesionError, ParameterError
from ..model.loading import load_model
from ..runtime.options import DTYPES
from ..results.analysis import PrecisionData, PrecisionFailure, PrecisionRow
from ..method.stage2 import check_options
from ..method.study import Study


def precision(model_spec: str, text: str, dtypes: Sequence[str] = ("float32", "bfloat16", "float16"), *,
              epsilon: float = 1.0, device: str = "cpu", stage2: str = "linear", progress: bool = True,
              **rank_options) -> PrecisionData:
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise ParameterError("dtypes", f"must name one or more of {', '.join(DTYPES)} (got {list(dtypes)!r})")
    check_options(epsilon, stage2=stage2)  # a bad option is the caller's, not a finding per dtype
    rows: list[PrecisionRow | PrecisionFailure] = []
    sets = {}
    for dtype in dtypes:
        study = Study.create(load_model(model_spec, dtype=dtype, device=device), text)
        try:
            _, critical = study.scan(epsilon=epsilon, stage2=stage2, progress=progress, **rank_options)
            rows.append(PrecisionRow(dtype=dtype, reached=critical.reached, n_star=len(critical.neurons),
                                     baseline_ppl=critical.baseline_ppl, masked_ppl=critical.masked_ppl,
                                     delta=critical.delta, neurons=tuple(str(n) for n in critical.neurons)))
            sets[dtype] = list(critical.neurons)
        except LesionError as e:  # e.g. a non-finite baseline in float16: a finding, not a crash
            rows.append(PrecisionFailure(dtype=dtype, reached=False, n_star=None, error=str(e), neurons=()))
    reference = Study.create(load_model(model_spec, dtype="float32", device=device), text)
    clean = baseline_nll(reference.lm.model, reference.input_ids, "float32")
    found = [row.dtype for row in rows if sets.get(row.dtype)]
    deltas = dict(zip(found, set_deltas(reference.lm.model, reference.input_ids, reference.index,
                                        [sets[dtype] for dtype in found], clean)))
    rows = [replace(row, delta_in_float32=deltas[row.dtype]) if isinstance(row, PrecisionRow) and row.dtype in deltas
            else row for row in rows]
    return PrecisionData(rows=tuple(rows), epsilon=epsilon)
