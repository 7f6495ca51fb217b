"""How far lesion is from its floors, on one model: every figure of docs/speed.md.

Each figure is the minimum over ``--repeats`` runs, and each ratio divides two timings
taken in the same run, so that a busy machine slows both sides alike.

- Stage 1, fixed K: wall time against K bare forwards of the same noisy batches (the floor).
- Stage 1, ``--samples auto``: the K it used and its wall time against the K = 100 floor.
- Stage 2 rows: masked rows per second against bare forwards of the same batch (unmasked
  model, same rows, same loss), with the shared prefix and with the full forward; and the
  rows of ``linear`` against ``gallop`` on this model's ranking.
- Workloads: the leave-one-out rows of ``minimal`` pruning and the levels of ``compare``,
  with and without the shared prefix.
- Start-up of ``python -m lesion --help``; model load against a bare safetensors read of
  the dequantised cache; ``lesion scan`` end to end with Stage 1 cached (warm).

    PYTHONPATH=. python benchmarks/speed.py [--model smollm2-135m] [--repeats 3] [--parts stage2,load]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from lesion import Study, load_model
from lesion.method.rankers import rank_by_noise
from lesion.method.stage2 import find_critical_set
from lesion.masking.ablation import masked_nll
from lesion.masking.metrics import mean_nll
from lesion.model.model_cache import _gguf_cache
from lesion.model.aliases import resolve
from lesion.texts.text import BOOKENDS

sys.path.insert(0, str(Path(__file__).parent))
from stage1_speed import floor_seconds  # noqa: E402


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def paired(repeats: int, fn, floor) -> tuple[float, float]:
    """min over repeats of fn and of its floor, timed alternately."""
    a, b = [], []
    for _ in range(repeats):
        a.append(best_of(1, fn))
        b.append(best_of(1, floor))
    return min(a), min(b)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rows", type=int, default=8, help="masked rows per Stage 2 forward")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parts", default="start,load,stage1,stage2,scan",
                   help="which figures: start, load, stage1, stage2 (with the workloads), scan")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    r = args.repeats
    print(f"model {args.model}, {torch.get_num_threads()} threads, minimum of {r} runs per figure")

    # Start-up and load, before this process has imported anything heavy into the page cache's favour.
    if "start" in parts:
        start_up(r)
    if "load" in parts:
        load(args.model, r)
    study = Study.create(load_model(args.model, progress=False), BOOKENDS)
    if "stage2" in parts:
        stage2(study, args, r)
    if "stage1" in parts:
        stage1(study, args, r)
    if "scan" in parts:
        scan = [sys.executable, "-m", "lesion", "scan", "--model", args.model, "--quiet", "--out",
                "/tmp/lesion-bench-scan"]
        subprocess.run(scan, check=True, capture_output=True)  # fills the Stage 1 cache
        warm = best_of(r, lambda: subprocess.run(scan, check=True, capture_output=True))
        print(f"lesion scan, warm (model cache and Stage 1 cache filled): {warm:.1f} s")


def start_up(r: int) -> None:
    help_s = best_of(r, lambda: subprocess.run([sys.executable, "-m", "lesion", "--help"], check=True,
                                               capture_output=True))
    print(f"start-up: python -m lesion --help {help_s:.2f} s")


def load(model: str, r: int) -> None:
    folder, gguf = resolve(model)
    weights = _gguf_cache(folder, gguf) / "model.safetensors" if gguf else None
    load_s = best_of(r, lambda: load_model(model, progress=False))
    if weights is not None and weights.is_file():
        from safetensors.torch import load as load_bytes
        from transformers import AutoTokenizer
        from lesion.model.tokenizer import load_tokenizer
        # Read every byte: load_file maps the file lazily and would time only the header.
        read_s = best_of(r, lambda: load_bytes(weights.read_bytes()))
        tokenizer_s = best_of(r, lambda: load_tokenizer(weights.parent))
        class_s = best_of(r, lambda: AutoTokenizer.from_pretrained(weights.parent))
        print(f"load: {load_s:.2f} s from the dequantised cache (of which the tokenizer {tokenizer_s:.2f} s; "
              f"the model's own tokenizer class would take {class_s:.2f} s); "
              f"bare safetensors read of {weights.stat().st_size / 2**20:.0f} MiB {read_s:.2f} s "
              f"(ratio {load_s / read_s:.1f}; weights alone {(load_s - tokenizer_s) / read_s:.1f})")
    else:
        print(f"load: {load_s:.2f} s (no dequantised cache to compare against)")


def stage1(study, args, r: int) -> None:
    model, ids, index = study.lm.model, study.input_ids, study.index
    floor_seconds(model, ids, args.batch_size, args.batch_size, 5.0, 0)  # warm-up
    stage1, floor = paired(r, lambda: rank_by_noise(model, ids, index, samples=args.samples,
                                                    batch_size=args.batch_size, progress=False),
                           lambda: floor_seconds(model, ids, args.samples, args.batch_size, 5.0, 42))
    print(f"stage 1, K={args.samples}: {stage1:.2f} s, floor {floor:.2f} s, ratio {stage1 / floor:.2f}")
    adaptive = {}

    def run_auto():
        adaptive["scores"] = rank_by_noise(model, ids, index, samples="auto", max_samples=args.samples,
                                           batch_size=args.batch_size, progress=False)
    auto_s, floor = paired(r, run_auto, lambda: floor_seconds(model, ids, args.samples, args.batch_size, 5.0, 42))
    used = adaptive["scores"].adaptive["samples_used"]
    print(f"stage 1, --samples auto: K used {used} of {args.samples} ({100 * used / args.samples:.0f}% of the "
          f"forwards), {auto_s:.2f} s, ratio to the K={args.samples} floor {auto_s / floor:.2f}")


def stage2(study, args, r: int) -> None:
    """On the paper's ranking (K = 100, from the Stage 1 cache when it is there)."""
    model, ids, index = study.lm.model, study.input_ids, study.index
    top = list(study.rank(samples=100, keep=1000, progress=False).neurons)
    sets = [top[:n] for n in range(1, args.rows + 1)]
    first = min(index.site(n).layer for n in top[:args.rows])
    bare = lambda: mean_nll(model, ids, rows=len(sets))  # noqa: E731
    shared, bare_s = paired(r, lambda: masked_nll(model, ids, index, sets), bare)
    full, bare_s2 = paired(r, lambda: masked_nll(model, ids, index, sets, share_prefix=False), bare)
    rows = len(sets)
    print(f"stage 2 rows (top 1..{rows}, lowest masked block {first}): shared prefix {rows / shared:.1f} rows/s, "
          f"full forward {rows / full:.1f} rows/s, bare forwards {rows / bare_s:.1f} rows/s; "
          f"ratio to bare: {shared / bare_s:.2f} shared, {full / bare_s2:.2f} full")
    for mode in ("linear", "gallop"):
        start = time.perf_counter()
        found = find_critical_set(model, ids, index, top, stage2=mode, progress=False)
        print(f"stage 2 {mode}: n* = {len(found.neurons)}, {found.forward_rows} rows, "
              f"{time.perf_counter() - start:.2f} s")

    critical = top[:20]  # a pruning round of `minimal`: one row per neuron left out
    leave_one_out = [critical[:i] + critical[i + 1:] for i in range(len(critical))]
    shared, full = (best_of(r, lambda s=s: masked_nll(model, ids, index, leave_one_out, max_rows=64,
                                                      share_prefix=s)) for s in (True, False))
    print(f"minimal (leave-one-out of the top 20, {len(leave_one_out)} rows): shared {shared:.2f} s, "
          f"full {full:.2f} s, saving {100 * (1 - shared / full):.0f}%")
    levels = [top[:n] for n in (1, 10, 100, 1000)]
    shared, full = (best_of(r, lambda s=s: masked_nll(model, ids, index, levels, share_prefix=s))
                    for s in (True, False))
    print(f"compare (levels 1, 10, 100, 1000 of one ranking): shared {shared:.2f} s, full {full:.2f} s, "
          f"saving {100 * (1 - shared / full):.0f}%")



if __name__ == "__main__":
    main()
