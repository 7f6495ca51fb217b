"""Orthogonal matrices for the residual stream: a Haar-random rotation and a randomized Hadamard.

Both are built in float64 from a seeded generator, so the same seed gives the same matrix bit
for bit on any machine. A Hadamard matrix of order n exists for n = 1, 2 and (as far as anyone
knows) every multiple of 4, but only powers of two have the one-line Sylvester construction;
a width n = 2^k * m with m odd (SmolLM2: 576 = 64 * 9) gets the Kronecker product of the
Sylvester Hadamard of order 2^k with a random orthogonal m x m block, so every entry has the
magnitude of a Hadamard entry scaled by one entry of that small block.
"""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from ..options import HARDEN_METHODS

METHODS = HARDEN_METHODS


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-distributed n x n orthogonal matrix: QR of a Gaussian matrix, signs fixed by R's diagonal
    (without the sign fix the distribution is biased)."""
    gaussian = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(1, dtype=torch.float64))


def sylvester_hadamard(n: int) -> torch.Tensor:
    """The n x n Hadamard matrix of Sylvester's construction (n a power of two), scaled to be orthogonal."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def randomized_hadamard(n: int, generator: torch.Generator) -> torch.Tensor:
    """diag(random signs) @ (H_{2^k} kron Q_m), Q_m random orthogonal (identity when m = 1)."""
    power = n & -n  # the largest power of two dividing n
    odd = n // power
    block = random_orthogonal(odd, generator).contiguous() if odd > 1 else torch.ones(1, 1, dtype=torch.float64)
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).to(torch.float64) * 2 - 1
    return signs[:, None] * torch.kron(sylvester_hadamard(power), block)


def residual_rotation(n: int, method: str, seed: int) -> torch.Tensor:
    """The n x n orthogonal Q (float64) that ``method`` and ``seed`` name."""
    if method not in METHODS:
        raise ParameterError("method", f"must be one of {', '.join(METHODS)} (got {method!r})")
    generator = torch.Generator().manual_seed(seed)
    return random_orthogonal(n, generator) if method == "rotate" else randomized_hadamard(n, generator)


def plane_angles(planes: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform angles for rotations inside RoPE's frequency planes (float64)."""
    return torch.rand(planes, generator=generator, dtype=torch.float64) * (2 * math.pi)


def spread(q: torch.Tensor, channel: int) -> dict:
    """How evenly Q spreads one residual channel over the new basis: the channel's unit vector
    e_c goes to row c of Q. flatness is max |Q_cj| * sqrt(n) (1: perfectly even, sqrt(n): not
    spread at all); top_share is the largest share of its energy one new channel holds."""
    row = q[channel].abs()
    n = q.shape[0]
    return {"channel": channel, "flatness": float(row.max() * math.sqrt(n)),
            "top_share": float(row.max() ** 2), "uniform_share": 1.0 / n}
