"""Arguments and steps that several subcommands share."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime.anytime import Stopped
from ..runtime.options import DEFAULT_DTYPE, DEFAULT_MODEL, DTYPES, STAGE2
from ..method.scorers import RANKERS
from .tables import DataConsole

if TYPE_CHECKING:
    from ..results.settings import Settings

console = DataConsole()  # every string shown as data: never markup, control characters escaped


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="alias (smollm2-135m, gemma3-270m), local folder, .gguf file or hub id (default: the "
                        f"model of the run or result read, else {DEFAULT_MODEL})")
    g.add_argument("--revision", default=None,
                   help="a hub id's branch, tag or commit (default: the commit of the run or result read, else "
                        "main); the commit loaded is recorded in every result")
    g.add_argument("--dtype", default=None,
                   help=f"{' | '.join(DTYPES)}; default: the dtype of the run or result read, else {DEFAULT_DTYPE}")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    g.add_argument("--device-map", default=None, help="'auto' to shard/offload a large model with accelerate")
    g.add_argument("--partial-view", action="store_true",
                   help="study a model whose MLP or experts lesion cannot fully see (refused otherwise); "
                        "the results record what was not seen")


def add_text_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text")
    g.add_argument("--text", default=None, help="input text (default: the authors' Bookends sentence)")
    g.add_argument("--text-file", default=None, help="read the input text from this file")


def add_components_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--components", default=None,
                   help="comma-separated kinds (q,k,v,o,qkv,gate,up,gate_up,down,act,norm,ln,other) "
                        "or groups (attn, mlp, default, all)")
    p.add_argument("--unit", default="neuron", choices=["neuron", "expert"],
                   help="neuron (default), or expert: whole experts of a mixture-of-experts model as the units "
                        "(masking one takes it out of its block)")


def add_stage1_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stage 1 (ranking)")
    g.add_argument("--ranker", default="noise", type=ranker_name, choices=RANKERS, metavar="RANKER",
                   help="%(choices)s (noise is the paper's; the others are baselines)")
    g.add_argument("--alpha", type=float, default=5.0, help="noise scale (paper: 5)")
    g.add_argument("--alpha-relative", action="store_true",
                   help="alpha in units of the RMS of the clean embeddings instead of absolute")
    g.add_argument("--samples", default="100",
                   help="noise samples K (paper: 100), or 'auto': stop once the head of the ranking (and, "
                        "in scan, the top Stage 2 read) is settled at 95%% confidence, at most --max-samples")
    g.add_argument("--max-samples", type=int, default=None, help="cap on K for --samples auto (default 100)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--reduce", default="max", choices=["max", "mean"],
                   help="channel score over positions: max (the authors' order) or mean")
    g.add_argument("--batch-size", type=int, default=16, help="noise samples per forward pass")
    g.add_argument("--keep", type=int, default=5000, help="how many top neurons ranking.json keeps")
    g.add_argument("--no-cache", action="store_true", help="recompute stage 1 even if its scores are cached")


def add_noise_args(g) -> None:
    """The noise ranking's scale, sample count and seed, for commands that rank as a step."""
    g.add_argument("--alpha", type=float, default=5.0, help="noise scale (paper: 5)")
    g.add_argument("--samples", type=int, default=100, help="noise samples K (paper: 100)")
    g.add_argument("--seed", type=int, default=42)


def add_stage2_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stage 2 (greedy masking)")
    g.add_argument("--epsilon", type=float, default=1.0, help="Delta threshold, log10 PPL ratio (paper: 1)")
    g.add_argument("--step", type=int, default=1, help="n grows by this much per step (paper: 1)")
    g.add_argument("--max-neurons", type=int, default=1000, help="cap on candidates tried")
    add_stage2_search_arg(g)


def add_stage2_search_arg(g) -> None:
    g.add_argument("--stage2", default="linear", choices=list(STAGE2),
                   help="linear: every n, the paper's exact first crossing (default); gallop: n = 1, 2, "
                        "4, ... then every n inside the bracket, fewer rows, exact when Delta is monotone")


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars (accepted by every command)")


def check_noise_args(args) -> None:
    """The options :func:`add_noise_args` adds, before any work (the library's check)."""
    from ..method.rankers import check_noise_options
    check_noise_options(samples=args.samples, alpha=args.alpha, seed=args.seed)


