"""Arguments and steps that several subcommands share."""
from __future__ import annotations

import argparse
import os

from rich.console import Console

from ..errors import LesionError

console = Console(highlight=False)


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m",
                   help="alias (smollm2-135m, gemma3-270m), local folder, .gguf file or hub id")
    g.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    g.add_argument("--device-map", default=None, help="'auto' to shard/offload a large model with accelerate")


def add_text_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text")
    g.add_argument("--text", default=None, help="input text (default: the authors' Bookends sentence)")
    g.add_argument("--text-file", default=None, help="read the input text from this file")


def add_components_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--components", default=None,
                   help="comma-separated kinds (q,k,v,o,qkv,gate,up,gate_up,down,act,norm,ln,other) "
                        "or groups (attn, mlp, default, all)")


def add_stage1_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stage 1 (ranking)")
    g.add_argument("--ranker", default="noise", help="noise | activation | gradient | random")
    g.add_argument("--alpha", type=float, default=5.0, help="noise scale (paper: 5)")
    g.add_argument("--alpha-relative", action="store_true",
                   help="alpha in units of the RMS of the clean embeddings instead of absolute")
    g.add_argument("--samples", default="100",
                   help="noise samples K (paper: 100), or 'auto': stop once the head of the ranking is "
                        "settled at 95%% confidence, at most --max-samples")
    g.add_argument("--max-samples", type=int, default=100, help="cap on K for --samples auto")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--reduce", default="max", choices=["max", "mean"],
                   help="channel score over positions: max (the authors' order) or mean")
    g.add_argument("--batch-size", type=int, default=16, help="noise samples per forward pass")
    g.add_argument("--keep", type=int, default=5000, help="how many top neurons ranking.json keeps")
    g.add_argument("--no-cache", action="store_true", help="recompute stage 1 even if its scores are cached")


def add_stage2_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stage 2 (greedy masking)")
    g.add_argument("--epsilon", type=float, default=1.0, help="Delta threshold, log10 PPL ratio (paper: 1)")
    g.add_argument("--step", type=int, default=1, help="n grows by this much per step (paper: 1)")
    g.add_argument("--max-neurons", type=int, default=1000, help="cap on candidates tried")
    g.add_argument("--stage2", default="linear", choices=["linear", "gallop"],
                   help="linear: every n, the paper's exact first crossing (default); gallop: n = 1, 2, "
                        "4, ... then every n inside the bracket, fewer rows, exact when Delta is monotone")


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars (accepted by every command)")


def check_stage1(args) -> None:
    if args.alpha <= 0:
        raise LesionError(f"--alpha must be > 0 (got {args.alpha}): the paper uses 5")
    if args.samples != "auto":
        if not str(args.samples).lstrip("-").isdigit():
            raise LesionError(f"--samples must be a number or 'auto' (got {args.samples!r}): the paper uses 100")
        args.samples = int(args.samples)
        if args.samples < 1:
            raise LesionError(f"--samples must be >= 1 (got {args.samples}): the paper uses 100")
    elif args.max_samples < 2:
        raise LesionError(f"--max-samples must be >= 2 for --samples auto (got {args.max_samples})")
    if args.batch_size < 1 or args.keep < 1:
        raise LesionError("--batch-size and --keep must be >= 1")


def check_stage2(args) -> None:
    if args.epsilon <= 0:
        raise LesionError(f"--epsilon must be > 0 (got {args.epsilon}): the paper uses 1")
    if args.step < 1:
        raise LesionError(f"--step must be >= 1 (got {args.step})")
    if args.max_neurons < 1:
        raise LesionError(f"--max-neurons must be >= 1 (got {args.max_neurons})")


def load(args):
    """Load the model named by the model arguments (after cheap argument checks)."""
    from ..loading import load_model
    if args.device_map is None and args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise LesionError(f"--device {args.device} asked for but no CUDA device is available: use --device cpu")
    return load_model(args.model, dtype=args.dtype, device=args.device, device_map=args.device_map,
                      progress=progress_enabled(args))


def progress_enabled(args) -> bool:
    return not getattr(args, "quiet", False) and os.environ.get("LESION_NO_PROGRESS") is None


def fmt(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def load_critical(path: str, lm) -> list:
    """The neurons of a critical.json, checked against the loaded model."""
    from ..neurons import discover_sites
    from ..pipeline import check_same_model
    from ..results import CriticalSet

    critical = CriticalSet.load(path)
    if not critical.neurons:
        raise LesionError(f"{path} has no neurons (its search did not reach epsilon): pass a critical.json "
                          "whose 'reached' is true, or re-run lesion scan with a larger --max-neurons")
    check_same_model(critical.settings, lm, "critical set")
    discover_sites(lm.model, "all").check(critical.neurons)
    return list(critical.neurons)
