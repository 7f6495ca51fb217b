"""Files: atomic writes, JSON that strict readers load, output-path checks and the sweep of
temp files left by killed runs. A leaf: it imports nothing from lesion but the error type.

Non-finite floats are written as the strings "inf", "-inf", "nan" so that any strict JSON
reader can load the files; :func:`as_float` turns them back.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import LesionError

ORPHAN_AGE_S = 3600  # a temp file this old belongs to a run that died mid-write


def _finite_safe(value: Any) -> Any:
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


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (non-finite floats as strings)."""
    if dataclasses.is_dataclass(data):
        data = data.to_dict()
    return write_text(path, json.dumps(_finite_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_output_path(path: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output that would replace something other than a regular file
    (a folder, a device node such as /dev/null, a pipe): the atomic rename would swap it out."""
    path = Path(path)
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise LesionError(f"{flag} {str(path)!r} is {what}: pass the path of a file to write")
    if not str(path.name) or path.name in (".", ".."):
        raise LesionError(f"{flag} {str(path)!r} names no file: pass the path of a file to write")
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write a file atomically: a reader (or an interrupted run) never sees half a file.

    The file gets the permissions a plain ``open`` would (0666 less the umask), not the
    private 0600 of a temp file; a failed write (read-only, full disk, no permission) is
    one line naming the path, and leaves nothing behind.
    """
    path = check_output_path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent, f".{path.name}.*.tmp")  # left by a run killed while writing this file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # a full disk reports here, not after the rename
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise LesionError(f"cannot write {str(path)!r} ({e.strerror or e}): choose a writable path "
                          "with free space") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise LesionError(f"{str(path)!r} is a folder: pass the JSON file written by an earlier lesion run")
    if not path.is_file():
        raise LesionError(f"{str(path)!r} not found: pass the JSON written by an earlier lesion run")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LesionError(f"{str(path)!r} is not valid JSON ({e}): re-create it with lesion") from None
    except OSError as e:
        raise LesionError(f"cannot read {str(path)!r} ({e.strerror or e}): check its permissions") from None
    if not isinstance(data, dict):
        raise LesionError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object: pass a lesion "
                          "result file")
    return data


def remove_orphans(folder: Path, pattern: str = "*.tmp*", max_age_s: float = ORPHAN_AGE_S) -> None:
    """Delete temp files matching ``pattern`` left by runs killed mid-write; recent ones may still be in use."""
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
