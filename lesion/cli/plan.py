"""`lesion plan`: neurons, memory, device map and time of a study, from the config alone."""
from __future__ import annotations

import argparse
import json

from .common import add_common_flags, console
from .tables import shown, styled

PLAN_EXAMPLES = """examples:
  lesion plan                                       # the default model on this CPU
  lesion plan --model gemma3-270m --samples auto
  lesion plan --config tests/data/configs/llama-3.1-70b.json --gpus 8 --gpu-memory 80
  lesion plan --config tests/data/configs/qwen2.5-72b.json --gpus 4 --gpu-memory 80 --json
"""


def register(sub) -> None:
    p = sub.add_parser("plan", help="memory, device map and time of a study, before reading any weight",
                       epilog=PLAN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="alias, local folder, .gguf file or hub id (config read only)")
    src.add_argument("--config", default=None, help="a model's config.json instead of --model")
    p.add_argument("--components", default=None, help="neuron components, as for scan (default: default)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs to plan for (0: this CPU only)")
    p.add_argument("--gpu-memory", type=float, default=None, metavar="GB",
                   help="memory of each GPU in GiB (default 80)")
    p.add_argument("--gpu-tflops", type=float, default=None,
                   help="assumed effective TFLOPS of one model copy on the GPUs (default 200; a 135M model "
                        "measured about 17 on one H100)")
    p.add_argument("--dtype", default="bfloat16", help="weights' dtype (float32, bfloat16, float16): on the GPUs, and "
                                                        "whether this machine holds them")
    p.add_argument("--tokens", type=int, default=49, help="text length in tokens (49: Bookends on SmolLM2)")
    p.add_argument("--samples", default="100", help="Stage 1 noise samples K, or 'auto' (planned at its cap, 100)")
    p.add_argument("--stage2-rows", type=int, default=100, help="masked rows Stage 2 runs (about n*)")
    p.add_argument("--search-rows", type=int, default=1000, help="masked rows a heel search runs")
    p.add_argument("--ranks", type=int, default=None, help="data-parallel ranks (default: copies the GPUs hold)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_common_flags(p)
    p.set_defaults(run=run_plan)


def run_plan(args) -> int:
    from ..plan.estimate import plan_study
    plan = plan_study(args.model, args.config, args.components, tokens=args.tokens, samples=args.samples,
                      gpus=args.gpus, gpu_memory=args.gpu_memory, dtype=args.dtype, stage2_rows=args.stage2_rows,
                      search_rows=args.search_rows, ranks=args.ranks, gpu_tflops=args.gpu_tflops)
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        print_plan(plan)
    return 0


def print_plan(plan: dict) -> None:
    from rich.table import Table

    from ..plan.estimate import human_bytes, human_seconds
    neurons = plan["neurons"]
    moe = plan.get("moe")
    active = f" ({plan['active_parameters'] / 1e9:.3g} B active per token)" if moe else ""
    console.print(styled((shown(plan["model"]), "bold"), f" ({plan['model_type']}): {plan['parameters'] / 1e9:.3g} B "
                         f"parameters{active}, {plan['layers']} layers, {neurons['total']:,} neurons; "
                         f"{plan['tokens']} tokens, K = {plan['samples']}"))
    if moe:
        experts = moe["neurons"]
        console.print(f"mixture of experts: {moe['moe_layers']} MoE layers ({moe['dense_layers']} dense), "
                      f"{moe['experts']} routed experts, {moe['experts_per_token']} per token, "
                      f"{moe['shared_experts']} shared; neurons: routed experts {experts['routed_experts']:,}, "
                      f"shared experts {experts['shared_experts']:,}, router logits {experts['router']:,}, "
                      f"MoE block outputs {experts['block_output']:,}")
    if plan.get("uncounted_modules"):
        console.print(styled(("not counted", "red"),
                             f" (weights of no known layout): {', '.join(plan['uncounted_modules'])}"))
    table = Table("component", "neurons")
    for kind, count in neurons.items():
        if kind != "total":
            table.add_row(kind, f"{count:,}")
    console.print(table)
    mem = plan["memory_gib"]
    table = Table("memory", "size")
    for dtype, gib in mem["weights"].items():
        table.add_row(f"weights, {dtype}", human_bytes(gib))
    if "routed_experts" in mem:
        table.add_row("of which all routed experts, bfloat16", human_bytes(mem["routed_experts"]["bfloat16"]))
    table.add_row(f"Stage 1 state ({mem['stage1_state_terms']})", human_bytes(mem["stage1_state"]))
    rows = mem["rows_per_batch"]
    table.add_row(f"masked rows, Stage 2 batch of {rows['stage2']} (float32 logits)",
                  human_bytes(mem["masked_rows_stage2"]))
    table.add_row(f"masked rows, search batch of {rows['search']}", human_bytes(mem["masked_rows_search"]))
    console.print(table)
    fit = plan["cpu_fit"]
    if fit["fits"]:
        console.print(f"this machine: {fit['dtype']} needs {fit['needs_gib'][fit['dtype']]:g} GiB of "
                      f"{fit['available_gib']:g} GiB available: fits")
    else:
        console.print(f"this machine: [red]does not fit[/red]: {fit['dtype']} needs "
                      f"{fit['needs_gib'][fit['dtype']]:g} GiB, {fit['available_gib']:g} of {fit['total_gib']:g} "
                      f"GiB available; would fit: {fit['advice']}")
    if "device_map" in plan:
        dm = plan["device_map"]
        if dm.get("weights_gib") is None:
            console.print(styled(("does not fit", "red"), f": {dm['why']}"))
        else:
            fit = ("fits",) if dm["fits"] else (("does not fit", "red"), " (the rest lands on the CPU)")
            console.print(styled(f"device map, {dm['gpus']} GPU(s) of {dm['gpu_gib']:g} GiB, {dm['reserve_gib']:g} "
                                 "GiB kept free on each: one copy ", *fit, "; " + ", ".join(
                                     f"{d}: {g:g} GiB, {dm['blocks'].get(d, 0)} blocks"
                                     for d, g in dm["weights_gib"].items())))
            console.print(f"data-parallel ranks (copies the GPUs hold): {plan['data_parallel_ranks']}")
    times = plan["time_s"]
    columns = ("cpu_this_machine", "gpu_assumed")
    table = Table("time", *(c.replace("_", " ") for c in columns if c in times))
    for step, label in (("stage1", "Stage 1"), ("per_masked_row", "one masked row"),
                        ("stage2", f"Stage 2 ({times['rows']['stage2']} rows)"),
                        ("search", f"search ({times['rows']['search']} rows)")):
        table.add_row(label, *(human_seconds(times[k][step]) for k in columns if k in times))
    console.print(table)
    console.print(f"CPU: {times['calibration']}")
    if "gpu_assumption" in times:
        console.print(f"GPU: {times['gpu_assumption']}, {times['rows']['ranks']} rank(s)")
    elif "device_map" in plan:
        console.print("GPU: no time planned: one copy does not fit these GPUs")
