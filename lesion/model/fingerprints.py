"""Fingerprints of weights: the identity of a whole model (a hash of every parameter's name, shape,
dtype and bytes, streamed), and of the weight slices that produce and consume each critical neuron,
which ``scan`` writes beside ``critical.json`` and ``lesion verify`` checks on a deployed copy."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from .neurons import Neuron, SiteIndex
from .weights import WeightSlice, consumers, parameter, producers


FINGERPRINT_CHUNK = 1 << 24  # elements hashed per step: bounds the copy a GPU or disk weight needs


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's bytes, streamed in chunks, offloaded ones read from
    accelerate's offload map. The dtype is part of the identity: a bfloat16 load of float32
    weights holds other numbers."""
    h = hashlib.sha256(str(getattr(model.config, "model_type", "")).encode())
    for name, _ in model.named_parameters():
        module, _, pname = name.rpartition(".")
        values = parameter(model.get_submodule(module), pname).detach()
        h.update(f"|{name}|{tuple(values.shape)}|{values.dtype}|".encode())
        flat = values.reshape(-1)
        for start in range(0, flat.numel(), FINGERPRINT_CHUNK):
            chunk = flat[start:start + FINGERPRINT_CHUNK].to("cpu").contiguous()
            h.update(chunk.view(torch.uint8).numpy())
    return h.hexdigest()[:32]


HEAD = 8  # values kept per slice, to tell a rescaling from another change


def _fingerprint(s: WeightSlice) -> dict:
    v = s.values.detach().to("cpu", torch.float32).contiguous()
    return {"slice": s.name, "sha256": hashlib.sha256(v.numpy().tobytes()).hexdigest(), "numel": v.numel(),
            "l2": float(v.norm()), "max_abs": float(v.abs().max()), "mean": float(v.mean()),
            "head": v.reshape(-1)[:HEAD].tolist()}


def fingerprints(model: torch.nn.Module, index: SiteIndex, neurons: Sequence[Neuron], dtype: str = "") -> dict:
    return {"dtype": dtype, "neurons": {str(n): [_fingerprint(s) for s in producers(model, n) +
                                                 consumers(model, index, n)] for n in neurons}}
