"""Orthogonal matrices for the residual stream: a Haar-random rotation and a randomized Hadamard.

Both are built in float64 from a seeded generator, so the same seed gives the same matrix bit
for bit on any machine. A Hadamard matrix of order n exists for n = 1, 2 and (as far as anyone
knows) every multiple of 4. Powers of two have Sylvester's construction; a width n = 2^k * m
with m odd gets a true Hadamard when Paley's construction gives one of order c = m * 2^j (c - 1
a prime = 3 mod 4, or c / 2 - 1 a prime = 1 mod 4) and n / c is a power of two: H_c kron
H_{n/c}. That covers the widths of the models lesion meets (SmolLM2 576 = 36 * 16, Qwen2.5
896 = 28 * 32 and 1536 = 12 * 128, 960 = 60 * 16, 5120 = 20 * 256). Every entry is then
+-1/sqrt(n): each residual channel is spread exactly evenly. Other widths fall back to the
Sylvester part times a random orthogonal m x m block, which spreads less evenly.
"""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from ..runtime.options import HARDEN_METHODS
from ..results.harden import ChannelSpread

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


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = chi(j - i), chi the Legendre symbol mod the prime q."""
    chi = -torch.ones(q, dtype=torch.float64)
    chi[torch.unique(torch.arange(1, q) ** 2 % q)] = 1
    chi[0] = 0
    i = torch.arange(q)
    return chi[(i[None, :] - i[:, None]) % q]


def paley_hadamard(c: int) -> torch.Tensor | None:
    """A +-1 Hadamard matrix of order c by Paley's constructions with a prime q, or None.
    I: q = c - 1 = 3 mod 4, H = I + S with S the skew conference matrix. II: q = c/2 - 1 = 1 mod 4,
    the symmetric conference matrix with each entry replaced by a 2 x 2 block."""
    q = c - 1
    if _is_prime(q) and q % 4 == 3:
        s = torch.zeros(c, c, dtype=torch.float64)
        s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, _jacobsthal(q)
        return torch.eye(c, dtype=torch.float64) + s
    q = c // 2 - 1
    if c % 2 == 0 and _is_prime(q) and q % 4 == 1:
        conference = torch.zeros(q + 1, q + 1, dtype=torch.float64)
        conference[0, 1:], conference[1:, 0], conference[1:, 1:] = 1, 1, _jacobsthal(q)
        one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(conference, one) + torch.kron((conference == 0).double(), zero)
    return None


def hadamard(n: int) -> torch.Tensor | None:
    """An orthogonal n x n matrix with every entry +-1/sqrt(n), or None where lesion cannot build one:
    H_c (Paley, or 1) kron the Sylvester H_{n/c}, for the smallest such c = (odd part) * 2^j."""
    power = n & -n  # the largest power of two dividing n
    c = n // power
    while c <= n:
        block = torch.ones(1, 1, dtype=torch.float64) if c == 1 else paley_hadamard(c)
        if block is not None:
            return torch.kron(block, sylvester_hadamard(n // c) * math.sqrt(n // c)) / math.sqrt(n)
        c *= 2
    return None


def randomized_hadamard(n: int, generator: torch.Generator) -> torch.Tensor:
    """diag(random signs) @ H_n; where no Hadamard of order n is built, H_{2^k} kron Q_m with Q_m
    random orthogonal (2^k the largest power of two dividing n)."""
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).to(torch.float64) * 2 - 1
    h = hadamard(n)
    if h is None:
        power = n & -n
        h = torch.kron(sylvester_hadamard(power), random_orthogonal(n // power, generator).contiguous())
    return signs[:, None] * h


def orthogonal(n: int, method: str, generator: torch.Generator) -> torch.Tensor:
    """An n x n orthogonal matrix (float64) of ``method`` drawn from ``generator``."""
    if method not in METHODS:
        raise ParameterError("method", f"must be one of {', '.join(METHODS)} (got {method!r})")
    return random_orthogonal(n, generator) if method == "rotate" else randomized_hadamard(n, generator)


def residual_rotation(n: int, method: str, seed: int) -> torch.Tensor:
    """The n x n orthogonal Q (float64) that ``method`` and ``seed`` name."""
    return orthogonal(n, method, torch.Generator().manual_seed(seed))


def plane_angles(planes: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform angles for rotations inside RoPE's frequency planes (float64)."""
    return torch.rand(planes, generator=generator, dtype=torch.float64) * (2 * math.pi)


def spread(q: torch.Tensor, channel: int) -> ChannelSpread:
    """How evenly Q spreads one residual channel over the new basis: the channel's unit vector
    e_c goes to row c of Q. flatness is max |Q_cj| * sqrt(n) (1: perfectly even, sqrt(n): not
    spread at all); top_share is the largest share of its energy one new channel holds."""
    row = q[channel].abs()
    n = q.shape[0]
    return ChannelSpread(channel=channel, flatness=float(row.max() * math.sqrt(n)),
                         top_share=float(row.max() ** 2), uniform_share=1.0 / n)
