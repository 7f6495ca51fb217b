"""Stage 1 speed and memory on the default model, and the wall time of a full scan.

Prints: Stage 1 wall time against the floor (K bare forward passes of the same noisy
batches through the same decoder body, no hooks), their ratio, the memory Stage 1 holds
against storing K activation sets, the Stage 2 forward count, and `lesion scan` end to end.

    python benchmarks/stage1_speed.py [--model smollm2-135m] [--samples 100] [--repeats 2]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from lesion import Study, load_model
from lesion.method.rankers import rank_by_noise
from lesion.method.rankers import noise_generator
from lesion.texts.text import BOOKENDS


def floor_seconds(model, ids, samples, batch_size, alpha, seed) -> float:
    """K bare forwards of the same batches: what any noise-perturbation method must pay. The noise is
    drawn on the CPU, as Stage 1 draws it, and the batch cast to the model's dtype on its device (both
    no-ops for a float32 model on the CPU); on CUDA the timing waits for the kernels."""
    body = model.base_model
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(ids).float()
        gen = noise_generator(seed)
        sync(embeds.device)
        start = time.perf_counter()
        for first in range(0, samples, batch_size):
            b = min(batch_size, samples - first)
            noise = torch.stack([torch.randn(embeds.shape[1:], generator=gen) for _ in range(b)])
            body(inputs_embeds=(embeds + alpha * noise.to(embeds.device)).to(model.dtype))
        sync(embeds.device)
        return time.perf_counter() - start


def sync(device: torch.device | str) -> None:
    """Wait for the device's kernels (CUDA runs them asynchronously), so a timing ends with them."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    study = Study.create(load_model(args.model), BOOKENDS)
    model, ids, index = study.lm.model, study.input_ids, study.index
    floor_seconds(model, ids, args.batch_size, args.batch_size, 5.0, 0)  # warm-up
    stage1, floor = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        rank_by_noise(model, ids, index, samples=args.samples, batch_size=args.batch_size, progress=False)
        stage1.append(time.perf_counter() - start)
        floor.append(floor_seconds(model, ids, args.samples, args.batch_size, 5.0, 42))
    t1, t0 = min(stage1), min(floor)
    tokens, neurons = ids.shape[1], index.total
    held = 3 * tokens * neurons * 4  # clean activations, running sums, one batch's pending sums
    naive = args.samples * tokens * neurons * 4
    ranking = study.rank(samples=args.samples, progress=False, use_cache=False)
    critical = study.identify(ranking, progress=False)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lesion", "scan", "--model", args.model, "--no-cache", "--quiet",
                    "--out", "/tmp/lesion-bench-scan"], check=True, capture_output=True)
    scan_s = time.perf_counter() - start

    print(f"model {args.model}: {tokens} tokens, {neurons} neurons, K={args.samples}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"stage 1: {t1:.2f} s   floor (K bare forwards): {t0:.2f} s   ratio {t1 / t0:.2f}")
    print(f"stage 1 memory held: {held / 2**20:.0f} MiB (vs {naive / 2**30:.2f} GiB for K stored "
          f"activation sets); process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    print(f"stage 2: {critical.forward_rows} forward rows (incl. baseline) for n* = {len(critical.neurons)}")
    print(f"lesion scan end to end (no stage 1 cache, model from the dequantised cache): {scan_s:.1f} s")


if __name__ == "__main__":
    main()
