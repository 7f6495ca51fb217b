"""Would a compiled forward put Stage 1 below the eager floor? One Stage 1 batch, compiled and eager.

The decoder body is compiled (``torch.compile``, default mode) with Stage 1's accumulating hooks
registered, so Dynamo traces the |A_clean - A_noisy| sums into the graph. Printed: the first call
(compile included), the second (a recompile, if the hooks' state made Dynamo guard on it), then the
compiled and the eager batch timed alternately (``--repeats``, minimum of each), and how far the
compiled sums are from the eager ones. Run it twice to see inductor's cache across processes
(``TORCHINDUCTOR_CACHE_DIR`` names it; delete the folder for a cold run):

    TORCHINDUCTOR_CACHE_DIR=/tmp/inductor PYTHONPATH=. python benchmarks/stage1_compile.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from lesion import Study, load_model
from lesion.masking.masks import hooked
from lesion.method.rankers import _accumulate, _store
from lesion.texts.text import BOOKENDS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    study = Study.create(load_model(args.model, progress=False), BOOKENDS)
    model, ids, index = study.lm.model, study.input_ids, study.index
    body = model.base_model
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(ids).float()
        clean: dict[str, torch.Tensor] = {}
        with hooked(model, _store(index, clean)):
            body(inputs_embeds=embeds)
        noisy = embeds + 5.0 * torch.randn(args.batch_size, *embeds.shape[1:],
                                           generator=torch.Generator().manual_seed(0))
        pending: dict[str, tuple] = {}
        compiled = torch.compile(body)
        with hooked(model, _accumulate(index, clean, pending)):
            def run(forward) -> tuple[float, dict[str, torch.Tensor]]:
                pending.clear()
                start = time.perf_counter()
                forward(inputs_embeds=noisy)
                return time.perf_counter() - start, {n: t for n, (t, _) in pending.items()}

            first, _ = run(compiled)
            second, _ = run(compiled)
            eager_sums = run(body)[1]
            compiled_sums = run(compiled)[1]
            eager_times, compiled_times = [], []
            for _ in range(args.repeats):
                eager_times.append(run(body)[0])
                compiled_times.append(run(compiled)[0])
    worst = max(((compiled_sums[n] - e).abs().max() / e.abs().max().clamp_min(1e-30)).item()
                for n, e in eager_sums.items())
    identical = all(torch.equal(compiled_sums[n], e) for n, e in eager_sums.items())
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")
    print(f"model {args.model}: {ids.shape[1]} tokens, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}, inductor cache {cache}")
    print(f"first compiled call {first:.1f} s, second {second:.1f} s")
    print(f"per batch: eager {min(eager_times):.3f} s, compiled {min(compiled_times):.3f} s, "
          f"ratio {min(compiled_times) / min(eager_times):.3f} (min of {args.repeats})")
    print(f"sums: the same bits {identical}; worst relative difference {worst:.2e} (of the site's largest sum)")


if __name__ == "__main__":
    main()
