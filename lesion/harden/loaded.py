"""Hardening in memory: a bare module (:func:`harden_weights`) or a loaded model
(:func:`harden_loaded`), with no proof and no folder (:func:`lesion.harden.harden_model` adds them)."""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping

import torch

from ..results.harden import Rotation
from .rotations import residual_rotation, spread
from .transform import HEADS_ONLY, check_family, fold_norms, rotate_heads, rotate_residual


def harden_weights(model: torch.nn.Module, method: str = "hadamard", seed: int = 0, heads: bool = False,
                   watch: int | None = None, qk_angles: str = "fitted",
                   calibration: Mapping[str, torch.Tensor] | None = None) -> Rotation:
    """Transform ``model`` in place; returns what was done (the settings a HardenRecord keeps).
    ``watch``: a residual channel whose spread under Q is reported (the heel's channel).
    ``heads``: also inside the heads, the query/key planes by ``qk_angles`` ("fitted" needs
    ``calibration``, name -> (1, T) token ids; see :func:`lesion.harden.transform.rotate_heads`).
    A family whose residual stream no rotation keeps (Gemma 3) is rotated inside its heads only."""
    model_type = check_family(model, heads)
    start = time.perf_counter()
    hidden = model.config.hidden_size
    residual = model_type not in HEADS_ONLY
    untied, error, channel = False, 0.0, None
    if residual:
        q = residual_rotation(hidden, method, seed)
        untied = fold_norms(model)
        rotate_residual(model, q)
        error = float((q @ q.T - torch.eye(hidden, dtype=torch.float64)).abs().max())
        channel = None if watch is None else spread(q, watch)
    head_info = None
    if heads:
        head_info = rotate_heads(model, torch.Generator().manual_seed(seed + 1), method, qk_angles, calibration)
        error = max(error, head_info.orthogonality_error or 0.0)
    return Rotation(method=method, seed=seed, heads=head_info, model_type=model_type, hidden_size=hidden,
                    untied_embeddings=untied, seconds=time.perf_counter() - start, orthogonality_error=error,
                    spread=channel, residual=residual)


def calibration_ids(tokenizer, device) -> dict[str, torch.Tensor]:
    """lesion's texts the query/key angles are fitted on (:data:`lesion.harden.planes.CALIBRATION`), encoded."""
    from ..texts.named import TEXTS
    from ..texts.text import encode
    from .planes import CALIBRATION
    return {name: encode(tokenizer, TEXTS[name], device) for name in CALIBRATION}


def harden_loaded(lm, method: str = "hadamard", seed: int = 0, heads: bool = False, inplace: bool = False,
                  watch: int | None = None, name: str | None = None, qk_angles: str = "fitted"):
    """(hardened :class:`~lesion.model.loading.LoadedModel`, HardenRecord) for a loaded model, in
    memory. The record holds the rotation and the source's fingerprint; :func:`harden_model`
    adds the proof that the function is kept and writes the folder. ``inplace`` transforms
    ``lm.model`` itself (no second copy; ``lm`` must not be used after). ``name``: the hardened
    model's (default: the source's, with the rotation). ``qk_angles``: with ``heads``, how the
    query/key planes turn ("fitted" on lesion's calibration texts, "random", "none")."""
    from ..model.loading import LoadedModel
    from ..results.harden import HardenRecord
    check_family(lm.model, heads)
    source = lm.fingerprint()
    calibration = calibration_ids(lm.tokenizer, lm.device) if heads and qk_angles == "fitted" else None
    model = lm.model if inplace else copy.deepcopy(lm.model)
    done = harden_weights(model, method, seed, heads, watch, qk_angles, calibration)
    hardened = LoadedModel(model, lm.tokenizer, name or f"{lm.name} (hardened: {method}, seed {seed})", lm.dtype)
    record = HardenRecord(source_model=lm.name, source_fingerprint=source,
                          hardened_fingerprint=hardened.fingerprint(), rotation=done,
                          settings={"model": lm.name, "model_fingerprint": source, "dtype": lm.dtype})
    return hardened, record
