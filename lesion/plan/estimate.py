"""A plan for a study before any weight is read: neurons, memory, device map and time.

The config is read as JSON (never through code shipped with the model: a config whose
``auto_map`` names such code is refused), every field the plan uses is checked, and the model
is built from it on the meta device: no weight is downloaded or read, and no forward runs, so
a plan for a 72B model, or a 671B mixture of experts, costs seconds. Neurons are counted from
the modules' shapes (the same sites ``lesion.model.neurons.discover_sites`` finds, tested against
it), and a mixture of experts counts every routed expert's neurons. Memory and time come from
shapes:

- weights: parameters x bytes per dtype (all experts);
- Stage 1 holds, per neuron and token, float32 clean activations, running sums and one
  batch's pending sums (3 x T x N x 4 bytes; ``--samples auto`` adds sums of squares and
  their pending batch: 5 x);
- one batch of masked rows holds float32 logits, vocab x T x rows x 4 bytes;
- time: a forward costs FLOPs ~ 2 x active parameters x tokens (a mixture of experts runs
  only the experts its router picks for a token; Stage 1 runs the decoder body, no LM head; a
  masked row runs the whole model), times seconds per FLOP measured on runs of this machine
  (CALIBRATION: the default model's measured figures), divided by the data-parallel ranks. GPU
  times use an *assumed* throughput (``gpu_tflops``): no GPU has been measured."""
from __future__ import annotations

import logging
import math

from ..errors import ParameterError
from .config import read_config
from .shapes import Shapes, shapes

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2 ** 30

# Wall seconds per FLOP of this project's machine (2 CPU cores, float32, quiet), from the
# default model's measured figures in docs/speed.md (benchmarks/speed.py): Stage 1, K = 100,
# 49 tokens, 1.041e12 FLOPs in 6.02 s; full-forward masked rows, 13.5 rows/s of 1.318e10
# FLOPs each. Validated out of sample on Gemma 3 270M in docs/plan.md.
CALIBRATION = {
    "stage1_s_per_flop": 5.78e-12,
    "row_s_per_flop": 5.62e-12,
    "source": "calibrated on SmolLM2-135M's measured Stage 1 and masked rows, 2 quiet CPU cores (docs/plan.md)",
}
# Seconds per FLOP fall with the model's width on this CPU (wider matrices use its vector units
# better): one thread's CPU seconds per FLOP, SmolLM2 (hidden 576) against Qwen2.5-Coder-1.5B
# (hidden 1536), measured with benchmarks/plan_calibration.py, give s/FLOP ~ hidden^-0.40 in
# Stage 1 and hidden^-0.43 in masked rows. Applied between the two measured widths only (no
# extrapolation); validated out of sample on Gemma 3 270M and a Qwen2 0.5B (docs/plan.md).
WIDTH_EXPONENT = {"stage1": -0.40, "row": -0.43}
CALIBRATED_WIDTHS = (576, 1536)
DEFAULT_GPU_GIB = 80.0  # one H100-class GPU's memory, where `gpus` is given without `gpu_memory`
DEFAULT_GPU_TFLOPS = 200.0  # assumed effective bfloat16 throughput of one H100-class GPU (not measured)
STAGE2_ROW_BATCH = 8  # find_critical_set's widest chunk
LOGIT_BYTES = 2 ** 29  # heel.scorer's cap on one batch's float32 logits

# Bounds on the options: far beyond any study, they only catch typos (a plan is closed-form, so
# none of them bounds a loop except `gpus`, which places one copy on at most layers + 2 GPUs).
MAX_SAMPLES = 100_000  # scan's cap on K
MAX_GPUS = 1_000_000
MAX_GPU_GIB = 1e6  # GiB per GPU: a petabyte
MAX_GPU_TFLOPS = 1e6
MAX_ROWS = 10 ** 9
MAX_TOKENS = 2 ** 27  # with no context length in the config; otherwise the context is the bound


# --- the plan ----------------------------------------------------------------------------------

