"""The hardened model as a Hugging Face folder that plain transformers loads: safetensors weights,
config (norms stored as ones, embeddings untied when folding required it), tokenizer, and
lesion-harden.json recording the rotation, the source model and the proof. The folder is built
beside its final place and renamed into it, so a killed run never leaves half a model.

lesion deletes only what it wrote: the folder gets a manifest (lesion-files.json: every file,
its size and SHA-256), and an earlier folder is replaced only when it holds nothing else, each
file as lesion wrote it. A symbolic link to a folder is written through; the link stays."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import ParameterError
from ..runtime.files import check_output_folder, json_text, write_folder, write_text

from ..results.filenames import HARDEN_MANIFEST as MANIFEST, HARDEN_RECORD as RECORD, HARDEN_REPORT as REPORT
HASH_CHUNK = 1 << 24


def check_out_folder(path: str | Path, parameter: str = "out", needs_bytes: int = 0) -> Path:
    """The folder a hardened model will be written to (a link's target), checked before any work:
    writable, not a file or a link to nothing, with ``needs_bytes`` free, and new, empty or
    holding only what an earlier ``lesion harden`` wrote (checked file by file)."""
    target = check_output_folder(path, parameter, needs_bytes)
    if target.is_dir():
        foreign = foreign_files(target)
        if foreign:
            raise ParameterError(parameter, f"{str(path)!r} holds {foreign[0]!r}"
                                 + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "")
                                 + ", which lesion did not write there: pass a new or empty folder (lesion replaces "
                                 "only a folder holding nothing but what an earlier hardening wrote)")
    return target


def foreign_files(folder: Path) -> list[str]:
    """The entries of ``folder`` that its manifest does not vouch for: not listed, or changed
    since (size or SHA-256), or not a plain file or folder. Without a manifest, every entry."""
    listed = _manifest(folder)
    foreign = []
    for entry in sorted(folder.rglob("*")):
        name = entry.relative_to(folder).as_posix()
        if name == MANIFEST and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            if not any(f.startswith(name + "/") for f in listed):  # a folder of the user's, even empty
                foreign.append(name)
            continue
        want = listed.get(name)
        if entry.is_symlink() or not entry.is_file() or want is None or entry.stat().st_size != want["bytes"] \
                or file_sha256(entry) != want["sha256"]:
            foreign.append(name)
    return foreign


def _manifest(folder: Path) -> dict[str, dict]:
    path = folder / MANIFEST
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        return {str(k): {"bytes": int(v["bytes"]), "sha256": str(v["sha256"])} for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable: it vouches for nothing
        return {}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file()}
    write_text(folder / MANIFEST, json_text({"written_by": "lesion harden", "files": files}))


def save_folder(model: torch.nn.Module, tokenizer, record, report: str, path: str | Path,
                progress: bool = True) -> Path:
    """Write the folder at ``path`` (through a link), replacing an earlier one only when
    :func:`check_out_folder` finds nothing in it that lesion did not write."""
    def fill(tmp: Path) -> None:
        _save_model(model, tmp, progress)
        tokenizer.save_pretrained(tmp)
        record.save(tmp / RECORD)
        write_text(tmp / REPORT, report)
        write_manifest(tmp)
        check_out_folder(path)  # again: a file the user put there while lesion worked is theirs
    write_folder(check_out_folder(path), fill, path)
    return Path(path)


def _save_model(model: torch.nn.Module, folder: Path, progress: bool) -> None:
    from transformers.utils import logging as hf_logging

    from ..model.model_cache import drop_gguf_quantizer
    drop_gguf_quantizer(model)
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:  # --quiet: transformers' own "Writing model shards" bar too
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
