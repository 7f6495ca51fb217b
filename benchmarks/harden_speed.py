"""Inference cost of hardening: the original and the hardened model timed side by side.

    python benchmarks/harden_speed.py                                  # default model, CPU, float32
    python benchmarks/harden_speed.py --device cuda --dtypes float32,bfloat16
    python benchmarks/harden_speed.py --model qwen2.5-coder-1.5b --batch 1 --tokens 128 --repeats 5

Both models are in memory at once and timed in alternation (original, hardened, original, ...),
so a machine that slows down mid-run slows both; each figure is the fastest of ``--repeats``
runs. Prints, per dtype: a batched forward (prefill) and greedy decoding with the KV cache
(``--new-tokens`` tokens, batch 1), in milliseconds, and hardened / original. Hardening keeps
every shape, so the ratio should be 1 within timing noise; the only size change is the LM head
untied from the embeddings (one more matrix in memory, the same matmul).
"""
from __future__ import annotations

import argparse
import time

import torch

from lesion.harden import harden_loaded
from lesion.model.loading import load_model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(models: dict, work, device: str, repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of ``work(model)`` per model, the models taking turns."""
    for model in models.values():  # warm-up: kernels, allocator, caches
        work(model)
    best = {name: float("inf") for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            best[name] = min(best[name], timed(lambda m=model: work(m), device))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--method", default="hadamard")
    p.add_argument("--heads", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()

    lm = load_model(a.model, dtype="float32", device=a.device, progress=False)
    hardened, _ = harden_loaded(lm, a.method, seed=0, heads=a.heads)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, lm.model.config.vocab_size, (a.batch, a.tokens), generator=gen).to(a.device)
    prompt = ids[:1, :16]
    print(f"{a.model} on {a.device}" + (f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else "")
          + f", torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {a.method}"
          + (" --heads" if a.heads else "") + f"; fastest of {a.repeats}, models alternating")
    print("| dtype | work | original ms | hardened ms | hardened / original |")
    print("|---|---|---|---|---|")
    for dtype in a.dtypes.split(","):
        models = {"original": lm.model.to(getattr(torch, dtype)), "hardened": hardened.model.to(getattr(torch, dtype))}

        def forward(model):
            with torch.inference_mode():
                model(input_ids=ids, use_cache=False)

        def decode(model):
            with torch.inference_mode():
                model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=a.new_tokens,
                               min_new_tokens=a.new_tokens, do_sample=False, pad_token_id=0)

        for label, work in ((f"forward {a.batch} x {a.tokens} tokens", forward),
                            (f"greedy decode {a.new_tokens} tokens", decode)):
            t = interleaved(models, work, a.device, a.repeats)
            print(f"| {dtype} | {label} | {t['original'] * 1e3:.2f} | {t['hardened'] * 1e3:.2f} | "
                  f"{t['hardened'] / t['original']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