def plan_study(model: str | None = None, config: str | None = None, components: str | None = None,
               **options) -> dict:
    """The plan of a study of ``model`` (or of a ``config`` file): the options are checked
    first, then the config is read and checked, then memory, placement and time are planned
    (:func:`make_plan` takes the options)."""
    if model is not None and config is not None:
        raise ParameterError("config", "cannot be given with `model`: pass one")
    check_options(**options)
    from ..model.architectures import resolve_components
    resolve_components(components)  # before the config is read
    name, built = read_config(model, config)
    return make_plan(shapes(name, built, components), **options)


def check_options(*, tokens: int = 49, samples: int | str = 100, gpus: int = 0, gpu_memory: float | None = None,
                  dtype: str = "bfloat16", stage2_rows: int = 100, search_rows: int = 1000, ranks: int | None = None,
                  gpu_tflops: float | None = None) -> None:
    """Every option of a plan, before any config is read: integers that are integers, within
    bounds; GPU memory and throughput positive and finite; the GPU options (memory, throughput,
    ranks) only with ``gpus``: without GPUs the plan is for this machine's CPU, which more
    processes would share, not multiply."""
    _integer("tokens", tokens, 1, MAX_TOKENS, ": the Bookends text is 49 tokens on SmolLM2")
    if samples != "auto":
        _integer("samples", samples, 1, MAX_SAMPLES, " (or 'auto'): the paper uses 100")
    _integer("gpus", gpus, 0, MAX_GPUS, " (0 plans for this CPU only)")
    if gpu_memory is not None:
        _positive("gpu_memory", gpu_memory, MAX_GPU_GIB, ": the memory of one GPU in GiB, e.g. 80")
    if dtype not in BYTES:
        raise ParameterError("dtype", f"must be one of {', '.join(BYTES)} (got {dtype!r})")
    _integer("stage2_rows", stage2_rows, 0, MAX_ROWS, "")
    _integer("search_rows", search_rows, 0, MAX_ROWS, "")
    if ranks is not None:
        _integer("ranks", ranks, 1, MAX_GPUS, ": leave it out for the copies the GPUs hold")
    if gpu_tflops is not None:
        _positive("gpu_tflops", gpu_tflops, MAX_GPU_TFLOPS, f": leave it out for the default, {DEFAULT_GPU_TFLOPS:g}")
    for name, value in (("gpu_memory", gpu_memory), ("gpu_tflops", gpu_tflops), ("ranks", ranks)):
        if value is not None and not gpus:
            raise ParameterError(name, "is for a plan on GPUs: give `gpus` too (without GPUs the plan is for "
                                       "this machine's CPU, whose cores more processes share, not multiply)")


def _integer(name: str, value, low: int, high: int, hint: str) -> None:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not low <= value <= high:
        raise ParameterError(name, f"must be an integer from {low:,} to {high:,} (got {value!r}){hint}")


def _positive(name: str, value, high: float, hint: str) -> None:
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 < value <= high:
        raise ParameterError(name, f"must be a finite number > 0 and at most {high:g} (got {value!r}){hint}")


