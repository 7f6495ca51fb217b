"""Measure what `lesion plan`'s cost model predicts, on this machine: Stage 1 and masked rows.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/plan_calibration.py --model smollm2-135m --samples 10 --rows 8
    OMP_NUM_THREADS=1 flock /tmp/lesion-heavy.lock python benchmarks/plan_calibration.py --model gemma3-270m ...

Prints one JSON line per model: FLOPs from the meta model's shapes (lesion.plan), the wall
seconds and the process CPU seconds (all threads) of Stage 1 (K noise samples, batches of
16) and of masked rows (batches of 8, each row masking one neuron of block 0, so no prefix
is shared: a full forward per row, what the plan assumes), and seconds per FLOP of each.
CPU seconds of one thread (OMP_NUM_THREADS=1) are what the plan is calibrated on: on a
machine shared with other jobs, wall time measures the neighbours, and the CPU time of
several threads counts their spin-waits for a core; one thread's CPU time is the work.
Each figure is the minimum of --repeats.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def timed(fn, repeats: int) -> tuple[float, float]:
    """(min wall s, min CPU s) of ``fn()`` over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def measure(model: str, samples: int, rows: int, repeats: int) -> dict:
    from lesion.masking.ablation import masked_nll
    from lesion.model.loading import load_model
    from lesion.plan.shapes import shapes
    from lesion.method.rankers import rank_by_noise
    from lesion.method.study import Study

    lm = load_model(model, progress=False)
    study = Study.create(lm)
    s = shapes(model, lm.model.config)
    tokens = int(study.input_ids.shape[1])
    stage1_flops = 2 * s.body_parameters * tokens * samples
    row_flops = 2 * (s.body_parameters + s.head_parameters) * tokens
    first = [site for site in study.index.sites if site.layer == 0][0]
    sets = [[n] for n in study.index.neurons(range(rows))]  # block 0: a full forward per row
    assert all(n.module == first.name for s_ in sets for n in s_)
    s1_wall, s1_cpu = timed(lambda: rank_by_noise(lm.model, study.input_ids, study.index, samples=samples,
                                                  batch_size=16, progress=False), repeats)
    row_wall, row_cpu = timed(lambda: masked_nll(lm.model, study.input_ids, study.index, sets, max_rows=8), repeats)
    return {"model": model, "tokens": tokens, "parameters": s.parameters, "threads": torch.get_num_threads(),
            "stage1": {"samples": samples, "flops": stage1_flops, "wall_s": round(s1_wall, 3),
                       "cpu_s": round(s1_cpu, 3), "cpu_s_per_flop": s1_cpu / stage1_flops,
                       "wall_s_per_flop": s1_wall / stage1_flops},
            "rows": {"rows": rows, "flops": row_flops * rows, "wall_s": round(row_wall, 3), "cpu_s": round(row_cpu, 3),
                     "cpu_s_per_flop": row_cpu / (row_flops * rows), "wall_s_per_flop": row_wall / (row_flops * rows)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    for model in args.model:
        print(json.dumps(measure(model, args.samples, args.rows, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
