"""The dequantised copy of a GGUF model under the cache folder: written once, atomically, with a record
of its weights that every later load checks."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


from ..errors import LesionError
from .tokenizer import load_tokenizer
from .fingerprints import weights_fingerprint
from ..runtime.files import cache_dir


def _gguf_cache(folder: str, gguf: str) -> Path:
    st = (Path(folder) / gguf).stat()
    key = hashlib.sha256(f"{Path(folder).resolve() / gguf}|{st.st_size}|{st.st_mtime_ns}".encode())
    return cache_dir() / "models" / key.hexdigest()[:20]


RECORD = "lesion-weights.json"  # beside a dequantised copy: its weights' fingerprint when written


def _load_cached(cached: Path, kwargs: dict, dtype: str):
    """(tokenizer, model, fingerprint or None) from the dequantised copy of a GGUF file, or None
    when there is none, it is unreadable (a disk that filled up, a killed copy), or its weights
    are not those recorded when it was written: that copy is deleted and rebuilt from the GGUF."""
    from transformers import AutoModelForCausalLM

    if not (cached / "config.json").is_file():
        return None
    try:
        tokenizer = load_tokenizer(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, **kwargs)
        digest = _check_record(cached, model, dtype)
    except Exception:  # noqa: BLE001 - any failure of a cache means the same thing: rebuild it
        import shutil
        shutil.rmtree(cached, ignore_errors=True)
        return None
    return tokenizer, model, digest


class _CacheAltered(Exception):
    """The dequantised copy holds other weights than when it was written (or no record of them)."""


def _check_record(cached: Path, model, dtype: str) -> str | None:
    """Compare the copy with the record written beside it: the weights' fingerprint when loaded in
    the dtype it was saved in (then returned, so it is not computed twice), else its files' SHA-256."""
    import json
    import sys
    if not (cached / RECORD).exists():
        return _adopt(cached, model, dtype)
    try:
        record = json.loads((cached / RECORD).read_text(encoding="utf-8"))
        if record.get("dtype") == dtype:
            digest = weights_fingerprint(model)
            same = digest == record["weights_fingerprint"]
        else:
            digest = None
            same = files_sha256(cached) == record["files_sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same, digest = False, None
    if not same:
        print(f"lesion: note: the dequantised copy in {cached} does not match the fingerprint recorded when it "
              "was written (changed, damaged, or written by an older lesion): rebuilding it from the GGUF file",
              file=sys.stderr)
        raise _CacheAltered
    return digest


def _adopt(cached: Path, model, dtype: str) -> str:
    """A copy written before lesion kept records: its record is written now, once (rebuilding
    every such copy would cost each user minutes), and checked on every later load."""
    from ..runtime.files import json_text, write_text
    digest = weights_fingerprint(model)
    with contextlib.suppress(LesionError):  # a cache lesion cannot write only goes unrecorded
        write_text(cached / RECORD, json_text(_weights_record(cached, dtype, digest)))
    return digest


def _weights_record(folder: Path, dtype: str, digest: str) -> dict:
    """What a dequantised copy is checked against on every load."""
    return {"dtype": dtype, "weights_fingerprint": digest, "files_sha256": files_sha256(folder)}


def files_sha256(folder: Path) -> str:
    """SHA-256 over a saved model's weight files, in name order, streamed."""
    h = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        h.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def sweep_orphans(folder: Path) -> None:
    """Delete the temp copies (``<key>.tmp<pid>``) of dequantisations whose process is gone
    (a SIGKILL leaves one of hundreds of MB); a live process's copy is left to finish."""
    import shutil
    if not folder.is_dir():
        return
    for tmp in folder.glob("*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def drop_gguf_quantizer(model) -> None:
    """A model dequantised from GGUF holds float weights but still carries its "quantizer",
    which only blocks ``save_pretrained``."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _save_atomically(model, tokenizer, target: Path, dtype: str) -> str | None:
    """Save the dequantised model under the cache, with a record of its weights' fingerprint
    (in ``dtype``) and its files' SHA-256 that every later load checks; returns the fingerprint."""
    import json
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")  # sweep_orphans removes it if we are killed
    drop_gguf_quantizer(model)
    digest = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(Exception):  # the check only ever saves time: never lose the cache to it
            load_tokenizer(tmp)  # checks, once, whether later loads may take the fast tokenizer
        digest = weights_fingerprint(model)
        (tmp / RECORD).write_text(json.dumps(_weights_record(tmp, dtype, digest)), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs time
    finally:
        if tmp.exists():
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return digest
