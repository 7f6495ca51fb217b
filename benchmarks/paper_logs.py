"""The paper authors' own Stage 1 and Stage 2 figures, beside lesion's.

The authors' repository (github qqqqqqqzx/The-Achilles-Heel-of-LLMs) held a ``log/`` folder
at commit 44bda12 with the logs of their two scripts for 24 models. ``--parse MIRROR`` reads
those logs from a git mirror of that repository and writes the figures to
``benchmarks/data/paper_logs.json``; without it the committed file is read. For each model:
the text length (tokens), the top Stage 1 neurons, the baseline perplexity, n* (the first n
whose masked perplexity is ten-fold, Delta >= 1) and the masked perplexity there.

    python benchmarks/paper_logs.py                        # the table, from the committed data
    python benchmarks/paper_logs.py --run qwen-fp32=/tmp/qwen-run --run qwen-bf16=/tmp/qwen-bf16
    python benchmarks/paper_logs.py --parse /path/to/mirror.git   # re-read the logs

``--run LABEL=FOLDER`` adds a lesion run folder (``lesion scan --out FOLDER``) as a row; the
rows measured for docs/paper-logs.md are kept in the data file under ``lesion``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data" / "paper_logs.json"
COMMIT = "44bda12"
EPSILON = 1.0  # the paper's threshold: ten-fold perplexity
TOP = 10

START = re.compile(r"=== (?:Multi-GPU )?(Neuron Activation Difference|Progressive Neuron Masking) Analyzer ===")
PATTERNS = {
    "model": re.compile(r"- Model path: (\S+)"),
    "tokens": re.compile(r"- Input text length: (\d+) tokens"),
    "rank": re.compile(r"- Rank (\d+): Layer (\S+), Activation diff: ([\d.eE+-]+), batch_idx: \d+, "
                       r"seq_idx: (\d+), hidden_idx: (\d+)"),
    "baseline": re.compile(r"- Baseline perplexity: ([\d.eE+-]+|nan|inf)"),
    "step": re.compile(r"- Step \d+: masking \d+ neurons \(total: (\d+)\)"),
    "masked": re.compile(r"- Masked perplexity: ([\d.eE+-]+|nan|inf)"),
    "increase": re.compile(r"- Magnitude increase: ([\d.eE+-]+|nan|-?inf)"),
}


def parse_log(lines) -> dict:
    """The last Stage 1 run that listed its top neurons and the last Stage 2 run that masked."""
    runs: list[dict] = []
    for line in lines:
        start = START.search(line)
        if start:
            runs.append({"stage": 1 if start.group(1).startswith("Neuron") else 2, "top": [], "steps": []})
            continue
        if not runs:
            continue
        run = runs[-1]
        for key, pattern in PATTERNS.items():
            m = pattern.search(line)
            if m:
                _record(run, key, m)
                break
    stage1 = next((r for r in reversed(runs) if r["stage"] == 1 and r["top"]), {})
    stage2 = next((r for r in reversed(runs) if r["stage"] == 2 and r["steps"]), {})
    return summarise(stage1, stage2)


def _record(run: dict, key: str, m: re.Match) -> None:
    if key == "model":
        run["model"] = m.group(1).rstrip("/").split("/")[-1]
    elif key == "tokens":
        run["tokens"] = int(m.group(1))
    elif key == "rank":
        run["top"].append(f"{m.group(2)}:{m.group(5)}@{m.group(4)}")
    elif key == "baseline":
        run["baseline_ppl"] = float(m.group(1))
    elif key == "step":
        run["steps"].append({"n": int(m.group(1))})
    elif key == "masked" and run["steps"]:
        run["steps"][-1]["ppl"] = float(m.group(1))
    elif key == "increase" and run["steps"]:
        run["steps"][-1]["delta"] = float(m.group(1))


def summarise(stage1: dict, stage2: dict) -> dict:
    steps = [s for s in stage2.get("steps", []) if "delta" in s]
    first = next((s for s in steps if s["delta"] >= EPSILON), None)
    return {"model": stage2.get("model") or stage1.get("model"), "tokens": stage1.get("tokens"),
            "top": stage1.get("top", [])[:TOP], "baseline_ppl": stage2.get("baseline_ppl"),
            "n_star": first["n"] if first else None, "masked_ppl": first["ppl"] if first else None,
            "delta": first["delta"] if first else None, "n_star_channels": _channels(stage1.get("top", []), first),
            "steps_logged": len(steps),
            "max_delta": max((s["delta"] for s in steps), default=None)}


def _channels(top: list[str], first: dict | None) -> int | None:
    """Distinct channels among the first n* entries of the Stage 1 list, where the log lists
    that many. The authors rank (channel, position) pairs but their Stage 2 zeroes a channel
    at every position, so a channel listed twice is masked once: n* counts list entries."""
    if first is None or first["n"] > len(top):
        return None
    return len({entry.split("@")[0] for entry in top[:first["n"]]})


def parse_mirror(mirror: str) -> list[dict]:
    git = ["git", "-C", mirror]
    names = subprocess.run(git + ["ls-tree", "--name-only", f"{COMMIT}:log"], check=True, capture_output=True,
                           text=True).stdout.split()
    rows = []
    for name in sorted(names):
        text = subprocess.run(git + ["show", f"{COMMIT}:log/{name}"], check=True, capture_output=True,
                              text=True).stdout
        rows.append({"log": name, **parse_log(text.splitlines())})
    return rows


def lesion_row(label: str, folder: Path) -> dict:
    """A lesion run folder as a row of the same table."""
    critical = json.loads((folder / "critical.json").read_text())
    ranking = json.loads((folder / "ranking.json").read_text())
    positions = ranking.get("positions") or []
    top = [f"{n}@{p}" if p is not None else n
           for n, p in zip(ranking["neurons"][:TOP], list(positions[:TOP]) + [None] * TOP)]
    settings = critical.get("settings", {})
    return {"log": label, "model": settings.get("model"), "dtype": settings.get("dtype"),
            "tokens": settings.get("tokens"), "top": top, "baseline_ppl": critical.get("baseline_ppl"),
            "n_star": len(critical["neurons"]) if critical.get("reached", True) else None,
            "n_star_channels": len(critical["neurons"]) if critical.get("reached", True) else None,
            "masked_ppl": critical.get("masked_ppl"), "delta": critical.get("delta")}


def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def short(neuron: str) -> str:
    """model.layers.26.mlp.down_proj:408@0 -> 26.down:408@0"""
    m = re.match(r".*layers\.(\d+)\.\w+\.(\w+?)(?:_proj)?:(\d+)(@\d+)?$", neuron)
    return f"{m.group(1)}.{m.group(2)}:{m.group(3)}{m.group(4) or ''}" if m else neuron


def table(rows: list[dict]) -> str:
    head = ["log", "model", "tokens", "baseline PPL", "n*", "channels in n*", "masked PPL", "Delta",
            "top 5 (layer.module:channel@position)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["log"], fmt(r.get("model")) + (f" ({r['dtype']})" if r.get("dtype") else ""),
                                         fmt(r.get("tokens")), fmt(r.get("baseline_ppl")), fmt(r.get("n_star")),
                                         fmt(r.get("n_star_channels")),
                                         fmt(r.get("masked_ppl")), fmt(r.get("delta")),
                                         ", ".join(short(n) for n in r.get("top", [])[:5])]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parse", metavar="MIRROR", help="re-read the logs from this git mirror and rewrite the data file")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=FOLDER", help="a lesion run folder to add")
    args = p.parse_args(argv)
    data = json.loads(DATA.read_text()) if DATA.exists() else {"paper": [], "lesion": []}
    if args.parse:
        data["paper"] = parse_mirror(args.parse)
        data["source"] = f"github qqqqqqqzx/The-Achilles-Heel-of-LLMs, log/ at commit {COMMIT}"
        DATA.parent.mkdir(exist_ok=True)
        DATA.write_text(json.dumps(data, indent=1) + "\n")
    extra = []
    for spec in args.run:
        label, _, folder = spec.partition("=")
        if not folder:
            p.error(f"--run {spec!r}: give LABEL=FOLDER")
        extra.append(lesion_row(label, Path(folder)))
    print("The authors' logs (Stage 2 in float16 on GPU):")
    print(table(data["paper"]))
    lesion_rows = data.get("lesion", []) + extra
    if lesion_rows:
        print("\nlesion on this machine (CPU):")
        print(table(lesion_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
