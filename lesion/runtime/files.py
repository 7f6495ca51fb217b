"""Files: atomic writes, JSON that strict readers load and the one bounded JSON reader, output-path
checks, one writer per output (:func:`output_locks`) and the sweep of temp files left by killed
runs. A leaf: it imports nothing from lesion but the error types and the option helpers.

Non-finite floats are written as the strings "inf", "-inf", "nan" so that any strict JSON
reader can load the files; :func:`as_float` turns them back.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import LesionError, ParameterError, ResultError
from .options import first_repeat

ORPHAN_AGE_S = 3600  # a temp file this old, in lesion's own cache, belongs to a run that died mid-write
# lesion's temp files and folders beside an output are named ".NAME.lesion-PID-...": the marker says
# lesion made them, the process id says whether their writer is still alive. Nothing else beside an
# output is ever removed (a user's ".NAME.cfg" is theirs, whatever its age).
TEMP_MARK = "lesion"


def _finite_safe(value: Any) -> Any:
    if hasattr(value, "to_dict") and not isinstance(value, type):  # a typed record inside hand-built data
        value = value.to_dict()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_safe(v) for v in value]
    return value


NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def as_float(value: Any) -> float:
    """A number as written by :func:`write_json`: a JSON number or one of the non-finite strings."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def as_settings(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("settings is not an object")
    return value


def as_list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return value


def json_text(data: Any) -> str:
    """What :func:`write_json` writes: indented JSON, non-finite floats as strings."""
    if hasattr(data, "to_dict"):  # a result
        data = data.to_dict()
    return json.dumps(_finite_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (non-finite floats as strings)."""
    return write_text(path, json_text(data))


def check_output_path(path: str | Path, parameter: str = "path", follow_link: bool = True, lock: bool = True) -> Path:
    """The file an output path will write, checked before any work.

    Refused (a :class:`ParameterError` on ``parameter``): a path naming no file; one that would
    replace something other than a regular file (a folder, a device node such as /dev/null, a
    pipe), since the atomic rename would swap it out; a folder that cannot be created or written.
    A symbolic link the user named is written through: the path returned is its target, which is
    replaced, and the link stays. ``follow_link=False`` is for a file lesion names itself (in a
    run folder, beside a result, in a cache): a link there was planted, and is refused, since
    following it would write wherever it points (a run as root once replaced /etc/passwd so).

    Inside :func:`output_locks` (every CLI command), the file's lock is taken too: a path another
    lesion run is writing is refused. ``lock=False``: a writer's own check as it writes, at the end
    of the work (a file in a folder being built is moved with it, its lock file would go along).
    """
    target = _file_target(path, parameter, follow_link)
    if lock:
        hold_output(target, parameter, path)
    return target


def _file_target(path: str | Path, parameter: str, follow_link: bool) -> Path:
    """:func:`check_output_path`'s checks, without taking the output's lock (the writer's own check,
    at the end of the work)."""
    if not str(path).strip():
        raise ParameterError(parameter, "is empty: pass the path of a file to write")
    path = Path(path)
    if not str(path.name) or path.name in (".", ".."):
        raise ParameterError(parameter, f"{str(path)!r} names no file: pass the path of a file to write")
    if not follow_link and path.is_symlink():
        raise ParameterError(parameter, f"{str(path)!r} is a symbolic link (to {os.readlink(path)!r}) where lesion "
                             "writes a file it names itself: remove the link (lesion never writes such a file "
                             "through one)")
    target = _link_target(path, parameter)
    if target.exists() and not target.is_file():
        what = "a folder" if target.is_dir() else "not a regular file (a device, pipe or socket)"
        raise ParameterError(parameter, f"{str(path)!r} is {what}: pass the path of a file to write")
    check_writable_folder(target.parent, parameter, path)
    return target


def check_output_folder(path: str | Path, parameter: str = "path", needs_bytes: int = 0) -> Path:
    """The folder an output folder will be, checked before any work: the same checks as
    :func:`check_output_path`, for a folder. A symbolic link to a folder is written through (the
    path returned is the folder it points to; the link stays); a link to nothing is refused,
    since lesion would have to guess where the folder goes. ``needs_bytes``: refused when the
    file system holding it has less free space than that. Inside :func:`output_locks`, the
    folder's lock is taken (its lock file sits beside the folder)."""
    if not str(path).strip():
        raise ParameterError(parameter, "is empty: pass the path of a folder to write")
    path = Path(path)
    if not str(path.name) or path.name in (".", ".."):
        raise ParameterError(parameter, f"{str(path)!r} names no folder: pass the path of a folder to write")
    if path.is_symlink() and not path.exists():  # a link to nothing (or a loop of links)
        raise ParameterError(parameter, f"{str(path)!r} is a symbolic link to nothing ({os.readlink(path)!r}): "
                             "create the folder it names, or pass another path")
    target = _link_target(path, parameter)
    if target.exists() and not target.is_dir():
        raise ParameterError(parameter, f"{str(path)!r} is a file: pass the path of a folder to write")
    # lesion builds the folder beside its final place and renames it in: the parent must be writable
    check_writable_folder(target.parent, parameter, path)
    if needs_bytes:
        check_free_space(target.parent, needs_bytes, parameter, path)
    hold_output(target, parameter, path)
    return target


def check_free_space(folder: Path, needs_bytes: int, parameter: str = "path", given: Path | None = None) -> None:
    """Refuse, before the work, an output that cannot fit in the free space where it goes."""
    existing = _nearest_existing(Path(folder))
    try:
        free = shutil.disk_usage(existing).free
    except OSError:  # a file system that does not say: the write itself will tell
        return
    if free < needs_bytes:
        shown = str(given if given is not None else folder)
        raise ParameterError(parameter, f"{shown!r}: cannot write {needs_bytes / 2**30:.2f} GiB there "
                             f"({free / 2**30:.2f} GiB free in {str(existing)!r}): free some space or choose "
                             "another path")


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _link_target(path: Path, parameter: str) -> Path:
    """``path``, or the file a symbolic link at ``path`` points to (through every link)."""
    if not path.is_symlink():
        return path
    try:
        target = path.resolve(strict=False)
    except (OSError, RuntimeError):  # a loop of links
        raise ParameterError(parameter, f"{str(path)!r} is a symbolic link that loops: pass another path") from None
    if not target.parent.is_dir():
        raise ParameterError(parameter, f"{str(path)!r} is a symbolic link to {str(target)!r}, whose folder does "
                             "not exist: create it or pass another path")
    return target


def check_writable_folder(folder: Path, parameter: str = "path", given: Path | None = None) -> None:
    """Refuse, before any work, a folder lesion could not create or write a file in.

    The nearest folder that exists is probed with a real temp file: permission bits alone
    do not say (root ignores them; a read-only mount or /proc does not)."""
    shown = str(given if given is not None else folder)
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link on the way: nothing can be created under it
            raise ParameterError(parameter, f"{shown!r} goes through {str(existing)!r}, a symbolic link to "
                                 "nothing: fix the link or pass another path")
        existing = existing.parent
    if not existing.is_dir():
        raise ParameterError(parameter, f"{shown!r} goes through {str(existing)!r}, which is not a folder: pass "
                             "another path")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f".{TEMP_MARK}-{os.getpid()}-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ParameterError(parameter, f"{shown!r}: cannot write there ({e.strerror or e} in {str(existing)!r}): "
                             "choose a writable path") from None


