"""`lesion harden`: remove the Achilles' heel by an exact rotation, prove the function is kept,
and measure the heel that is left."""
from __future__ import annotations

import argparse

from ..errors import ParameterError
from ..options import HARDEN_METHODS as METHODS
from .common import add_common_flags, add_text_args, check_seed, console, progress_enabled


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
                        "queries/keys within RoPE's frequency planes")
    h = p.add_argument_group("heel before and after (on --text, default the Bookends sentence)")
    add_text_args(p)
    h.add_argument("--neuron", action="append", default=None,
                   help="a neuron to mask before and after (repeatable; default: the down_proj output that "
                        "writes the original's most massive residual channel)")
    h.add_argument("--report", action="store_true",
                   help="also run the paper's two stages and `lesion search` on both models, same budget, and "
                        "search the MLP's intermediate neurons, which no rotation moves")
    h.add_argument("--max-rows", type=int, default=2000, help="--report: lesion search's budget of masked rows")
    h.add_argument("--max-neurons", type=int, default=1000, help="--report: Stage 2 candidates")
    h.add_argument("--samples", type=int, default=100, help="--report: Stage 1 noise samples K (paper: 100)")
    p.add_argument("--out", required=True, help="folder to write the hardened model into")
    add_common_flags(p)
    p.set_defaults(run=run)


def check_args(args) -> None:
    check_seed(args.seed)
    for flag in ("max_rows", "max_neurons", "samples"):
        if getattr(args, flag) < 1:
            raise ParameterError(flag, f"must be >= 1 (got {getattr(args, flag)})")


def run(args) -> int:
    from ..harden.folder import check_out_folder
    from ..neurons import Neuron
    from ..texts import read_text
    from .common import check_device

    check_args(args)
    check_out_folder(args.out)
    neurons = [Neuron.parse(n) for n in args.neuron] if args.neuron else None
    text = read_text(args.text, args.text_file)
    args.device_map = None
    check_device(args)
    harden_and_prove(args, text, neurons)
    return 0


def harden_and_prove(args, text: str, neurons) -> None:
    import gc

    from ..harden import harden_model
    from ..harden.folder import save_folder
    from ..harden.measure import Budget, heel_profile
    from ..harden.proof import compare, proof_texts, trace
    from ..harden.report import markdown
    from ..loading import LoadedModel, load_model
    from ..texts import text_hash

    progress = progress_enabled(args)
    texts = proof_texts()
    low_reference = bfloat16_reference(args, texts, text, neurons, progress)  # first: apart from float32
    lm = load_model(args.model, dtype="float32", device=args.device, progress=progress)
    budget = Budget(max_neurons=args.max_neurons, max_rows=args.max_rows, samples=args.samples,
                    seed=42) if args.report else None
    console.print("measuring the original (float32)")
    reference = trace(lm.model, lm.tokenizer, texts)
    before = heel_profile(lm, text, neurons, budget, progress)
    neurons = neurons or [first_masked(before)]
    model, record = harden_model(lm, args.method, args.seed, args.heads, inplace=True,
                                 watch=before["outliers"]["channel"])
    hardened = LoadedModel(model, lm.tokenizer, str(args.out), "float32")
    hardened.__dict__["_weights_digest"] = record.hardened_fingerprint  # hashed by harden_model: not again
    console.print(f"hardened ({args.method}, seed {args.seed}); measuring it (float32)")
    proof = {"float32": compare(reference, trace(model, lm.tokenizer, texts))}
    after = heel_profile(hardened, text, neurons, budget, progress, original=before)
    console.print("bfloat16: the hardened model")
    proof["bfloat16"] = bfloat16_proof(model, lm.tokenizer, texts, low_reference)
    gc.collect()
    heel = {"text_sha256": text_hash(text), "before": before, "after": after,
            "budget": None if budget is None else vars(budget)}
    record = record.with_(proof=proof, heel=heel, rotation={**record.rotation, "text_sha256": text_hash(text)})
    save_folder(model, lm.tokenizer, record, markdown(record), args.out, progress)
    print_summary(record, args.out)


def first_masked(profile: dict):
    from ..neurons import Neuron
    return Neuron.parse(profile["masked"][0]["neuron"])


def bfloat16_reference(args, texts, text, neurons, progress):
    """The original loaded in bfloat16, traced, and let go before the float32 model loads: the
    two at once, with the load's float32 staging, made the peak of a 1.5B run 20.9 GB. The
    family, the text and the neurons are checked on it, before any other work."""
    import gc

    from ..harden import check_family
    from ..harden.proof import trace
    from ..loading import load_model
    from ..neurons import discover_sites
    from ..texts import encode
    console.print("measuring the original (bfloat16)")
    original = load_model(args.model, dtype="bfloat16", device=args.device, progress=progress)
    check_family(original.model)
    encode(original.tokenizer, text, original.device)  # a text too short for the method: refused now
    if neurons:
        discover_sites(original.model, "all").check(neurons)
    reference = trace(original.model, original.tokenizer, texts)
    del original
    gc.collect()
    return reference


def bfloat16_proof(model, tokenizer, texts, reference) -> dict:
    """The hardened model in bfloat16 against the original loaded in bfloat16: rounding differs
    in the new basis, so this is measured, not expected to be bit-equal."""
    import torch

    from ..harden.proof import cast_copy, compare, trace
    low = cast_copy(model, torch.bfloat16)
    hardened = trace(low, tokenizer, texts)
    del low
    return compare(reference, hardened)


def print_summary(record, out) -> None:
    from ..harden.report import heel_table
    for precision, proof in record.proof.items():
        console.print(f"{precision}: max relative PPL difference {proof['max_ppl_rel_diff']:.2e}, max |logit "
                      f"difference| {proof['max_abs_logit_diff']:.2e}, generations identical: "
                      f"{proof['generations_identical']}")
    print("\n".join(heel_table(record.heel)))  # markdown rows: never wrapped
    console.print(f"wrote {out} (a Hugging Face model folder; lesion-harden.json and harden.md inside)")
