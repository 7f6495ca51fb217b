"""Queries and keys inside RoPE's frequency planes: which planes may turn, and by what angle.

RoPE rotates each plane (i, i + rotary/2) of a query or key head by a position's angle. A second
rotation of that plane, the same for a key head and every query head reading it, commutes with
RoPE and keeps every attention score: it is the only change of basis exact there. Where a
per-channel q/k norm sits between the projection and RoPE (Qwen3, Gemma 3), the plane may turn only
where the norm's two scales are equal (in ``q_norm`` and ``k_norm``): elsewhere the norm pins it.

A plane has two coordinates, so a rotation cannot spread a direction the model relies on over many
neurons: the best basis puts that direction halfway between the two axes, and a random angle may as
well put it on one axis and make that neuron a heel (measured on SmolLM2: a random angle turned
``model.layers.7.self_attn.q_proj:151`` from Delta 0.010 into a one-neuron heel, Delta 1.15; 78% of
angles do so in that plane). ``fitted`` angles are chosen from the first-order change of the loss
when a direction of the plane is zeroed, measured on lesion's texts that no report or proof reads
(:data:`CALIBRATION`): zeroing the direction at angle phi of head h's plane changes the mean NLL by
about -(m + c cos 2phi + s sin 2phi), and the angle minimises, over the heads sharing it, the larger
change of the plane's two new axes, which puts the most harmful direction at 45 degrees from both.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..masking.metrics import nll_of_logits
from ..model.hook_points import hooked
from .rotations import plane_angles

# lesion's texts the angles are fitted on: none is a proof text or the Bookends sentence, so the
# heel a report measures and the proof are held out.
CALIBRATION = ("biography", "media", "german", "spanish", "long")
GRID = 360  # candidate angles in [0, 90) degrees (a plane's pair of axes repeats every 90)


def pinned_planes(attn: torch.nn.Module, half: int, rotary: int) -> torch.Tensor:
    """(half,) bool: the planes a per-channel q/k norm pins (its scale differs between the plane's
    two channels, in ``q_norm`` or ``k_norm``); none without such norms. The scale is probed
    (the norm of a vector of ones), so every norm flavour (Gemma's 1 + weight) reads the same."""
    pinned = torch.zeros(half, dtype=torch.bool)
    for name in ("q_norm", "k_norm"):
        norm = getattr(attn, name, None)
        if norm is None:
            continue
        weight = norm.weight
        with torch.no_grad():
            scale = norm(torch.ones(1, weight.shape[-1], dtype=weight.dtype, device=weight.device))[0].cpu()
        pinned |= scale[:half] != scale[half:rotary]
    return pinned


def sensitivity(model: torch.nn.Module, sites: Sequence[tuple], heads, calibration: Sequence[torch.Tensor]):
    """Per layer, for every query head and key head and plane, the coefficients (m, c, s) of the
    first-order change of the mean NLL (averaged over ``calibration``) when the direction at angle
    phi of the plane is zeroed: about -(m + c cos 2phi + s sin 2phi). ``sites`` holds each layer's
    (query, key) output sites, ``(linear, rows)``; returns [(q (n_heads, half, 3), k (n_kv, half, 3))]."""
    names = {id(m): name for name, m in model.named_modules()}
    modules = {names[id(linear)] for q_site, k_site in sites for linear, _ in (q_site, k_site)}
    total: list = [None] * len(sites)
    for ids in calibration:
        leaves: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), hooked(model, {name: _as_leaf(leaves, name) for name in modules}):
            logits = model(input_ids=ids, use_cache=False).logits
            loss = nll_of_logits(logits, ids).double().mean()
            held = list(leaves)
            grads = dict(zip(held, torch.autograd.grad(loss, [leaves[n] for n in held])))
        for i, (q_site, k_site) in enumerate(sites):
            per_text = tuple(_coefficients(*_plane_pairs(leaves, grads, names, site, count, heads))
                             for site, count in ((q_site, heads.n_heads), (k_site, heads.n_kv)))
            total[i] = per_text if total[i] is None else tuple(a + b for a, b in zip(total[i], per_text))
    return [(q / len(calibration), k / len(calibration)) for q, k in total]


def _as_leaf(leaves: dict, name: str):
    """A hook making the projection's output a leaf of the graph: its gradient is all the backward
    pass computes (no weight's)."""
    def fn(output):
        leaves[name] = output.detach().requires_grad_(True)
        return leaves[name]
    return fn


def _plane_pairs(leaves, grads, names, site, count: int, heads):
    """The site's output and its gradient as (tokens, heads, half) pairs (x_a, x_b, g_a, g_b)."""
    linear, rows = site
    name = names[id(linear)]
    x, g = leaves[name].detach()[0, :, rows].double(), grads[name][0, :, rows].double()
    half = heads.rotary_dim // 2
    x, g = (t.reshape(t.shape[0], count, heads.head_dim) for t in (x, g))
    return x[..., :half], x[..., half:2 * half], g[..., :half], g[..., half:2 * half]


def _coefficients(xa, xb, ga, gb) -> torch.Tensor:
    """(heads, half, 3): m, c, s of u^T S u = m + c cos 2phi + s sin 2phi, S = sum over tokens of the
    symmetrised g x^T on the plane, u = (cos phi, sin phi). Zeroing direction u changes the input
    by -(x.u) u, so the loss by about -(x.u)(g.u) = -u^T S u."""
    saa, sbb = (ga * xa).sum(0), (gb * xb).sum(0)
    sab = ((ga * xb) + (gb * xa)).sum(0) / 2
    return torch.stack([(saa + sbb) / 2, (saa - sbb) / 2, sab], dim=-1)


def fitted_angles(q: torch.Tensor, k: torch.Tensor, heads, pinned: torch.Tensor) -> torch.Tensor:
    """(n_kv, half) angles theta, one per key/value head and plane, shared by its query heads. The
    rotation by theta (:func:`lesion.harden.transform._plane_rotation`) makes the plane's new axes
    the directions -theta and 90 - theta; theta minimises, over the key head and its query heads,
    max(change zeroing one axis, change zeroing the other) = -m + |c cos 2phi + s sin 2phi| at
    phi = -theta. A plane nothing is sensitive to, or that a norm pins, keeps theta = 0."""
    group = heads.n_heads // heads.n_kv
    half = q.shape[1]
    # (n_kv, group + 1, half, 3): the key head, then the query heads that read it
    shared = torch.cat([k[:, None], q.reshape(heads.n_kv, group, half, 3)], dim=1)
    phi = torch.arange(GRID, dtype=torch.float64) * (math.pi / 2 / GRID)
    m, c, s = (shared[..., i, None] for i in range(3))
    worst = (-m + (c * torch.cos(2 * phi) + s * torch.sin(2 * phi)).abs()).amax(dim=1)  # (n_kv, half, GRID)
    best = phi[worst.argmin(dim=-1)]  # the first of equal minima: 0 where every angle ties
    return torch.where(pinned, torch.zeros_like(best), -best)


def random_angles(heads, pinned: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n_kv, half) uniform angles (float64), 0 on pinned planes: the data-free choice."""
    angles = torch.stack([plane_angles(heads.rotary_dim // 2, generator) for _ in range(heads.n_kv)])
    return torch.where(pinned, torch.zeros_like(angles), angles)