def write_text(path: str | Path, text: str) -> Path:
    """Write a file atomically: a reader (or an interrupted run) never sees half a file.

    The file gets the permissions a plain ``open`` would (0666 less the umask), not the
    private 0600 of a temp file; a failed write (read-only, full disk, no permission) is
    one line naming the path, and leaves nothing behind. A symbolic link at ``path`` is refused:
    every caller names the file itself (see :func:`check_output_path`).
    """
    return write_files({Path(path): text})[0]


def write_files(files: dict[Path, str], remove: Sequence[Path] = ()) -> list[Path]:
    """Write several files as a unit: every one of them, or none (the old ones left as they were).

    Each file is first written in full to a temp file beside it (a full disk fails here,
    before anything is replaced); then all are renamed into place. Should a rename fail,
    the ones already renamed are put back from hard links kept of the old files. ``remove``
    names files of an earlier unit that this one supersedes; they go once all are in place.
    A path that is a symbolic link is refused: a link the user named was resolved by the caller
    (:func:`lesion.results.base.result_files`), so one here was planted.
    """
    targets = {_file_target(path, "path", follow_link=False): text for path, text in files.items()}
    temps: dict[Path, str] = {}
    try:
        for target, text in targets.items():
            temps[target] = _write_temp(target, text)
        _swap_in(temps)
    except OSError as e:
        failed = getattr(e, "filename", None) or next(iter(targets))
        raise LesionError(f"cannot write {str(failed)!r} ({e.strerror or e}): choose a writable path "
                          "with free space") from None
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
    for old in remove:
        Path(old).unlink(missing_ok=True)
    return list(targets)


