"""Precision: is the collapse numerical? The same scan in float32, bfloat16 and float16, and each
low-precision set re-evaluated in float32."""
from __future__ import annotations

from typing import Sequence

from ..errors import LesionError
from ..loading import load_model
from ..metrics import delta
from ..pipeline import Study
from ..search import baseline_nll, masked_nll


def precision(model_spec: str, text: str, dtypes: Sequence[str] = ("float32", "bfloat16", "float16"), *,
              epsilon: float = 1.0, device: str = "cpu", progress: bool = True, **rank_options) -> dict:
    rows, sets = [], {}
    for dtype in dtypes:
        study = Study.create(load_model(model_spec, dtype=dtype, device=device), text)
        try:
            critical = study.identify(study.rank(progress=progress, **rank_options), epsilon=epsilon,
                                      progress=progress)
            row = {"dtype": dtype, "reached": critical.reached, "n_star": len(critical.neurons),
                   "baseline_ppl": critical.baseline_ppl, "masked_ppl": critical.masked_ppl,
                   "delta": critical.delta, "neurons": [str(n) for n in critical.neurons], "error": None}
            sets[dtype] = list(critical.neurons)
        except LesionError as e:  # e.g. a non-finite baseline in float16: a finding, not a crash
            row = {"dtype": dtype, "reached": False, "n_star": None, "error": str(e), "neurons": []}
        rows.append(row)
    reference = Study.create(load_model(model_spec, dtype="float32", device=device), text)
    clean = baseline_nll(reference.lm.model, reference.input_ids, "float32")
    for row in rows:
        neurons = sets.get(row["dtype"])
        if neurons:
            nll = masked_nll(reference.lm.model, reference.input_ids, reference.index, [neurons])[0]
            row["delta_in_float32"] = delta(nll, clean)
    return {"rows": rows, "epsilon": epsilon}
