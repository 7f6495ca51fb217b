"""Rows and seconds of `lesion search` on real models: the paper's prefix, the screen, pruning.

    python benchmarks/heel_search.py                         # smollm2-135m and gemma3-270m
    python benchmarks/heel_search.py --models gemma3-270m --repeats 3

For each model and strategy it prints every stage's masked rows and wall seconds, the size
and Delta of the answer, and masked rows per second against bare forwards of the same
batch (the floor: a masked row cannot cost less than an unmasked one). Timings on a shared
machine are noisy: the minimum over --repeats is printed.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from lesion import load_model
from lesion.heel import SearchPlan, search_heel
from lesion.masking.metrics import mean_nll
from lesion.texts.text import BOOKENDS, encode


def bare_rows_per_second(lm, rows: int = 8, repeats: int = 3) -> float:
    ids = encode(lm.tokenizer, BOOKENDS, lm.device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mean_nll(lm.model, ids, rows=rows)
        best = min(best, time.perf_counter() - start)
    return rows / best


def run(model: str, strategies: list[str], repeats: int, time_budget: float | None = None) -> None:
    lm = load_model(model, progress=False)
    floor = bare_rows_per_second(lm)
    print(f"\n{model}: bare forward {floor:.1f} rows/s (batch of 8, Bookends text, min of 3)")
    print(f"{'strategy':<8} {'stage':<9} {'rows':>6} {'seconds':>8} {'rows/s':>7} {'size':>5} {'Delta':>7}")
    for strategy in strategies:
        plan = SearchPlan(strategy=strategy, time_budget=time_budget)
        runs = [search_heel(lm, [BOOKENDS], plan, progress=False) for _ in range(repeats)]
        for i, stage in enumerate(runs[0].stages):
            seconds = min(r.stages[i]["seconds"] for r in runs)
            rate = stage["rows"] / seconds if seconds and stage["rows"] else float("nan")
            delta = "-" if stage["delta"] is None else f"{stage['delta']:.3f}"
            print(f"{strategy:<8} {stage['stage']:<9} {stage['rows']:>6} {seconds:>8.1f} {rate:>7.1f} "
                  f"{stage['size']:>5} {delta:>7}")
        heel = runs[0]
        print(f"{strategy:<8} answer: {len(heel.neurons)} neuron(s), Delta {heel.delta:.3f}, {heel.rows} rows, "
              f"{heel.seconds:.1f} s in all, stopped: {heel.stopped}: "
              + " ".join(map(str, heel.neurons[:6])) + (" ..." if len(heel.neurons) > 6 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--strategies", default="greedy,prefix")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per search (default: none)")
    args = parser.parse_args()
    os.environ.setdefault("LESION_NO_PROGRESS", "1")
    torch.manual_seed(0)
    for model in args.models.split(","):
        run(model, args.strategies.split(","), args.repeats, args.time_budget)


if __name__ == "__main__":
    main()
