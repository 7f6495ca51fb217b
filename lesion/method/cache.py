"""On-disk cache of Stage 1 scores, keyed by everything that determines them.

The key is the scorer version, the model fingerprint, the text, the ranker and its
options, the seed, the dtype, the components and the batch size (batched forwards sum in
a different order, so the last bits of a score depend on it). Entries are safetensors
files: plain tensors, never pickles, so a file planted in the cache cannot run code; an
entry that is not the shape the index expects is recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..runtime.files import remove_orphans
from ..runtime.files import cache_dir

# Bump when a scorer's arithmetic changes, so that scores computed by older code are not reused.
SCORER_VERSION = 2


def scores_key(**parts) -> str:
    parts = {**parts, "scorer_version": SCORER_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached_tensors(key: str, compute: Callable[[], dict[str, torch.Tensor]],
                   valid: Callable[[dict[str, torch.Tensor]], bool], enabled: bool = True
                   ) -> tuple[dict[str, torch.Tensor], bool]:
    """(the tensors stored under ``key``, True), or compute, store atomically and return (them, False).

    ``valid`` vets a stored entry (names, shapes, dtypes); one it rejects, or one that does
    not parse, is recomputed and overwritten.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    folder = cache_dir() / "scores"
    path = folder / f"{key}.safetensors"
    if enabled and path.is_file():
        try:
            stored = load_file(path)
            if valid(stored):
                return stored, True
        except (SafetensorError, OSError, ValueError, RuntimeError):
            pass
    value = compute()
    if enabled:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            remove_orphans(folder)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
            os.close(fd)
            try:
                save_file({k: v.detach().cpu().contiguous() for k, v in value.items()}, tmp)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return value, False