def write_folder(target: Path, fill: Callable[[Path], None], shown: str | Path) -> Path:
    """Build a folder beside ``target`` with ``fill(tmp)`` and rename it into place: the whole folder
    or nothing; an earlier ``target`` is replaced, and removed only once the new one is in. ``fill``
    writes every file, and may refuse at its end (a file the user put there meanwhile). A failed
    write is one line naming ``shown`` (the path as the user gave it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_own_orphans(target.parent, target.name)  # left by a run killed while writing this folder
    tmp = target.with_name(f"{temp_prefix(target.name)}tmp")
    old = target.with_name(f"{temp_prefix(target.name)}old")
    try:
        fill(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except OSError as e:
        raise LesionError(f"cannot write {str(shown)!r} ({e.strerror or e}): choose a writable folder with "
                          "free space") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def _write_temp(target: Path, text: str) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_own_orphans(target.parent, target.name)  # left by a run killed while writing this file
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # a full disk reports here, not after the rename
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        e.filename = str(target)
        raise
    return tmp


def _swap_in(temps: dict[Path, str]) -> None:
    """Rename every temp onto its target; on a failure, restore the targets already replaced."""
    replaced: list[tuple[Path, Path | None]] = []  # (target, hard link to its old file, or None: it was new)
    pending: Path | None = None
    try:
        for target, tmp in temps.items():
            pending = _keep_old(target)
            os.replace(tmp, target)
            replaced.append((target, pending))
            pending = None
    except OSError:
        for target, backup in reversed(replaced):
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink()
                else:
                    os.replace(backup, target)
        raise
    finally:
        for backup in [b for _, b in replaced] + [pending]:
            if backup is not None:
                backup.unlink(missing_ok=True)


def _keep_old(target: Path) -> Path | None:
    """A hard link to the file ``target`` holds now (None when there is none), to put it back."""
    if not target.is_file():
        return None
    backup = target.parent / f"{temp_prefix(target.name)}{secrets.token_hex(6)}.old.tmp"
    try:
        os.link(target, backup)
    except OSError:  # a file system without hard links
        shutil.copy2(target, backup)
    return backup


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


class _RepeatedKey(Exception):
    pass


class _LongNumber(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are all different: lesion never writes a key twice."""
    twice = first_repeat(key for key, _ in pairs)
    if twice is not None:
        raise _RepeatedKey(repr(pairs[twice][0]))
    return dict(pairs)


# What the bounded reader takes by default. A lesion result nests a few levels and writes a float in
# at most 24 characters, a whole number in at most 20; a file past these was not written by lesion.
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 64
MAX_RESULT_BYTES = 1 << 30  # a result of every neuron of a large model is a few hundred MB