def make_plan(s: Shapes, *, tokens: int = 49, samples: int | str = 100, gpus: int = 0, gpu_memory: float | None = None,
              dtype: str = "bfloat16", stage2_rows: int = 100, search_rows: int = 1000, ranks: int | None = None,
              gpu_tflops: float | None = None) -> dict:
    """Memory, placement and time of a study; ``samples`` K or "auto" (planned at its cap,
    100); ``ranks`` data-parallel copies (default: as many as the GPUs hold, else 1);
    ``gpu_tflops`` the assumed throughput of one copy (default DEFAULT_GPU_TFLOPS); ``gpu_memory``
    GiB per GPU (default DEFAULT_GPU_GIB). Where one copy does not fit the GPUs, no GPU time is planned."""
    check_options(tokens=tokens, samples=samples, gpus=gpus, gpu_memory=gpu_memory, dtype=dtype,
                  stage2_rows=stage2_rows, search_rows=search_rows, ranks=ranks, gpu_tflops=gpu_tflops)
    if s.context is not None and tokens > s.context:
        raise ParameterError("tokens", f"must be at most the model's context, {s.context:,} tokens "
                                       f"(max_position_embeddings; got {tokens:,}): the text cannot fit")
    adaptive = samples == "auto"
    samples = 100 if adaptive else int(samples)
    n = sum(s.neurons.values())
    per_set = tokens * n * 4
    stage1_bytes = (5 if adaptive else 3) * per_set
    search_batch = max(1, min(64, LOGIT_BYTES // (4 * s.vocab * tokens)))
    rows_bytes = {"stage2": s.vocab * tokens * STAGE2_ROW_BATCH * 4, "search": s.vocab * tokens * search_batch * 4}
    active_body = s.active_body_parameters or s.body_parameters
    stage1_flops = 2 * active_body * tokens * samples
    row_flops = 2 * (active_body + s.head_parameters) * tokens
    plan = {
        "model": s.name, "model_type": s.model_type, "parameters": s.parameters,
        "active_parameters": s.active_parameters or s.parameters, "layers": s.layers, "context": s.context,
        "neurons": {"total": n, **dict(sorted(s.neurons.items()))},
        "tokens": tokens, "samples": "auto" if adaptive else samples,
        "memory_gib": {
            "weights": {d: round(s.parameters * b / GIB, 2) for d, b in BYTES.items()},
            "stage1_state": round(stage1_bytes / GIB, 3),
            "stage1_state_terms": f"{5 if adaptive else 3} x tokens x neurons x 4 B (clean, sums, pending"
                                  f"{', squares, pending squares' if adaptive else ''})",
            "masked_rows_stage2": round(rows_bytes["stage2"] / GIB, 3),
            "masked_rows_search": round(rows_bytes["search"] / GIB, 3),
            "rows_per_batch": {"stage2": STAGE2_ROW_BATCH, "search": search_batch},
        },
        "flops": {"stage1": stage1_flops, "masked_row": row_flops},
    }
    if s.moe is not None:
        plan["moe"] = s.moe
        plan["memory_gib"]["routed_experts"] = {d: round(s.moe["parameters"]["routed_experts"] * b / GIB, 2)
                                                for d, b in BYTES.items()}
    if s.uncounted:
        plan["uncounted_modules"] = list(s.uncounted)
    working = (stage1_bytes + max(rows_bytes.values())) / GIB
    copies = 1
    if gpus:
        placement = device_map(s, gpus, DEFAULT_GPU_GIB if gpu_memory is None else gpu_memory, dtype, working * 1.1)
        # The fewest GPUs one copy needs; the others hold more data-parallel copies.
        copies = gpus // placement["used_gpus"] if placement["fits"] else 0
        plan["device_map"] = placement
        plan["data_parallel_ranks"] = copies
        if ranks is not None and ranks > copies:
            raise ParameterError("ranks", f"must be at most the copies the GPUs hold ({copies}; got {ranks}): "
                                          "give more `gpus` (or `gpu_memory`) or fewer ranks")
    plan["cpu_fit"] = cpu_fit({d: s.parameters * b / GIB for d, b in BYTES.items()}, working, dtype)
    ranks = ranks or copies or 1
    cpu = CALIBRATION
    plan["time_s"] = {
        "cpu_this_machine": _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks if not gpus else 1,
                                   cpu["stage1_s_per_flop"] * width_factor(s.hidden, "stage1"),
                                   cpu["row_s_per_flop"] * width_factor(s.hidden, "row")),
        "calibration": cpu["source"],
    }
    if gpus and copies:
        tflops = DEFAULT_GPU_TFLOPS if gpu_tflops is None else gpu_tflops
        spf = 1.0 / (tflops * 1e12)
        plan["time_s"]["gpu_assumed"] = _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks, spf, spf)
        plan["time_s"]["gpu_assumption"] = (f"{tflops:g} TFLOPS effective per model copy (assumed; a 135M "
                                            "model measured about 17 on one H100, docs/plan.md)")
    plan["time_s"]["rows"] = {"stage2": stage2_rows, "search": search_rows, "ranks": ranks}
    return plan


