"""A plan for a study before any weight is read: neurons, memory, device map and time.

The model is built from its config on the meta device (no weights downloaded or read), so a
plan for a 72B model costs seconds. Memory and time come from shapes:

- weights: parameters x bytes per dtype;
- Stage 1 holds, per neuron and token, float32 clean activations, running sums and one
  batch's pending sums (3 x T x N x 4 bytes; ``--samples auto`` adds sums of squares and
  their pending batch: 5 x);
- one batch of masked rows holds float32 logits, vocab x T x rows x 4 bytes;
- time: a forward costs FLOPs ~ 2 x parameters x tokens (Stage 1 runs the decoder body,
  no LM head; a masked row runs the whole model), times seconds per FLOP measured on runs
  of this machine (CALIBRATION: the default model's measured figures), divided by the
  data-parallel ranks. GPU times use an *assumed* throughput (``--gpu-tflops``): no GPU
  has been measured.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import LesionError

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
DEFAULT_GPU_TFLOPS = 200.0  # assumed effective bfloat16 throughput of one H100-class GPU (not measured)
STAGE2_ROW_BATCH = 8  # find_critical_set's widest chunk
LOGIT_BYTES = 2 ** 29  # heel.scorer's cap on one batch's float32 logits


@dataclass(frozen=True)
class Shapes:
    """What a plan needs from a model: parameter counts and its neuron sites."""
    name: str
    model_type: str
    parameters: int
    body_parameters: int  # what Stage 1 runs: all but the input embedding and an untied LM head
    head_parameters: int  # the LM head's matmul (vocab x hidden), tied or not
    vocab: int
    layers: int
    neurons: dict[str, int]  # component kind -> neurons
    model: object  # the meta model (for the device map)
    hidden: int = 0  # residual width: wider matrices run faster per FLOP (see WIDTH_EXPONENT)


def read_config(model: str | None = None, config: str | None = None):
    """(name, transformers config) from a config.json (``config``) or a model spec, reading
    no weights: a GGUF alias or file gives its metadata (or its dequantised cache's config)."""
    from transformers import AutoConfig
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise LesionError(f"--config {config!r} is not a file: pass a model's config.json")
        try:
            values = json.loads(path.read_text())
        except ValueError as e:
            raise LesionError(f"--config {config!r} is not JSON ({e}): pass a model's config.json") from None
        values = {k: v for k, v in values.items() if not k.startswith("_")}
        if "model_type" not in values:
            raise LesionError(f"--config {config!r} has no model_type: pass a transformers config.json")
        try:
            return path.stem, AutoConfig.for_model(**values)
        except ValueError as e:
            raise LesionError(f"--config {config!r}: {e}") from None
    from .loading import _gguf_cache, resolve
    from .options import DEFAULT_MODEL
    spec = model or DEFAULT_MODEL
    folder, gguf = resolve(spec)
    if gguf is None:
        return spec, AutoConfig.from_pretrained(folder)
    cached = _gguf_cache(folder, gguf) / "config.json"
    if cached.is_file():
        return spec, AutoConfig.from_pretrained(cached.parent)
    return spec, AutoConfig.from_pretrained(folder, gguf_file=gguf)  # the GGUF header, no tensors


def shapes(name: str, config, components: str | None = None) -> Shapes:
    """The meta model's parameter counts and neurons by component kind."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from .neurons import discover_sites
    with init_empty_weights():
        meta = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    embed = meta.get_input_embeddings().weight
    head = meta.get_output_embeddings().weight
    # A meta model built from a config does not tie its head (transformers ties at load): the
    # config says whether the loaded model holds one matrix or two.
    tied = head is embed or bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    total = sum(p.numel() for p in meta.parameters()) - (head.numel() if tied and head is not embed else 0)
    body = total - embed.numel() - (0 if tied else head.numel())
    index = discover_sites(meta, components)
    neurons: dict[str, int] = {}
    for site in index.sites:
        neurons[site.kind] = neurons.get(site.kind, 0) + site.width
    return Shapes(name, config.model_type, total, body, head.numel(), head.shape[0],
                  getattr(config, "num_hidden_layers", 0), neurons, meta,
                  int(getattr(config.get_text_config(), "hidden_size", 0) or 0))


def device_map(s: Shapes, gpus: int, gpu_gib: float, dtype: str, reserve_gib: float) -> dict:
    """accelerate's placement of one copy of the model on ``gpus`` GPUs of ``gpu_gib`` each,
    keeping ``reserve_gib`` per GPU free for Stage 1's state and a batch of masked rows."""
    import torch
    from accelerate import infer_auto_device_map
    room = gpu_gib - reserve_gib
    if room <= 0:
        return {"fits": False, "gpus": gpus, "why": f"the working memory ({reserve_gib:.1f} GiB per GPU) "
                                                      f"exceeds {gpu_gib:g} GiB"}
    memory = {i: int(room * GIB) for i in range(gpus)}
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
    return {"fits": on_gpu == s.parameters, "gpus": gpus, "gpu_gib": gpu_gib, "reserve_gib": round(reserve_gib, 2),
            "weights_gib": {d: round(n * BYTES[dtype] / GIB, 2) for d, n in sorted(per_device.items())},
            "blocks": dict(sorted(blocks.items())),
            "used_gpus": len([d for d in per_device if d not in ("cpu", "disk")])}


def make_plan(s: Shapes, *, tokens: int = 49, samples: int = 100, adaptive: bool = False, gpus: int = 0,
              gpu_gib: float = 80.0, dtype: str = "bfloat16", stage2_rows: int = 100, search_rows: int = 1000,
              ranks: int | None = None, gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> dict:
    """Memory, placement and time of a study; ``ranks`` data-parallel copies (default: as many
    as the GPUs hold, else 1)."""
    if tokens < 1 or samples < 1 or gpus < 0 or gpu_gib <= 0 or stage2_rows < 0 or search_rows < 0:
        raise LesionError("need --tokens >= 1, --samples >= 1, --gpus >= 0 and --gpu-memory > 0")
    if dtype not in BYTES:
        raise LesionError(f"unknown dtype {dtype!r}: use one of {', '.join(BYTES)}")
    n = sum(s.neurons.values())
    per_set = tokens * n * 4
    stage1_bytes = (5 if adaptive else 3) * per_set
    search_batch = max(1, min(64, LOGIT_BYTES // (4 * s.vocab * tokens)))
    rows_bytes = {"stage2": s.vocab * tokens * STAGE2_ROW_BATCH * 4, "search": s.vocab * tokens * search_batch * 4}
    stage1_flops = 2 * s.body_parameters * tokens * samples
    row_flops = 2 * (s.body_parameters + s.head_parameters) * tokens
    plan = {
        "model": s.name, "model_type": s.model_type, "parameters": s.parameters, "layers": s.layers,
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
    working = (stage1_bytes + max(rows_bytes.values())) / GIB
    copies = 1
    if gpus:
        placement = device_map(s, gpus, gpu_gib, dtype, working * 1.1)
        # The fewest GPUs one copy needs; the others hold more data-parallel copies.
        per_copy = placement.get("used_gpus", gpus) if placement["fits"] else gpus
        copies = max(1, gpus // max(1, per_copy)) if placement["fits"] else 0
        plan["device_map"] = placement
        plan["data_parallel_ranks"] = copies
    ranks = ranks or copies or 1
    cpu = CALIBRATION
    plan["time_s"] = {
        "cpu_this_machine": _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks if not gpus else 1,
                                   cpu["stage1_s_per_flop"] * width_factor(s.hidden, "stage1"),
                                   cpu["row_s_per_flop"] * width_factor(s.hidden, "row")),
        "calibration": cpu["source"],
    }
    if gpus:
        spf = 1.0 / (gpu_tflops * 1e12)
        plan["time_s"]["gpu_assumed"] = _times(stage1_flops, row_flops, stage2_rows, search_rows, ranks, spf, spf)
        plan["time_s"]["gpu_assumption"] = (f"{gpu_tflops:g} TFLOPS effective per model copy (assumed; a 135M "
                                            "model measured about 17 on one H100, docs/plan.md)")
    plan["time_s"]["rows"] = {"stage2": stage2_rows, "search": search_rows, "ranks": ranks}
    return plan


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
