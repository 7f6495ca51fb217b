"""Hardening in memory: a bare module (:func:`harden_weights`) or a loaded model
(:func:`harden_loaded`), with no proof and no folder (:func:`lesion.harden.harden_model` adds them)."""
from __future__ import annotations

import copy
import time

import torch

from ..results.harden import Rotation
from .rotations import residual_rotation, spread
from .transform import check_family, fold_norms, rotate_heads, rotate_residual


def harden_weights(model: torch.nn.Module, method: str = "hadamard", seed: int = 0, heads: bool = False,
                   watch: int | None = None) -> Rotation:
    """Transform ``model`` in place; returns what was done (the settings a HardenRecord keeps).
    ``watch``: a residual channel whose spread under Q is reported (the heel's channel)."""
    model_type = check_family(model)
    start = time.perf_counter()
    hidden = model.config.hidden_size
    q = residual_rotation(hidden, method, seed)
    untied = fold_norms(model)
    rotate_residual(model, q)
    head_info = rotate_heads(model, torch.Generator().manual_seed(seed + 1), method) if heads else None
    return Rotation(method=method, seed=seed, heads=head_info, model_type=model_type, hidden_size=hidden,
                    untied_embeddings=untied, seconds=time.perf_counter() - start,
                    orthogonality_error=float((q @ q.T - torch.eye(hidden, dtype=torch.float64)).abs().max()),
                    spread=None if watch is None else spread(q, watch))


def harden_loaded(lm, method: str = "hadamard", seed: int = 0, heads: bool = False, inplace: bool = False,
                  watch: int | None = None, name: str | None = None):
    """(hardened :class:`~lesion.model.loading.LoadedModel`, HardenRecord) for a loaded model, in
    memory. The record holds the rotation and the source's fingerprint; :func:`harden_model`
    adds the proof that the function is kept and writes the folder. ``inplace`` transforms
    ``lm.model`` itself (no second copy; ``lm`` must not be used after). ``name``: the hardened
    model's (default: the source's, with the rotation)."""
    from ..model.loading import LoadedModel
    from ..results.harden import HardenRecord
    check_family(lm.model)
    source = lm.fingerprint()
    model = lm.model if inplace else copy.deepcopy(lm.model)
    done = harden_weights(model, method, seed, heads, watch)
    hardened = LoadedModel(model, lm.tokenizer, name or f"{lm.name} (hardened: {method}, seed {seed})", lm.dtype)
    record = HardenRecord(source_model=lm.name, source_fingerprint=source,
                          hardened_fingerprint=hardened.fingerprint(), rotation=done,
                          settings={"model": lm.name, "model_fingerprint": source, "dtype": lm.dtype})
    return hardened, record