def host_memory_gib() -> tuple[float, float]:
    """This machine's (MemTotal, MemAvailable) in GiB, from /proc/meminfo; (0, 0) where unreadable."""
    figures = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                figures[key] = int(value.split()[0]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    return figures.get("MemTotal", 0.0), figures.get("MemAvailable", 0.0)


def cpu_fit(weights_gib: dict[str, float], working_gib: float, dtype: str) -> dict:
    """Whether a study in ``dtype`` fits this machine's available memory (weights plus Stage 1's
    state and a batch of masked rows), and where it does not, what would: a smaller dtype that
    fits, else ``--device-map auto`` (weights offloaded to disk) or the 80 GiB GPUs it needs."""
    total, available = host_memory_gib()
    needs = {d: round(w + working_gib, 2) for d, w in weights_gib.items()}
    fits = {d: need <= available for d, need in needs.items()}
    advice = ""
    if not fits[dtype]:
        smaller = [d for d in ("bfloat16", "float16") if fits[d] and needs[d] < needs[dtype]]
        gpus = math.ceil(needs["bfloat16"] / (DEFAULT_GPU_GIB * 0.9))
        advice = (f"dtype {smaller[0]}" if smaller else f"device_map auto (weights offloaded to disk), "
                                                         f"or {gpus} GPU(s) of {DEFAULT_GPU_GIB:g} GiB in bfloat16")
    return {"dtype": dtype, "fits": fits[dtype], "needs_gib": needs, "total_gib": round(total, 2),
            "available_gib": round(available, 2), "advice": advice}


def device_map(s: Shapes, gpus: int, gpu_gib: float, dtype: str, reserve_gib: float) -> dict:
    """accelerate's placement of one copy of the model on ``gpus`` GPUs of ``gpu_gib`` each,
    keeping ``reserve_gib`` per GPU free for Stage 1's state and a batch of masked rows. One
    copy never spreads over more GPUs than it has blocks plus two (embedding, head), so at most
    that many are placed: a million GPUs cost what a hundred do."""
    import torch
    from accelerate import infer_auto_device_map
    room = gpu_gib - reserve_gib
    if room <= 0:
        return {"fits": False, "gpus": gpus, "why": f"the working memory ({reserve_gib:.1f} GiB per GPU) "
                                                      f"exceeds {gpu_gib:g} GiB"}
    placed_gpus = min(gpus, s.layers + 2)
    memory: dict = {i: int(room * GIB) for i in range(placed_gpus)}
    memory["cpu"] = 10 ** 15  # what does not fit lands on the CPU, which says it does not fit
    # accelerate warns that the planned GPUs are not on this machine: planning for them is the point
    quiet = logging.getLogger("accelerate.utils.modeling")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        placed = infer_auto_device_map(s.model, max_memory=memory, dtype=getattr(torch, dtype),
                                       no_split_module_classes=getattr(s.model, "_no_split_modules", None) or [])
    finally:
        quiet.setLevel(level)
    per_device: dict[str, int] = {}
    for module, device in placed.items():
        count = sum(p.numel() for p in s.model.get_submodule(module).parameters()) if module else s.parameters
        per_device[str(device)] = per_device.get(str(device), 0) + count
    on_gpu = sum(v for k, v in per_device.items() if k not in ("cpu", "disk"))
    blocks = {str(d): sum(1 for m, dd in placed.items() if dd == d and m.split(".")[-1].isdigit())
              for d in set(placed.values())}
    if "" in placed:  # the whole model on one device: accelerate names no block
        blocks = {str(placed[""]): s.layers}
    return {"fits": on_gpu == s.parameters, "gpus": gpus, "gpu_gib": gpu_gib, "reserve_gib": round(reserve_gib, 2),
            "weights_gib": {d: round(n * BYTES[dtype] / GIB, 2) for d, n in sorted(per_device.items())},
            "blocks": dict(sorted(blocks.items())),
            "used_gpus": max(1, len([d for d in per_device if d not in ("cpu", "disk")]))}


def width_factor(hidden: int, part: str) -> float:
    """How much faster per FLOP than SmolLM2's width a model of residual width ``hidden`` runs."""
    low, high = CALIBRATED_WIDTHS
    if hidden <= 0:
        return 1.0
    return (min(max(hidden, low), high) / low) ** WIDTH_EXPONENT[part]


def _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks, s1, row) -> dict:
    return {"stage1": stage1_flops * s1 / ranks, "per_masked_row": row_flops * row,
            "stage2": stage2_rows * row_flops * row / ranks, "search": search_rows * row_flops * row / ranks}


def human_bytes(gib: float) -> str:
    return f"{gib * 1024:.0f} MiB" if gib < 1 else f"{gib:.1f} GiB"


def human_seconds(s: float) -> str:
    if s < 0.1:
        return f"{s * 1000:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
