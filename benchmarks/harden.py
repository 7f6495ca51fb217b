"""Compare the rotations of `lesion harden` on one model: how evenly each spreads the massive
residual channel, the largest residual activation over the median after it, what masking the
old heel does, and how far the float32 logits move.

    python benchmarks/harden.py                          # SmolLM2-135M, seeds 0 1 2
    flock /tmp/lesion-heavy.lock python benchmarks/harden.py --model qwen2.5-coder-1.5b --seeds 0

Prints a markdown table (one row per method, heads and seed). It does not write a model; for
the full proof (bfloat16, generations, n* and lesion search) use `lesion harden --report`.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from lesion.harden import harden_weights
from lesion.harden.measure import heel_writer, mask_deltas, residual_outliers
from lesion.model.loading import load_model
from lesion.texts.text import BOOKENDS, encode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="rotate,hadamard")
    args = p.parse_args()
    lm = load_model(args.model, progress=False)
    ids = encode(lm.tokenizer, BOOKENDS)
    with torch.inference_mode():
        reference = lm.model(input_ids=ids).logits
    outliers = residual_outliers(lm.model, ids)
    heel = heel_writer(lm.model, ids, outliers.channel)
    before = mask_deltas(lm.model, ids, [heel], "float32")[0].delta
    print(f"{args.model}: residual channel {outliers.channel} at layer {outliers.layer}, largest/median "
          f"{outliers.max_ratio:.4g}; masking {heel} alone: Delta {before:.3f}\n")
    print("| method | heads | seed | top share of channel (even: 1/n) | max abs Q entry * sqrt(n) | largest/median "
          "after | Delta masking the old heel | max abs logit difference | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for heads in (False, True):
            for seed in (int(s) for s in args.seeds.split(",")):
                model = copy.deepcopy(lm.model)
                start = time.perf_counter()
                done = harden_weights(model, method, seed, heads, watch=outliers.channel)
                seconds = time.perf_counter() - start
                with torch.inference_mode():
                    diff = float((model(input_ids=ids).logits - reference).abs().max())
                after = residual_outliers(model, ids).max_ratio
                delta = mask_deltas(model, ids, [heel], "float32")[0].delta
                s = done.spread
                assert s is not None  # a channel was watched
                print(f"| {method} | {'yes' if heads else 'no'} | {seed} | {s.top_share:.4f} "
                      f"({s.uniform_share:.4f}) | {s.flatness:.2f} | {after:.3g} | {delta:.3f} | {diff:.2e} "
                      f"| {seconds:.1f} |", flush=True)
                del model


if __name__ == "__main__":
    main()
