"""Harden a model against its Achilles' heel: an exact change of basis that keeps the function.

``harden_model(lm, method="hadamard", seed=0)`` folds every RMSNorm scale into the layers that
read it and rotates the residual stream by an orthogonal Q (a random rotation or a randomized
Hadamard), optionally rotating inside each attention head too (``heads=True``). The model
computes the same function up to rounding; a massive activation that sat in one residual
channel is spread over all of them, so no single neuron output carries it any more.
"""
from __future__ import annotations

import copy
import time

import torch

from .rotations import METHODS, residual_rotation, spread
from .transform import SUPPORTED, check_family, fold_norms, rotate_heads, rotate_residual

__all__ = ["METHODS", "SUPPORTED", "check_family", "harden_model", "harden_weights"]


def harden_weights(model: torch.nn.Module, method: str = "hadamard", seed: int = 0, heads: bool = False,
                   watch: int | None = None) -> dict:
    """Transform ``model`` in place; returns what was done (the settings a HardenRecord keeps).
    ``watch``: a residual channel whose spread under Q is reported (the heel's channel)."""
    model_type = check_family(model)
    start = time.perf_counter()
    hidden = model.config.hidden_size
    q = residual_rotation(hidden, method, seed)
    untied = fold_norms(model)
    rotate_residual(model, q)
    head_info = rotate_heads(model, torch.Generator().manual_seed(seed + 1), method) if heads else None
    done = {"method": method, "seed": seed, "heads": head_info, "model_type": model_type,
            "hidden_size": hidden, "untied_embeddings": untied, "seconds": time.perf_counter() - start,
            "orthogonality_error": float((q @ q.T - torch.eye(hidden, dtype=torch.float64)).abs().max())}
    if watch is not None:
        done["spread"] = spread(q, watch)
    return done


def harden_model(lm, method: str = "hadamard", seed: int = 0, heads: bool = False, inplace: bool = False,
                 watch: int | None = None):
    """(hardened model, HardenRecord) for a :class:`lesion.loading.LoadedModel`. The record holds
    the rotation and the source's fingerprint; :func:`lesion.harden.proof.trace` and
    :func:`~lesion.harden.proof.compare` measure that the function is kept (``lesion harden`` adds it).
    ``inplace`` transforms ``lm.model`` itself (no second copy)."""
    from ..results.harden import HardenRecord
    check_family(lm.model)
    source = lm.fingerprint()
    model = lm.model if inplace else copy.deepcopy(lm.model)
    done = harden_weights(model, method, seed, heads, watch)
    from ..loading import weights_fingerprint
    record = HardenRecord(source_model=lm.name, source_fingerprint=source,
                          hardened_fingerprint=weights_fingerprint(model), rotation=done,
                          settings={"model": lm.name, "model_fingerprint": source, "dtype": lm.dtype})
    return model, record
