"""The sets a search evaluated, appended to a file beside its result as they are evaluated, so
that ``lesion search --resume`` continues a stopped search without evaluating any set twice.

The file is JSON lines: a header naming what the Deltas depend on (the model's weights
fingerprint, every text's hash, the ablation), then one line per set with its Delta per text.
A journal written for another model, text or ablation is refused, not mixed in. A last line
cut short by a kill is ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..errors import LesionError
from ..neurons import Neuron

FORMAT = 1


def journal_path(out: str | Path) -> Path:
    """Where the journal of the result ``out`` lives: ``heel.json`` -> ``heel.json.sets.jsonl``."""
    return Path(str(out) + ".sets.jsonl")


class SetJournal:
    """Append-only record of evaluated sets; ``key`` says what their Deltas depend on."""

    def __init__(self, path: str | Path, key: dict):
        self.path, self.key = Path(path), {"format": FORMAT, **key}
        self._file = None

    def read(self) -> dict[frozenset, tuple[float, ...]]:
        """The sets of an existing journal with the same key ({} when there is no file)."""
        if not self.path.exists():
            return {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("journal") != self.key:
            raise LesionError(f"{self.path} was written by a search of another model, text or ablation "
                              f"({_differs(header, self.key)}): drop --resume to start afresh, or pass the "
                              "--out of the search it belongs to")
        known: dict[frozenset, tuple[float, ...]] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                known[frozenset(Neuron.parse(s) for s in entry["set"])] = tuple(float(d) for d in entry["deltas"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, LesionError):
                continue  # a line cut short by a kill
        return known

    def start(self, resume: bool) -> None:
        """Open for appending: after the existing lines when resuming, else over an old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            self._file = open(self.path, "a", encoding="utf-8")
            return
        self._file = open(self.path, "w", encoding="utf-8")
        self._write({"journal": self.key})

    def append(self, entries: Iterable[tuple[frozenset, tuple[float, ...]]]) -> None:
        for key, deltas in entries:
            self._write({"set": sorted(str(n) for n in key), "deltas": list(deltas)})

    def _write(self, record: dict) -> None:
        # One write per line, flushed: a kill loses at most the line being written.
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _differs(header, key: dict) -> str:
    if not isinstance(header, dict) or not isinstance(header.get("journal"), dict):
        return "not a lesion journal"
    theirs = header["journal"]
    return ", ".join(k for k in key if theirs.get(k) != key[k]) or "another format"
