"""The sets a search evaluated, appended to a file beside its result as they are evaluated, so
that ``lesion search --resume`` continues a stopped search without searching any set twice.

The file is JSON lines: a header naming what the Deltas depend on (the journal's format, the
model's weights fingerprint, every text's hash, the ablation), then one line per set with its
finite Delta per text and a SHA-256 binding the line to that header. A journal is evidence,
not truth: one written for another model, text or ablation, a line edited by hand or copied
from another journal, a Delta that is not a finite number, is refused as a whole, not mixed
in; and the sets the result rests on are re-scored on the model before it is written
(:meth:`lesion.heel.scorer.SetScorer.confirm`), since anyone can recompute a SHA-256.

A last line cut short (a kill, a full disk) is dropped: the file is cut back to its last whole
line before the next entry is appended. A journal that cannot be written any more (a full
disk) stops; the search goes on without it and says so (:attr:`SetJournal.failure`).

One search writes a journal at a time: :meth:`SetJournal.start` holds a flock(2) on the file
until :meth:`SetJournal.close` (or the process ends), and a second search on it is refused before
it writes a byte (two once interleaved their lines, and the resume refused the journal of both).
Each line is read with the bounded reader (:func:`lesion.runtime.files.bounded_json`): a line
nested 100,000 deep or holding a 5,000-digit number is refused in one line like any other damage.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable

from ..errors import JournalMismatch, LesionError, ParameterError, ResultError
from ..runtime.files import bounded_json, check_writable_folder
from ..model.neurons import Neuron

FORMAT = 2  # 2: each entry carries its SHA-256 and finite Deltas only
MAX_LINE_CHARS = 16 << 20  # an entry is a set's names and a Delta per text: far less, even for thousands


def journal_path(out: str | Path) -> Path:
    """Where the journal of the result ``out`` lives: ``heel.json`` -> ``heel.json.sets.jsonl``."""
    return Path(str(out) + ".sets.jsonl")


def check_journal(path: str | Path, resume: bool) -> Path:
    """Refuse, before any work, a journal path that is not a file lesion can write (a folder, a
    device, an unwritable place), and a resume with nothing to resume."""
    path = Path(path)
    if path.is_symlink():  # its name is lesion's, derived from --out: a link there was planted
        raise ParameterError("out", f"keeps its search journal at {str(path)!r}, a symbolic link (to "
                                    f"{os.readlink(path)!r}): remove the link (lesion never writes its journal "
                                    "through one)")
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise ParameterError("out", f"keeps its search journal at {str(path)!r}, which is {what}: move it away or "
                                    "write the result elsewhere")
    if resume and not path.is_file():
        raise ParameterError("resume", f"finds no journal {str(path)!r} to continue: run the search without it first")
    if path.is_file():
        try:
            with open(path, "r+b"):
                pass
        except OSError as e:
            raise LesionError(f"cannot write the search journal {str(path)!r} ({e.strerror or e}): make it "
                              "writable or write the result elsewhere") from None
    else:
        check_writable_folder(path.parent, "the search journal", path)
    return path


def entry_digest(key: dict, neurons: list[str], deltas: list[float]) -> str:
    """SHA-256 of one entry together with the journal's key: a line moved to another journal,
    or edited without recomputing it, no longer matches."""
    canonical = json.dumps({"journal": key, "set": neurons, "deltas": deltas}, sort_keys=True, allow_nan=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class SetJournal:
    """Append-only record of evaluated sets; ``key`` says what their Deltas depend on."""

    def __init__(self, path: str | Path, key: dict):
        self.path, self.key = Path(path), {"format": FORMAT, **key}
        self._fd: int | None = None
        self.failure: str | None = None  # why the journal stopped being written (a full disk), if it did
        self.written = 0  # entries written by this run

    def read(self) -> dict[frozenset, tuple[float, ...]]:
        """The sets of an existing journal with the same key ({} when there is no file); a journal
        of another key, or with a line that is not an intact entry, is refused with one line."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        lines = data[:_whole_lines(data)].decode("utf-8", errors="replace").split("\n")[:-1]
        header = _parse(lines[0]) if lines else None
        if not isinstance(header, dict) or header.get("journal") != self.key:
            raise JournalMismatch(f"{self.path} was written by a search of another model, text or ablation "
                                  f"({_differs(header, self.key)}): start the search afresh, without resuming, or "
                                  "resume the search it belongs to")
        known: dict[frozenset, tuple[float, ...]] = {}
        for number, line in enumerate(lines[1:], 2):
            key, deltas = self._entry(line, number)
            known[key] = deltas
        return known

    def _entry(self, line: str, number: int) -> tuple[frozenset, tuple[float, ...]]:
        """One line's set and Deltas, or one line saying why the journal is refused."""
        def refuse(why: str) -> LesionError:
            return ResultError(f"line {number} of the journal {self.path} {why}: it was edited, damaged or "
                               "copied from another search; start the search afresh, without resuming")
        entry = bounded_json(line, refuse, max_bytes=MAX_LINE_CHARS)
        if not isinstance(entry, dict) or set(entry) != {"set", "deltas", "sha256"}:
            raise refuse("is not an entry lesion wrote")
        names, deltas = entry["set"], entry["deltas"]
        if not (isinstance(names, list) and names and all(isinstance(s, str) for s in names)
                and isinstance(deltas, list) and len(deltas) == len(self.key.get("texts", deltas))
                and all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in deltas)):
            raise refuse("is not an entry lesion wrote")
        if not all(math.isfinite(d) for d in deltas):
            raise refuse("holds a Delta that is not a finite number")
        if entry["sha256"] != entry_digest(self.key, names, deltas):
            raise refuse("does not match its SHA-256")
        try:
            return frozenset(Neuron.parse(s) for s in names), tuple(float(d) for d in deltas)
        except LesionError:
            raise refuse("names a neuron lesion cannot read") from None

    def start(self, resume: bool) -> None:
        """Open for appending: after the existing whole lines when resuming (a last line cut short
        is cut off first, so the next entry starts a line of its own), else over an old file.
        Refused (a :class:`ParameterError` on ``journal``), the file untouched, while another
        search writes it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            _lock(fd, self.path)  # before the file is cut: another search's lines stay its own
            if resume and existed:
                os.ftruncate(fd, _whole_lines(self.path.read_bytes()))
                os.lseek(fd, 0, os.SEEK_END)
            else:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if not (resume and existed):
            self._write({"journal": self.key})

    def append(self, entries: Iterable[tuple[frozenset, tuple[float, ...]]]) -> None:
        """Each set with finite Deltas (one that is not finite is evaluated again on a resume)."""
        for key, deltas in entries:
            if all(math.isfinite(d) for d in deltas):
                names, values = sorted(str(n) for n in key), [float(d) for d in deltas]
                self._write({"set": names, "deltas": values, "sha256": entry_digest(self.key, names, values)})
                self.written += 1

    def _write(self, record: dict) -> None:
        # One unbuffered write per line: a kill loses at most the line being written, and a full
        # disk fails here, not later in a flush at close.
        if self._fd is None:
            return
        line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
        try:
            while line:
                line = line[os.write(self._fd, line):]
        except OSError as e:
            self.failure = f"{e.strerror or e} after {self.written} set(s)"
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as e:  # some file systems report a failed write only at close
                self.failure = self.failure or f"{e.strerror or e} after {self.written} set(s)"


def _lock(fd: int, path: Path) -> None:
    """Hold the journal for this search; refuse it while another holds it. A file system without
    locks leaves it unlocked, as before."""
    import errno
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ParameterError("journal", f"{str(path)!r} is being written by another search: wait for it to "
                                        "finish, or keep this search's journal elsewhere") from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def _whole_lines(data: bytes) -> int:
    """The length of ``data`` up to and including its last newline: what is past it was cut short."""
    return data.rfind(b"\n") + 1


def _parse(line: str):
    """A header line's value, or None where it is not JSON the bounded reader takes."""
    try:
        return bounded_json(line, ResultError, max_bytes=MAX_LINE_CHARS)
    except ResultError:
        return None


def _differs(header, key: dict) -> str:
    if not isinstance(header, dict) or not isinstance(header.get("journal"), dict):
        return "not a lesion journal"
    theirs = header["journal"]
    return ", ".join(k for k in key if theirs.get(k) != key[k]) or "another format"
