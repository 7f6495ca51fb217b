"""Stage 1 per noise sample against the eager floor, the FLOP rate it reaches, and the machine's peak.

In one process and interleaved (so that the load of a shared machine slows every side alike),
``--repeats`` times, the minimum of each:

- Stage 1 (``rank_by_noise``, K samples: the clean pass, the hooks, the ranking) per sample;
- the eager floor: K bare forwards of the decoder body on the same noisy batches, no hooks, per sample
  (``stage1_speed.floor_seconds``: the noise is drawn inside the timing, as Stage 1 draws it, 3.5 ms a
  batch of 16 on SmolLM2);
- the floor at other batch sizes (``--batch-sizes``): whether a better-shaped batch pays;
- a float32 matmul (``--matmul`` square) as the practical peak of this machine's torch.

FLOPs of one sample: 2 x (the body's matmul weights, embeddings excluded: the LM head is not
run) x tokens, plus attention's QK^T and AV (4 x layers x T^2 x heads x head_dim). Elementwise
work (norms, activations, rotary, the hooks) is not counted.

    PYTHONPATH=. python benchmarks/stage1_floor.py [--model smollm2-135m] [--samples 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from stage1_speed import floor_seconds

from lesion import Study, load_model
from lesion.method.rankers import rank_by_noise
from lesion.texts.text import BOOKENDS


def sample_flops(model, tokens: int) -> float:
    config = model.config
    weights = sum(m.weight.numel() for name, m in model.base_model.named_modules()
                  if isinstance(m, torch.nn.Linear))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * tokens * tokens * config.num_attention_heads * head_dim
    return 2.0 * weights * tokens + attention


def matmul_flops_per_s(size: int, repeats: int) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-sizes", default="", help="also time the floor at these batch sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--matmul", type=int, default=2048, help="side of the square float32 matmul (the peak)")
    args = p.parse_args()
    load_before = os.getloadavg()[0]

    study = Study.create(load_model(args.model, progress=False), BOOKENDS)
    model, ids, index = study.lm.model, study.input_ids, study.index
    k, batch = args.samples, args.batch_size
    others = [int(b) for b in args.batch_sizes.split(",") if b]
    floor_seconds(model, ids, batch, batch, 5.0, 0)  # warm-up
    times: dict[str, list[float]] = {"stage1": [], "floor": [], "matmul": [], **{f"floor@{b}": [] for b in others}}
    for _ in range(args.repeats):
        times["stage1"].append(_timed(lambda: rank_by_noise(model, ids, index, samples=k, batch_size=batch,
                                                            progress=False)))
        times["floor"].append(floor_seconds(model, ids, k, batch, 5.0, 42))
        for b in others:
            times[f"floor@{b}"].append(floor_seconds(model, ids, k, b, 5.0, 42))
        times["matmul"].append(2.0 * args.matmul ** 3 / matmul_flops_per_s(args.matmul, 1))
    best = {name: min(values) for name, values in times.items()}
    flops = sample_flops(model, ids.shape[1])
    peak = 2.0 * args.matmul ** 3 / best["matmul"]
    print(f"model {args.model}: {ids.shape[1]} tokens, {index.total} neurons, K={k}, batch {batch}, "
          f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; minimum of {args.repeats}")
    print(f"float32 matmul {args.matmul}^2 (the practical peak): {peak / 1e9:.1f} GFLOP/s")
    for name in ["stage1", "floor", *[f"floor@{b}" for b in others]]:
        per_sample = best[name] / k
        print(f"{name:10s} {per_sample * 1e3:8.1f} ms per sample  ratio to the floor {best[name] / best['floor']:.3f}  "
              f"{flops / per_sample / 1e9:6.1f} GFLOP/s ({flops / per_sample / peak:.0%} of the matmul peak)")


if __name__ == "__main__":
    main()
