"""`lesion verify`: has a deployed copy of the model had its critical neurons tampered with?"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LesionError
from .common import add_common_flags, add_model_args, console, load
from .tables import neuron_table

EXAMPLES = """examples:
  lesion scan --out lesion-run                                  # also writes lesion-run/fingerprints.json
  lesion verify --model ./deployed-copy --against lesion-run/critical.json
exit code: 0 intact, 3 tampered, 2 bad input
"""
TAMPERED = 3


def register(sub) -> None:
    p = sub.add_parser("verify", help="check the weights around each critical neuron against fingerprints",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--against", required=True, help="critical.json; fingerprints.json is read beside it")
    p.add_argument("--fingerprints", default=None, help="fingerprints file, if not beside critical.json")
    p.add_argument("--out", default=None, help="write the per-slice verdicts as JSON")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..neurons import discover_sites
    from ..files import read_json, write_json
    from ..results import CriticalSet
    from ..runfolder import FINGERPRINTS
    from ..verify import as_dicts, verify
    from .common import check_out, resolve_model_args

    check_out(args.out)
    critical = CriticalSet.load(args.against)  # refuses a missing or malformed file
    path = Path(args.fingerprints or Path(args.against).parent / FINGERPRINTS)
    if not path.is_file():
        raise LesionError(f"no fingerprints at {path}: `lesion scan` writes them beside critical.json; re-run it "
                          "on the original model or pass --fingerprints")
    reference = read_json(path)
    check_reference(reference, critical, path, args.against)
    if args.dtype is not None and reference["dtype"] != args.dtype:
        raise LesionError(f"the fingerprints were taken in {reference['dtype']}: pass --dtype {reference['dtype']}")
    args.dtype = reference["dtype"]
    resolve_model_args(args, critical.settings)
    lm = load(args)
    checks = verify(lm.model, discover_sites(lm.model, "all"), reference)
    bad = [c for c in checks if c.status != "intact"]
    console.print(neuron_table(["neuron", "weights", "status", "detail"],
                               [[c.neuron, c.slice, c.status, c.detail] for c in bad or checks[:8]],
                               title=f"{len(checks)} weight slices checked"))
    recorded = critical.settings.get("model_fingerprint")
    whole_model_same = recorded == lm.fingerprint()
    if args.out:
        from ..study import model_provenance
        write_json(args.out, {"model": args.model, "intact": not bad, "checks": as_dicts(checks),
                              "whole_model_matches": whole_model_same, "settings": model_provenance(lm)})
    if bad:
        console.print(f"[bold red]TAMPERED[/bold red]: {len(bad)} of {len(checks)} slices changed")
        return TAMPERED
    console.print(f"intact: all {len(checks)} slices match")
    if not whole_model_same:
        console.print(f"[yellow]note[/yellow]: the whole model's fingerprint ({lm.fingerprint()}) is not the one "
                      f"{args.against} recorded ({recorded}): weights outside the checked slices differ (another "
                      "model, a fine-tune, or edits elsewhere); the critical neurons' own weights are intact")
    return 0


def check_reference(reference: dict, critical, path: Path, against: str) -> None:
    """Refuse fingerprints that would check nothing, or other neurons than the critical set's."""
    neurons = reference.get("neurons")
    if not isinstance(neurons, dict) or not isinstance(reference.get("dtype"), str) or not all(
            isinstance(v, list) and v and all(isinstance(s, dict) and {"slice", "sha256"} <= set(s) for s in v)
            for v in neurons.values()):
        raise LesionError(f"{path} is not a lesion fingerprints file: re-create it with lesion scan")
    if not neurons:
        raise LesionError(f"{path} fingerprints no neuron, so verify would check nothing: re-create it with "
                          "lesion scan on the original model")
    expected = {str(n) for n in critical.neurons}
    if set(neurons) != expected:
        raise LesionError(f"{path} fingerprints other neurons than the critical set in {against} "
                          f"({len(set(neurons) ^ expected)} differ): pass the fingerprints written with it")
