"""On-disk cache of Stage 1 scores, keyed by everything that determines them.

The key is the model fingerprint, the text, the ranker and its options, the seed, the
dtype and the components: change any of them and the scores are recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .loading import cache_dir


def scores_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached(key: str, compute: Callable, enabled: bool = True) -> tuple[object, bool]:
    """(the object stored under ``key``, True), or compute and store it atomically: (it, False)."""
    path = cache_dir() / "scores" / f"{key}.pt"
    if enabled and path.is_file():
        try:
            return torch.load(path, weights_only=False), True
        except Exception:  # a corrupt cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    value = compute()
    if enabled:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(value, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return value, False
