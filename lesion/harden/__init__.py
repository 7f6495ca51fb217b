"""Harden a model against its Achilles' heel: an exact change of basis that keeps the function.

Every RMSNorm scale is folded into the layers that read it and the residual stream is rotated by
an orthogonal Q (a random rotation or a randomized Hadamard), optionally inside each attention
head too (``heads=True``). The model computes the same function up to rounding; a massive
activation that sat in one residual channel is spread over all of them, so no single neuron
output carries it any more.

:func:`harden_model` (also ``lesion.harden_model``) is what ``lesion harden`` runs: load, harden,
prove, measure, write the folder. :func:`harden_loaded` hardens a loaded model in memory, and
:func:`harden_weights` a bare ``torch.nn.Module``.
"""
from __future__ import annotations

from .loaded import harden_loaded, harden_weights
from .rotations import METHODS
from .transform import SUPPORTED, check_family
from .workflow import harden_model

__all__ = ["METHODS", "SUPPORTED", "check_family", "harden_loaded", "harden_model", "harden_weights"]