def _size(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def bounded_json(source: Path | str | bytes, refuse: Callable[[str], LesionError], *, max_bytes: int,
                 max_depth: int = MAX_JSON_DEPTH, max_number_chars: int = MAX_NUMBER_CHARS,
                 unique_keys: bool = True) -> Any:
    """JSON read with bounds, for every reader of a file a user can hand lesion (a result, a search
    journal's line, a corpus's line, a model's config): the value, or ``refuse(problem)`` raised,
    ``problem`` the rest of one sentence ("nests deeper than 64 levels") to which the caller adds
    what the file is and how to fix it, and the exception class that fits it (:class:`ResultError`,
    :class:`ParameterError`, ...).

    ``source``: a :class:`Path` is read (its size checked before a byte is read; an unreadable file
    raises ``OSError`` for the caller to word); a str or bytes is the JSON text itself. Refused:
    more than ``max_bytes``; not UTF-8; not JSON; nesting deeper than ``max_depth`` (a file nested a
    hundred thousand deep makes the parser itself recurse: that is this refusal too, never a
    RecursionError); a number written in more than ``max_number_chars`` characters (Python refuses
    whole numbers of over 4300 digits with a ValueError, and a shorter huge one overflows ``float``
    later); with ``unique_keys``, a key given twice in one object (a reader would keep the last).
    """
    if isinstance(source, Path):
        if source.stat().st_size > max_bytes:
            raise refuse(f"is larger than {_size(max_bytes)}")
        with open(source, "rb") as f:
            source = f.read(max_bytes + 1)  # a file still growing stops at the cap too
    if len(source) > max_bytes:
        raise refuse(f"is larger than {_size(max_bytes)}")
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise refuse(f"is not UTF-8 text ({e.reason} at byte {e.start})") from None

    def number(kind: type) -> Callable[[str], Any]:
        def parse(text: str):
            if len(text) > max_number_chars:
                raise _LongNumber(len(text))
            return kind(text)
        return parse
    try:
        value = json.loads(source, object_pairs_hook=_unique_keys if unique_keys else None,
                           parse_int=number(int), parse_float=number(float))
    except RecursionError:
        raise refuse(f"nests deeper than {max_depth} levels") from None
    except _LongNumber as e:
        raise refuse(f"holds a number written in {e.args[0]:,} characters (at most {max_number_chars})") from None
    except _RepeatedKey as e:
        raise refuse(f"gives {e} twice in one object (a reader would keep the last)") from None
    except ValueError as e:  # JSONDecodeError, and whatever else the parser refuses
        raise refuse(f"is not valid JSON ({e})") from None
    if _depth_over(value, max_depth):
        raise refuse(f"nests deeper than {max_depth} levels")
    return value


def _depth_over(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests containers more than ``max_depth`` deep; level by level, no recursion."""
    level, containers = 0, [value] if isinstance(value, (dict, list)) else []
    while containers:
        level += 1
        if level > max_depth:
            return True
        containers = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)
                      if isinstance(child, (dict, list))]
    return False


def read_json(path: str | Path) -> dict:
    """A result file's JSON object, through :func:`bounded_json`: anything else is one line
    (:class:`ResultError`) saying what the file is and how to get a good one."""
    path = Path(path)
    if path.is_dir():
        raise ResultError(f"{str(path)!r} is a folder: pass the JSON file written by an earlier lesion run")
    if not path.is_file():
        raise ResultError(f"{str(path)!r} not found: pass the JSON written by an earlier lesion run")

    def refuse(problem: str) -> ResultError:
        return ResultError(f"{str(path)!r} {problem}: not a file lesion wrote as it is; re-create it with lesion")
    try:
        data = bounded_json(path, refuse, max_bytes=MAX_RESULT_BYTES)
    except OSError as e:
        raise ResultError(f"cannot read {str(path)!r} ({e.strerror or e}): check its permissions") from None
    if not isinstance(data, dict):
        raise ResultError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object: pass a lesion "
                          "result file")
    return data


# One writer per output. Each output a command checks before its work (check_output_path,
# check_output_folder) is locked there, for the whole command: a lock file beside it,
# ".NAME.lesion-lock", held with flock(2). The kernel releases a flock when its holder's last file
# descriptor closes, whatever ends the process (an exception, Ctrl-C, SIGTERM, SIGKILL, a crash), so
# a lock never outlives its process and a lock file left by a killed one is simply taken over: no
# process id to check for liveness (a reused id would keep a dead run's lock forever; another
# machine's, on a shared folder, cannot be checked at all) and no race between two runs both judging
# a file stale. A holder removes its lock file when done, while still holding it; a run that
# opened the file before that finds, once it holds it, that the path no longer names it, and opens it
# again (so two runs never hold two different files of one name).
LOCK_SUFFIX = f"{TEMP_MARK}-lock"


def lock_file(target: Path) -> Path:
    """The lock file of the output ``target`` (a file or a folder): beside it, hidden."""
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.{LOCK_SUFFIX}")


class OutputLocks:
    """The outputs one command holds (:func:`output_locks`); each path once, released together."""

    def __init__(self) -> None:
        self._held: dict[Path, tuple[int | None, list[Path]]] = {}  # lock file -> (its fd, folders made for it)

    def hold(self, target: str | Path, parameter: str = "path", shown: str | Path | None = None) -> None:
        """Lock the output ``target`` for this command, or refuse it (a :class:`ParameterError` on
        ``parameter``) when another process holds it; a path this command holds already is kept."""
        lock = lock_file(Path(target))
        if lock in self._held:
            return
        made = _make_folders(lock.parent)
        try:
            self._held[lock] = (_take_lock(lock, parameter, str(shown if shown is not None else target)), made)
        except BaseException:
            _remove_empty(made)
            raise

    def release(self) -> None:
        for lock, (fd, made) in reversed(list(self._held.items())):
            if fd is not None:
                with contextlib.suppress(OSError):
                    if _same_file(fd, lock):  # removed while held: no other run can hold it meanwhile
                        os.unlink(lock)
                os.close(fd)
            _remove_empty(made)  # a folder made for a lock and left empty by a run that wrote nothing
        self._held.clear()

    def __contains__(self, target: object) -> bool:
        return isinstance(target, (str, Path)) and lock_file(Path(target)) in self._held


_LOCKS: ContextVar[OutputLocks | None] = ContextVar("lesion_output_locks", default=None)


@contextlib.contextmanager
def output_locks() -> Iterator[OutputLocks]:
    """One writer per output, for the block: every output checked inside it (by
    :func:`check_output_path` or :func:`check_output_folder`, which every command runs before its
    work) is locked until the block ends, however it ends; a path another process holds is refused
    there, before any work, with one line. The CLI runs each command inside one; a library caller
    may too. ``.hold(path)`` locks a path by hand."""
    locks = OutputLocks()
    token = _LOCKS.set(locks)
    try:
        yield locks
    finally:
        _LOCKS.reset(token)
        locks.release()


def hold_output(target: str | Path, parameter: str = "path", shown: str | Path | None = None) -> None:
    """Lock ``target`` in the current :func:`output_locks` block (none: nothing is locked). Under
    torchrun, rank 0 alone writes results, and alone holds their locks."""
    locks = _LOCKS.get()
    if locks is None or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0"):
        return
    locks.hold(target, parameter, shown)


def _take_lock(lock: Path, parameter: str, shown: str) -> int | None:
    """The open, flock-held lock file ``lock`` (its process id written in it), or a refusal. None
    where the file system has no locks (the output is then written as before, unlocked)."""
    import fcntl

    for _ in range(100):  # each turn: the file was removed or replaced between open and flock
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:  # its folder went (removed by a run that wrote nothing): make it again
            _make_folders(lock.parent)
            continue
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ParameterError(parameter, f"{shown!r}: its lock file {str(lock)!r} is a symbolic link: "
                                     "remove the link (lesion never writes through one)") from None
            raise ParameterError(parameter, f"{shown!r}: cannot create its lock file {str(lock)!r} "
                                 f"({e.strerror or e}): choose a writable path") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ParameterError(parameter, f"{shown!r}: its lock file {str(lock)!r} is not a regular file: "
                                     "move it away")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ParameterError(parameter, f"{shown!r} is being written by another lesion run{_holder(fd)}: "
                                     "wait for it to finish, or write elsewhere") from None
            except OSError as e:
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    return None
                raise
            if not _same_file(fd, lock):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise ParameterError(parameter, f"{shown!r}: its lock file {str(lock)!r} keeps being replaced: another "
                         "program is writing there; write elsewhere")


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _holder(fd: int) -> str:
    """Who holds a lock, as its holder wrote it: ' (process 1234)', or '' before it has."""
    try:
        pid = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; those created, outermost first."""
    missing = []
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made = []
    for each in reversed(missing):
        try:
            each.mkdir()
        except FileExistsError:
            continue
        except OSError:
            break  # the lock's open says why, in one line
        made.append(each)
    return made


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty: a result is in it (or another run's lock)
            return


def temp_prefix(name: str) -> str:
    """The start of the name of every temp file or folder lesion makes beside an output ``name``:
    its marker and this process's id, which :func:`remove_own_orphans` reads back."""
    return f".{name}.{TEMP_MARK}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no such id: keep its files
        return True
    return True


def remove_own_orphans(folder: Path, name: str) -> list[Path]:
    """Delete the temp files and folders beside output ``name`` that lesion made (its marker,
    :func:`temp_prefix`) in a process that is gone: a run killed mid-write. A name without the
    marker is never touched, nor one whose process still runs; returns what was removed."""
    own = re.compile(re.escape(f".{name}.{TEMP_MARK}-") + r"(\d+)-")
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = own.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def remove_orphans(folder: Path, pattern: str = "*.tmp*", max_age_s: float = ORPHAN_AGE_S) -> None:
    """In a folder only lesion writes (its cache): delete temp files matching ``pattern`` left by
    runs killed mid-write; recent ones may still be in use. Never used beside a user's output,
    where :func:`remove_own_orphans` goes by marker and process id instead."""
    now = time.time()
    for tmp in folder.glob(pattern):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink()
        except OSError:
            pass


def cache_dir() -> Path:
    return Path(os.environ.get("LESION_CACHE", Path.home() / ".cache" / "lesion"))
