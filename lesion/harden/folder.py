"""The hardened model as a Hugging Face folder that plain transformers loads: safetensors weights,
config (norms stored as ones, embeddings untied when folding required it), tokenizer, and
lesion-harden.json recording the rotation, the source model and the proof. The folder is built
beside its final place and renamed into it, so a killed run never leaves half a model."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import LesionError
from ..files import remove_orphans, write_text

RECORD = "lesion-harden.json"
REPORT = "harden.md"


def check_out_folder(path: str | Path) -> Path:
    """Refuse, before any work, an --out that is a file or a folder holding something else."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LesionError(f"--out {str(path)!r} is a file: pass a folder to write the hardened model into")
    if path.is_dir() and any(path.iterdir()) and not (path / RECORD).is_file():
        raise LesionError(f"--out {str(path)!r} is a folder with other files in it: pass a new or empty "
                          "folder (a folder an earlier `lesion harden` wrote is replaced)")
    return path


def save_folder(model: torch.nn.Module, tokenizer, record, report: str, path: str | Path,
                progress: bool = True) -> Path:
    path = check_out_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent, f".{path.name}.*")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    try:
        _save_model(model, tmp, progress)
        tokenizer.save_pretrained(tmp)
        record.save(tmp / RECORD)
        write_text(tmp / REPORT, report)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as e:
        raise LesionError(f"cannot write {str(path)!r} ({e.strerror or e}): choose a writable folder with "
                          "free space") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def _save_model(model: torch.nn.Module, folder: Path, progress: bool) -> None:
    from transformers.utils import logging as hf_logging

    from ..loading import drop_gguf_quantizer
    drop_gguf_quantizer(model)
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:  # --quiet: transformers' own "Writing model shards" bar too
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
