"""The 1.5B model (qwen2.5-coder-1.5b) at the cost floor: masked rows against bare forwards, and
bfloat16 against float32 for Stage 1 and masked rows, with peak memory against the float32 weights.

    flock /tmp/lesion-heavy.lock python benchmarks/large_model.py                  # both dtypes
    flock /tmp/lesion-heavy.lock python benchmarks/large_model.py --dtypes float32 --samples 5

For each dtype (one model load each, float32 first): seconds of one batch of ``--rows`` bare
rows (the unmasked text, repeated) against the same batch with one neuron masked per row,
masks in layer 1 (no prefix to share: the worst case) and in the top layers (the screen's
usual case); Stage 1 (noise ranking, ``--samples``) seconds and its top 10; the Delta of the
first n of the float32 ranking for a few n, in each dtype. Then whether the dtypes agree
(top 10 overlap, Delta per n), and this process's peak RSS against the float32 weight bytes.
Timings are the minimum over ``--repeats``; the machine is shared, so they are noisy.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import time

import torch

from lesion import load_model
from lesion.masking.ablation import baseline_nll, set_deltas
from lesion.masking.metrics import mean_nll
from lesion.model.neurons import Neuron
from lesion.method.study import Study
from lesion.texts.text import BOOKENDS, encode

MODEL = "qwen2.5-coder-1.5b"
PREFIXES = (1, 4, 16, 64)


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def row_costs(lm, study, rows: int, repeats: int) -> dict:
    ids = encode(lm.tokenizer, BOOKENDS, lm.device)
    clean = baseline_nll(lm.model, ids)
    index = study.index
    down = [s for s in index.sites if s.kind == "down"]
    low = [[Neuron(down[1].name, c)] for c in range(rows)]  # layer 1: every row runs all blocks
    high = [[Neuron(down[-1 - (i % 3)].name, i)] for i in range(rows)]  # top three layers
    bare = timed(lambda: mean_nll(lm.model, ids, rows=rows), repeats)
    masked_low = timed(lambda: set_deltas(lm.model, ids, index, low, clean, max_rows=rows), repeats)
    masked_high = timed(lambda: set_deltas(lm.model, ids, index, high, clean, max_rows=rows), repeats)
    return {"tokens": int(ids.shape[1]), "rows": rows, "bare_s": bare, "masked_layer1_s": masked_low,
            "masked_top_layers_s": masked_high, "ratio_layer1": masked_low / bare, "ratio_top": masked_high / bare}


def prefix_deltas(lm, study, order: list[Neuron]) -> dict[int, float]:
    ids = encode(lm.tokenizer, BOOKENDS, lm.device)
    clean = baseline_nll(lm.model, ids)
    sizes = [n for n in PREFIXES if n <= len(order)]
    values = set_deltas(lm.model, ids, study.index, [order[:n] for n in sizes], clean, max_rows=len(sizes))
    return dict(zip(sizes, values))


def measure(model: str, dtype: str, samples: int, rows: int, repeats: int, order: list[Neuron] | None) -> dict:
    start = time.perf_counter()
    lm = load_model(model, dtype=dtype, progress=False)
    load_s = time.perf_counter() - start
    study = Study.create(lm, BOOKENDS)
    out = {"dtype": dtype, "load_s": load_s, **row_costs(lm, study, rows, repeats)}
    start = time.perf_counter()
    ranking = study.rank("noise", keep=100, samples=samples, progress=False, use_cache=False)
    out.update(stage1_s=time.perf_counter() - start, top10=[str(n) for n in ranking.neurons[:10]],
               ranking=list(ranking.neurons))
    out["prefix_deltas"] = prefix_deltas(lm, study, order or list(ranking.neurons))
    out["weights_fp32_bytes"] = sum(p.numel() for p in lm.model.parameters()) * 4
    del lm, study
    gc.collect()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--samples", type=int, default=10, help="Stage 1 noise samples (the paper: 100)")
    p.add_argument("--rows", type=int, default=8, help="rows per timed batch")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("LESION_NO_PROGRESS", "1")
    torch.manual_seed(0)
    results, order = [], None
    for dtype in args.dtypes.split(","):
        r = measure(args.model, dtype, args.samples, args.rows, args.repeats, order)
        order = order or r["ranking"]  # every dtype masks the first dtype's prefixes
        results.append(r)
        print(f"{dtype}: load {r['load_s']:.1f} s; {r['rows']} rows x {r['tokens']} tokens: bare {r['bare_s']:.2f} s, "
              f"masked layer 1 {r['masked_layer1_s']:.2f} s ({r['ratio_layer1']:.2f}x), masked top layers "
              f"{r['masked_top_layers_s']:.2f} s ({r['ratio_top']:.2f}x); {r['rows'] / r['bare_s']:.2f} bare rows/s")
        print(f"{dtype}: stage 1 ({args.samples} samples) {r['stage1_s']:.1f} s; top 10: {', '.join(r['top10'])}")
        print(f"{dtype}: Delta of the first n of the {results[0]['dtype']} ranking: "
              + ", ".join(f"n={n}: {d:.3g}" for n, d in r["prefix_deltas"].items()), flush=True)
    if len(results) == 2:
        a, b = results
        same = len(set(a["top10"]) & set(b["top10"]))
        print(f"agreement: top 10 overlap {same}/10, same order: {a['top10'] == b['top10']}; "
              f"stage 1 {a['stage1_s'] / b['stage1_s']:.2f}x faster in {b['dtype']}, bare rows "
              f"{a['bare_s'] / b['bare_s']:.2f}x, masked rows {a['masked_layer1_s'] / b['masked_layer1_s']:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = results[0]["weights_fp32_bytes"]
    print(f"peak RSS {peak / 2**30:.2f} GiB = {peak / weights:.2f}x the float32 weights ({weights / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