def check_stage1(args) -> None:
    """--samples as the library takes it (a number, or the word 'auto'), and Stage 1's options
    checked by the library before the model loads."""
    from ..method.rankers import check_keep, check_rank_options
    if str(args.samples).isascii() and str(args.samples).isdigit():
        args.samples = int(args.samples)
    check_rank_options(samples=args.samples, alpha=args.alpha, seed=args.seed, batch_size=args.batch_size,
                       max_samples=args.max_samples)
    check_keep(args.keep)


def check_stage2(args) -> None:
    from ..method.stage2 import check_options
    check_options(args.epsilon, args.step, args.max_neurons, args.stage2)


def check_device(args) -> None:
    """The device, before the model loads (the library's check)."""
    from ..model.loading import check_device as check
    check(args.device, args.device_map)


def resolve_model_args(args, recorded: Settings | None = None) -> None:
    """Fill in --model, --revision and --dtype: as given, else those the result read was made with
    (a hub id at the commit it was read at), else defaults."""
    if args.model is None:
        args.model = (recorded.model if recorded is not None else None) or DEFAULT_MODEL
        if args.dtype is None and recorded is not None and recorded.model:
            args.dtype = recorded.dtype
        if args.revision is None and recorded is not None and recorded.model:
            args.revision = recorded.model_revision
    if args.dtype is None:
        args.dtype = DEFAULT_DTYPE


def load(args, recorded: Settings | None = None):
    """Load the model named by the model arguments, or by ``recorded`` (a result's settings) when
    --model is not given; checks the arguments before the (slow) load."""
    from ..model.loading import load_model
    resolve_model_args(args, recorded)
    lm = load_model(args.model, dtype=args.dtype, device=args.device, device_map=args.device_map,
                    progress=progress_enabled(args), revision=args.revision,
                    partial_view=getattr(args, "partial_view", False))
    from ..runtime.distributed import speaks
    # On stdout with the command's own output: stderr keeps to the one line of an error, and --json
    # keeps stdout to the result (its record says what was not seen when a partial view was accepted).
    if lm.coverage is not None and speaks() and not getattr(args, "quiet", False) and not getattr(args, "json", False):
        console.print(lm.coverage.line(), style="dim")
    return lm


def check_out(path: str | Path | None, parameter: str = "out", named: bool = True) -> None:
    """Refuse an output file that cannot be written, before any work is done (the library's one
    check, :func:`lesion.runtime.files.check_output_path`; ``parameter`` names the flag that set it).
    ``named``: the user named this file (a link there is written through); False for a file lesion
    names in a folder the user gave (a link there is refused)."""
    if path is not None:
        from ..runtime.files import check_output_path
        check_output_path(path, parameter, follow_link=named)


def ranker_name(name: str) -> str:
    """argparse type for --ranker: a registered ranker, or one line with the closest one."""
    from ..errors import ParameterError
    from ..method.scorers import check_ranker
    try:
        return check_ranker(name)
    except ParameterError as e:
        raise argparse.ArgumentTypeError(e.problem.removeprefix("names ")) from None  # argparse names the flag


def progress_enabled(args) -> bool:
    return not getattr(args, "quiet", False) and os.environ.get("LESION_NO_PROGRESS") is None


def exit_code(stopped: Stopped, path) -> int:
    """The exit code of a command that kept what finished: 130 after Ctrl-C or SIGTERM, as for
    every interrupted command, with a line saying what was written; else 0."""
    if stopped == Stopped.INTERRUPTED:
        from .tables import shown
        print(f"lesion: interrupted: wrote what finished to {shown(path)}", file=sys.stderr)
        return 130
    return 0


def stopped_why(stopped: Stopped, budget: str | None = None) -> str:
    """Why a command that keeps what it finished stopped early: its budget (``time_budget``
    unless named), or an interrupt."""
    from . import flag
    return f"stopped by {budget or flag('time_budget')}" if stopped == Stopped.BUDGET else "interrupted"


def named(text: str) -> str:
    """A note from the library or a result, with each backticked parameter shown as its flag."""
    from ..errors import name_parameters
    from . import flag
    return name_parameters(text, flag)


def fmt(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def read_critical(path: str):
    """A critical.json or heel.json with neurons, read before the model loads (a critical.json
    in a run folder only if the folder's files belong together)."""
    from ..replay.runfolder import read_neuron_set
    return read_neuron_set(path, need_neurons=True)


def critical_neurons(critical, lm) -> list:
    """The critical set's neurons, checked against the loaded model."""
    from ..model.neurons import discover_sites
    from ..method.study import check_same_model
    check_same_model(critical.settings, lm, "critical set")
    discover_sites(lm.model, "all").check(critical.neurons)
    return list(critical.neurons)
