"""Count the string-keyed reads in lesion's code: ``x["key"]`` and ``x.get("key")``.

A result is a typed record: outside its (de)serialisation (the ``results`` package, and the readers
of foreign JSON) nothing should read it by key. A read of JSON lesion does not own (a model's
config.json, a tokenizer file, a hub's answer, lm-eval's output) is marked on its line with the
comment ``# foreign JSON`` and counted apart. Writes (``x["key"] = ...``) are not reads.

Usage: ``python scripts/keyed_reads.py [ROOT] [--list]`` prints the count of unmarked reads outside
the results package, by file; ``--list`` prints every one. Exit 0 always: a count, not a check.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

MARK = "# foreign JSON"


def keyed_reads(path: Path) -> list[tuple[int, str, bool]]:
    """(line, key, marked foreign) of every string-keyed read in the file."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        key = None
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            key = node.args[0].value
        if key is not None:
            end = getattr(node, "end_lineno", node.lineno)
            marked = any(MARK in lines[i - 1] for i in range(node.lineno, end + 1))
            found.append((node.lineno, key, marked))
    return sorted(found)


def main(argv: list[str]) -> int:
    show = "--list" in argv
    args = [a for a in argv if a != "--list"]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "lesion"
    total = foreign = 0
    for path in sorted(root.rglob("*.py")):
        if "results" in path.relative_to(root).parts:
            continue
        reads = keyed_reads(path)
        mine = [r for r in reads if not r[2]]
        foreign += len(reads) - len(mine)
        total += len(mine)
        if mine:
            print(f"{len(mine):4d} {path.relative_to(root.parent)}")
            if show:
                for line, key, _ in mine:
                    print(f"       {line}: {key!r}")
    print(f"keyed reads outside the results package: {total} ({foreign} more marked {MARK!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
