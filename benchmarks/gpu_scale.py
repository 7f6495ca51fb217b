"""Stage 1, masked rows and a search at the paper's scale, on random weights, against `lesion plan`.

    python benchmarks/gpu_scale.py                       # on CUDA: Qwen2.5-7B, Llama-3.1-8B, Qwen2.5-32B
    python benchmarks/gpu_scale.py --device cpu --tiny   # the same steps on small shapes: checks the script

A model is built from its published config (``tests/data/configs``) with random weights, on the
device: a forward of random weights costs the time a trained one does, and no checkpoint is
downloaded. The text is the default one, tokenized by the default model's tokenizer (its ids fall in
every config's vocabulary). For each model and dtype it prints:

- Stage 1 (``rank_by_noise``, ``--samples`` K, batches of 16) against its floor, K bare forwards of the
  decoder body on the same noisy batches;
- masked rows per second: ``--rows`` rows each masking one neuron of block 0 (no prefix to share: a
  full forward per row, what the plan assumes);
- a search (``search_heel``, ``--search-rows`` rows, ``--search-budget-s``): rows per second, signals included;
- what ``lesion plan`` predicts for the same model on one GPU of this one's memory (or on this CPU):
  measured / planned for Stage 1 and a masked row, and the effective TFLOPS measured, which is the
  ``--gpu-tflops`` that makes the plan exact. The plan is calibrated when that ratio is within 30 %.

A model or dtype that does not fit the device is skipped with one line. ``--budget-s`` bounds the
whole run: a model not started by then is skipped, so the run fits benchmarks/gpu.sh's ten minutes.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from stage1_speed import floor_seconds, sync

CONFIGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "configs"
MODELS = ("qwen2.5-7b", "llama-3.1-8b", "qwen2.5-32b")
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2}
BATCH, ALPHA, SEED = 16, 5.0, 42


def timed(fn, device: str, repeats: int = 2) -> float:
    """Minimum wall seconds of ``repeats`` runs (the first also warms kernels and the allocator)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (a tiny model's seconds are not rounded to 0)."""
    return 0.0 if x == 0 or not math.isfinite(x) else round(x, digits - 1 - math.floor(math.log10(abs(x))))


@functools.cache
def tokenizer():
    from lesion.model.loading import load_model
    return load_model("smollm2-135m", progress=False).tokenizer


def config_file(name: str, tiny: bool, folder: Path) -> Path:
    values = json.loads((CONFIGS / f"{name}.json").read_text())
    values.pop("_source", None)
    if tiny:
        values.update(TINY)
    path = folder / f"{name}{'-tiny' if tiny else ''}.json"
    path.write_text(json.dumps(values))
    return path


def build(name: str, config, dtype: str, device: str):
    """A LoadedModel of random weights on ``device`` (weights drawn there: seconds even for 32B)."""
    from transformers import AutoModelForCausalLM

    from lesion.model.loading import LoadedModel
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).eval()
    lm = LoadedModel(model, tokenizer(), name, dtype)
    lm.__dict__["_weights_digest"] = f"random-{name}-{dtype}"  # hashing 65 GB would measure SHA-256
    return lm


