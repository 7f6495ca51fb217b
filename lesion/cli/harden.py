"""`lesion harden`: remove the Achilles' heel by an exact rotation, prove the function is kept,
and measure the heel that is left."""
from __future__ import annotations

import argparse

from ..runtime.options import HARDEN_METHODS as METHODS, HARDEN_QK_ANGLES
from .common import add_common_flags, add_text_args, console, progress_enabled
from .tables import shown


EXAMPLES = """examples:
  lesion harden --out smollm2-hardened                  # randomized Hadamard, seed 0
  lesion harden --method hadamard --heads --out smollm2-hadamard
  lesion harden --report --max-rows 2000 --out smollm2-hardened   # + n* and lesion search, before and after
  lesion mask --model smollm2-hardened model.layers.11.mlp.down_proj:507
  python -c "import transformers; transformers.AutoModelForCausalLM.from_pretrained('smollm2-hardened')"

The folder is a plain Hugging Face model (safetensors, config, tokenizer); lesion-harden.json
records the rotation, the source model's fingerprint and the proof; harden.md shows them.
"""


def register(sub) -> None:
    p = sub.add_parser("harden", help="rotate the residual stream so no single neuron carries a massive "
                       "activation; same function, new basis", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m",
                   help="alias, local folder, .gguf file or hub id (default smollm2-135m); hardened in float32")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    r = p.add_argument_group("rotation")
    r.add_argument("--method", default="hadamard", choices=METHODS,
                   help="hadamard (default): random signs times a Hadamard matrix (Paley x Sylvester), which spreads "
                        "every channel exactly evenly; rotate: a random orthogonal Q (QR of a seeded Gaussian)")
    r.add_argument("--seed", type=int, default=0, help="seed of the rotation (default 0)")
    r.add_argument("--heads", action="store_true",
                   help="also rotate inside each head where exact: values/o_proj by any orthogonal matrix, "
                        "queries/keys within RoPE's frequency planes (the only rotation Gemma 3 allows)")
    r.add_argument("--qk-angles", default=None, choices=HARDEN_QK_ANGLES,
                   help="--heads: the angle of each query/key plane; fitted (default): chosen on lesion's "
                        "calibration texts so that neither new axis carries what the plane does (a random angle "
                        "can make one query channel a heel); random; none (queries and keys left)")
    h = p.add_argument_group("heel before and after (on --text, default the Bookends sentence)")
    add_text_args(p)
    h.add_argument("--neuron", action="append", default=None,
                   help="a neuron to mask before and after (repeatable; default: the down_proj output that "
                        "writes the original's most massive residual channel)")
    h.add_argument("--report", action="store_true",
                   help="also run the paper's two stages and `lesion search` on both models, same budget, and "
                        "search the MLP's intermediate neurons, which no rotation moves")
    h.add_argument("--max-rows", type=int, default=None,
                   help="--report: lesion search's budget of masked rows (default 2000)")
    h.add_argument("--max-neurons", type=int, default=None, help="--report: Stage 2 candidates (default 1000)")
    h.add_argument("--samples", type=int, default=None,
                   help="--report: Stage 1 noise samples K (default and paper: 100)")
    p.add_argument("--out", required=True, help="folder to write the hardened model into")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..harden import harden_model
    from ..texts.text import read_text
    from .common import check_device

    args.device_map = None
    check_device(args)
    record = harden_model(args.model, args.out, method=args.method, seed=args.seed, heads=args.heads,
                          qk_angles=args.qk_angles, text=read_text(args.text, args.text_file), neurons=args.neuron,
                          report=args.report,
                          max_rows=args.max_rows, max_neurons=args.max_neurons, samples=args.samples,
                          device=args.device, progress=progress_enabled(args), say=console.print)
    print_summary(record, args.out)
    return 0


def print_summary(record, out) -> None:
    from ..harden.report import heel_table
    for precision, proof in record.proof.items():
        console.print(f"{precision}: max relative PPL difference {proof.max_ppl_rel_diff:.2e}, max |logit "
                      f"difference| {proof.max_abs_logit_diff:.2e}, generations identical: "
                      f"{proof.generations_identical}")
    if record.heel is not None:
        print("\n".join(heel_table(record.heel)))  # markdown rows: never wrapped
    console.print(f"wrote {shown(out)} (a Hugging Face model folder; lesion-harden.json and harden.md inside)")
