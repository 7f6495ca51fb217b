"""Stage 1 and masked rows on a mixture-of-experts model, against the stock forward.

The model is the default one upcycled into a Mixtral (4 experts, top-2; ``python -m lesion.tools.upcycle``).
The floor is transformers' own model, loaded from the same folder and never touched by lesion (its
grouped experts forward): K bare forwards of the same noisy batches for Stage 1, one forward of
the same rows for masked rows. Both are timed alternately in one process, ``--repeats`` times,
and the minimum of each is kept (this machine is shared: say which figures were quiet).

    python -m lesion.tools.upcycle --out /tmp/smollm2-moe
    python benchmarks/moe_speed.py --model /tmp/smollm2-moe [--samples 32] [--rows 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
from stage1_speed import floor_seconds
from transformers import AutoModelForCausalLM

from lesion import Study, load_model
from lesion.masking.ablation import masked_nll
from lesion.masking.metrics import mean_nll
from lesion.model.neurons import Neuron
from lesion.method.rankers import rank_by_noise
from lesion.texts.text import BOOKENDS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="an upcycled folder (python -m lesion.tools.upcycle --out DIR)")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    study = Study.create(load_model(args.model, progress=False), BOOKENDS)
    model, ids, index = study.lm.model, study.input_ids, study.index
    stock = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    block = next(s.name for s in index.sites if s.kind == "moe" and ".11." in s.name)
    # one expert neuron per row, as the heel search scores them; the full forward (no shared prefix)
    sets = [[Neuron(f"{block}.experts.{r % 4}.down_proj", r)] for r in range(args.rows)]
    floor_seconds(stock, ids, args.batch_size, args.batch_size, 5.0, 0)  # warm-up
    stage1, floor, rows, bare = [], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        rank_by_noise(model, ids, index, samples=args.samples, batch_size=args.batch_size, progress=False)
        stage1.append(time.perf_counter() - start)
        floor.append(floor_seconds(stock, ids, args.samples, args.batch_size, 5.0, 42))
        start = time.perf_counter()
        masked_nll(model, ids, index, sets, max_rows=args.rows, share_prefix=False)
        rows.append(time.perf_counter() - start)
        with torch.inference_mode():
            start = time.perf_counter()
            mean_nll(stock, ids, rows=args.rows)
            bare.append(time.perf_counter() - start)
    print(f"model {args.model}: {ids.shape[1]} tokens, {index.total} neurons, K={args.samples}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, min of {args.repeats}")
    print(f"stage 1: {min(stage1) / args.samples * 1e3:.1f} ms/sample   stock floor: "
          f"{min(floor) / args.samples * 1e3:.1f} ms/sample   ratio {min(stage1) / min(floor):.2f}")
    print(f"masked rows: {min(rows) / args.rows * 1e3:.1f} ms/row   stock forward of the same rows: "
          f"{min(bare) / args.rows * 1e3:.1f} ms/row   ratio {min(rows) / min(bare):.2f}")


if __name__ == "__main__":
    main()