def measure(name: str, config, planned, dtype: str, args) -> dict:
    """Every figure of one model in one dtype (``config`` and ``planned``, its plan's shapes, read once)."""
    from lesion.masking.ablation import masked_nll
    from lesion.heel import SearchPlan, search_heel
    from lesion.plan.estimate import make_plan
    from lesion.method.rankers import rank_by_noise
    from lesion.method.study import Study
    from lesion.texts.text import BOOKENDS

    start = time.perf_counter()
    lm = build(name, config, dtype, args.device)
    build_s = time.perf_counter() - start
    study = Study.create(lm, BOOKENDS)
    ids, index = study.input_ids, study.index
    stage1 = timed(lambda: rank_by_noise(lm.model, ids, index, samples=args.samples, batch_size=BATCH, seed=SEED,
                                         progress=False), args.device)
    bare = min(floor_seconds(lm.model, ids, args.samples, BATCH, ALPHA, SEED) for _ in range(2))
    sets = [[n] for n in index.neurons(range(args.rows))]
    rows = timed(lambda: masked_nll(lm.model, ids, index, sets, max_rows=32), args.device)
    heel = search_heel(lm, [BOOKENDS], SearchPlan(max_rows=args.search_rows, time_budget=args.search_budget_s),
                       progress=False, use_cache=False)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device == "cuda" else None

    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2 ** 30 if args.device == "cuda" else 0
    on_gpu = dict(gpus=1, gpu_memory=gpu_gib) if args.device == "cuda" else {}
    plan = make_plan(planned, tokens=ids.shape[1], samples=args.samples, dtype=dtype, **on_gpu)
    times = plan["time_s"]["gpu_assumed" if args.device == "cuda" else "cpu_this_machine"]
    row_s = rows / args.rows
    result = {
        "model": name, "dtype": dtype, "device": args.device, "tokens": ids.shape[1], "neurons": len(index),
        "build_s": sig(build_s), "stage1_s": sig(stage1), "floor_s": sig(bare), "stage1_over_floor": sig(stage1 / bare),
        "masked_rows_per_s": sig(args.rows / rows), "search_rows": heel.rows, "search_s": sig(heel.seconds),
        "search_rows_per_s": sig(heel.rows / max(heel.seconds, 1e-9)),
        "planned_stage1_s": sig(times["stage1"]), "planned_row_s": sig(times["per_masked_row"]),
        "stage1_measured_over_planned": sig(stage1 / times["stage1"], 3),
        "row_measured_over_planned": sig(row_s / times["per_masked_row"], 3),
        "effective_tflops_stage1": sig(plan["flops"]["stage1"] / stage1 / 1e12, 3),
        "effective_tflops_row": sig(plan["flops"]["masked_row"] / row_s / 1e12, 3),
    }
    if peak is not None:
        result["peak_gib"] = sig(peak, 3)
    lm = study = None  # the weights go before the next model is built
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def fits(planned, dtype: str, device: str) -> str | None:
    """Why the model cannot be built here (None: it fits, with a quarter of the memory to spare)."""
    if device != "cuda":
        return None
    need = planned.parameters * torch.tensor([], dtype=getattr(torch, dtype)).element_size() / 2 ** 30
    free = torch.cuda.mem_get_info()[0] / 2 ** 30
    return None if need * 1.25 <= free else f"weights {need:.0f} GiB, {free:.0f} GiB free"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"configs in {CONFIGS}")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--search-rows", type=int, default=400)
    p.add_argument("--search-budget-s", type=float, default=30.0, help="the search's time budget")
    p.add_argument("--budget-s", type=float, default=300.0, help="no model starts after this many seconds")
    p.add_argument("--tiny", action="store_true", help="small shapes from each config: checks the script")
    p.add_argument("--out", default=None, help="a JSON lines file for the results")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_scale.py: no CUDA device here: pass --device cpu --tiny to check the script")
    from lesion.plan.config import read_config
    from lesion.plan.shapes import shapes
    folder = Path(tempfile.mkdtemp(prefix="gpu-scale-"))  # the configs as built (``--tiny`` shrinks them)
    start = time.perf_counter()
    for dtype in args.dtypes:  # every model in the first dtype before any in the second
        for model in args.models:
            spent = time.perf_counter() - start
            if spent > args.budget_s:
                print(f"{model} {dtype}: skipped: {spent:.0f} s spent of --budget-s {args.budget_s:g}", flush=True)
                continue
            name, config = read_config(config=str(config_file(model, args.tiny, folder)))
            planned = shapes(name, config)
            why = fits(planned, dtype, args.device)
            if why:
                print(f"{model} {dtype}: skipped: does not fit ({why})", flush=True)
                continue
            result = measure(name, config, planned, dtype, args)
            print(json.dumps(result), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
