"""`lesion verify`: has a deployed copy of the model had its critical neurons tampered with?"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_common_flags, add_model_args, console, load
from .tables import neuron_table, shown, styled

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
    from ..results import CriticalSet
    from ..replay.runfolder import FINGERPRINTS
    from ..replay.verify import fingerprint_dtype, read_fingerprints, verify_model
    from .common import check_out, resolve_model_args

    check_out(args.out)
    critical = CriticalSet.load(args.against)  # refuses a missing or malformed file
    reference = read_fingerprints(critical, Path(args.fingerprints or Path(args.against).parent / FINGERPRINTS),
                                  args.against)
    args.dtype = fingerprint_dtype(reference, args.dtype)
    resolve_model_args(args, critical.settings)
    report = verify_model(load(args), critical, reference)
    checks, bad = report.checks, report.changed
    if args.out:  # written before anything is printed about it
        report.save(args.out)
    console.print(neuron_table(["neuron", "weights", "status", "detail"],
                               [[c.neuron, c.slice, c.status, c.detail] for c in bad or checks[:8]],
                               title=f"{len(checks)} weight slices checked"))
    if bad:
        console.print(styled(("TAMPERED", "bold red"), f": {len(bad)} of {len(checks)} slices changed"))
        return TAMPERED
    console.print(f"intact: all {len(checks)} slices match")
    if not report.whole_model_matches:
        console.print(styled(("note", "yellow"), f": the whole model's fingerprint "
                             f"({report.settings.model_fingerprint}) is not the one {shown(args.against)} recorded "
                             f"({critical.settings.model_fingerprint}): weights outside the checked slices differ "
                             "(another model, a fine-tune, or edits elsewhere); the critical neurons' own weights "
                             "are intact"))
    return 0
