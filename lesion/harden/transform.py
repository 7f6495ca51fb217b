"""The exact transformation: fold every RMSNorm scale into the layers reading its output, then
rotate the residual stream by an orthogonal Q (and, optionally, values and queries/keys inside
each head where that is exact).

Why it is exact, for pre-norm blocks with RMSNorm: RMSNorm(h) = g * h / rms(h). With g folded
into the readers (W <- W diag(g)) the norm is h / rms(h), and rms(h Q) = rms(h) for orthogonal Q,
so norm(h Q) = norm(h) Q. A reader of the rotated stream recovers its input with W Q, a writer
puts its output into the rotated basis with Q^T W, and the stream stays rotated from the
embeddings (E Q) to the LM head (W Q). Every product is formed in float64 and cast back once.

Gemma 3 normalises each branch's output with a per-channel scale before the residual add: no
rotation of its stream is exact, and only the rotations inside its heads are done there.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import ModelError, ParameterError
from ..runtime.options import HARDEN_QK_ANGLES
from ..results.harden import HeadRotation
from .planes import fitted_angles, pinned_planes, random_angles, sensitivity
from .rotations import orthogonal

_POST_NORMS = ("applies a scaled RMSNorm to each branch's output before the residual add, and a per-channel "
               "scale does not commute with a rotation of the residual stream")
# model_type -> why lesion cannot rotate it exactly (one line, for the refusal).
REFUSED = {
    "gemma": "Gemma scales its embeddings and norms by (1 + weight); lesion does not fold that form yet",
    "gemma2": f"Gemma 2 {_POST_NORMS}",
    "gemma3": f"Gemma 3 {_POST_NORMS} (lesion rotates inside the heads of the text model, gemma3_text, only)",
}
# model_type -> why its residual stream stays as it is: only the rotations inside its heads are exact.
HEADS_ONLY = {"gemma3_text": f"Gemma 3 {_POST_NORMS}"}
LAYERNORM = ("gpt2", "gpt_neox", "opt", "gptj", "falcon", "bloom", "gpt_bigcode", "phi")
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "phi3")


def check_family(model: torch.nn.Module, heads: bool = False) -> str:
    """The model type, or one LesionError line saying why it cannot be rotated exactly (a family
    whose residual stream cannot be rotated is taken with ``heads``, which rotates inside its heads only)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type in HEADS_ONLY:
        if not heads:
            raise ModelError(f"cannot rotate the residual stream of model type {model_type!r}: "
                             f"{HEADS_ONLY[model_type]}; only the rotations inside its heads are exact: give `heads`")
        return model_type
    if model_type in REFUSED:
        raise ModelError(f"cannot harden model type {model_type!r}: {REFUSED[model_type]}")
    if model_type in LAYERNORM:
        raise ModelError(f"cannot harden model type {model_type!r}: its LayerNorm subtracts the mean over "
                         "channels, and a rotation does not keep that mean (it moves the all-ones direction); "
                         "lesion does not centre the stream first")
    if model_type not in SUPPORTED:
        raise ModelError(f"cannot harden model type {model_type!r}: exact rotation is implemented for "
                         f"{', '.join(SUPPORTED)} (pre-norm RMSNorm families), and inside the heads of "
                         f"{', '.join(HEADS_ONLY)}")
    return model_type


@dataclass(frozen=True)
class Heads:
    """Attention geometry: query heads, key/value heads, head width, rotary width."""
    n_heads: int
    n_kv: int
    head_dim: int
    rotary_dim: int

    @classmethod
    def of(cls, config) -> "Heads":
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        factor = getattr(config, "partial_rotary_factor", None) or 1.0
        return cls(n_heads, n_kv, head_dim, int(head_dim * factor))

    @property
    def q_width(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.n_kv * self.head_dim


class Block:
    """One decoder block's weights as row ranges of its (possibly fused) linear layers."""

    def __init__(self, layer: torch.nn.Module, heads: Heads):
        attn, mlp = layer.self_attn, layer.mlp
        self.attn = attn
        self.input_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.o, self.down = attn.o_proj, mlp.down_proj
        if hasattr(attn, "qkv_proj"):  # Phi-3: q, k and v stacked in one layer
            qkv, q, kv = attn.qkv_proj, heads.q_width, heads.kv_width
            self.attn_readers = [attn.qkv_proj]
            self.q, self.k, self.v = (qkv, slice(0, q)), (qkv, slice(q, q + kv)), (qkv, slice(q + kv, q + 2 * kv))
        else:
            self.attn_readers = [attn.q_proj, attn.k_proj, attn.v_proj]
            self.q, self.k, self.v = ((m, slice(None)) for m in self.attn_readers)
        self.mlp_readers = [mlp.gate_up_proj] if hasattr(mlp, "gate_up_proj") else [mlp.gate_proj, mlp.up_proj]


def blocks_of(model: torch.nn.Module) -> list[Block]:
    heads = Heads.of(model.config)
    try:
        return [Block(layer, heads) for layer in model.model.layers]
    except AttributeError as e:
        raise ModelError(f"cannot harden this {model.config.model_type!r} model: its blocks are not laid out "
                         f"as lesion expects ({e})") from None


def _on(matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``matrix`` (built on the CPU) on ``like``'s device: a model on a GPU, or spread over several,
    is transformed where each weight lives."""
    return matrix if matrix.device == like.device else matrix.to(like.device)


def _set(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def _norm_scale(norm: torch.nn.Module) -> torch.Tensor:
    return norm.weight.detach().double()


def fold_norms(model: torch.nn.Module) -> bool:
    """Fold every RMSNorm scale into its readers and set the norms to ones. Returns whether the
    embeddings were untied (the LM head reads the final norm; a tied head would change the inputs)."""
    for block in blocks_of(model):
        for norm, readers in ((block.input_norm, block.attn_readers), (block.post_norm, block.mlp_readers)):
            g = _norm_scale(norm)
            for linear in readers:
                _set(linear.weight, linear.weight.double() * _on(g, linear.weight))
            _set(norm.weight, torch.ones_like(g))
    g = _norm_scale(model.model.norm)
    untied = untie_if_needed(model, g)
    head = model.get_output_embeddings()
    _set(head.weight, head.weight.double() * _on(g, head.weight))
    _set(model.model.norm.weight, torch.ones_like(g))
    return untied


def untie_if_needed(model: torch.nn.Module, final_scale: torch.Tensor) -> bool:
    """A head tied to the embeddings cannot take the final norm's scale: give it its own copy.
    (Once rotated, a tied head reads E Q and would still be right; only the scale breaks it.)"""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head.weight.data_ptr() != embed.weight.data_ptr():
        return False
    if bool((final_scale == 1).all()):
        return False
    head.weight = torch.nn.Parameter(embed.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    return True


def rotate_residual(model: torch.nn.Module, q: torch.Tensor) -> None:
    """Readers W <- W Q, writers W <- Q^T W (bias too), embeddings E <- E Q; norms must be ones."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    _set(embed.weight, embed.weight.double() @ _on(q, embed.weight))
    if head.weight.data_ptr() != embed.weight.data_ptr():
        _set(head.weight, head.weight.double() @ _on(q, head.weight))
    for block in blocks_of(model):
        for linear in block.attn_readers + block.mlp_readers:
            _set(linear.weight, linear.weight.double() @ _on(q, linear.weight))
        for linear in (block.o, block.down):
            _set(linear.weight, _on(q, linear.weight).T @ linear.weight.double())
            if linear.bias is not None:
                _set(linear.bias, _on(q, linear.bias).T @ linear.bias.double())


def rotate_heads(model: torch.nn.Module, generator: torch.Generator, method: str = "rotate",
                 qk_angles: str = "fitted", calibration: Mapping[str, torch.Tensor] | None = None) -> HeadRotation:
    """Inside each attention head, where exact: values (and o_proj's input) by an orthogonal matrix
    per key/value head (random, or a randomized Hadamard for ``method="hadamard"``); queries and
    keys by an angle in each rotary frequency plane, the same for a key/value head and its query
    heads (rotations in one plane commute with RoPE), on the planes no per-channel q/k norm pins.
    ``qk_angles``: "fitted" on ``calibration`` (name -> (1, T) token ids; :mod:`lesion.harden.planes`
    says why), "random", or "none"."""
    if qk_angles not in HARDEN_QK_ANGLES:
        raise ParameterError("qk_angles", f"must be one of {', '.join(HARDEN_QK_ANGLES)} (got {qk_angles!r})")
    if qk_angles == "fitted" and not calibration:
        raise ParameterError("calibration", "is needed to fit the query/key plane angles: token ids of texts "
                             "(harden_loaded encodes lesion's own), or `qk_angles` random or none")
    heads = Heads.of(model.config)
    group, half = heads.n_heads // heads.n_kv, heads.rotary_dim // 2
    blocks = blocks_of(model)
    pinned = [pinned_planes(block.attn, half, heads.rotary_dim) for block in blocks]
    fitted = (sensitivity(model, [(b.q, b.k) for b in blocks], heads, list(calibration.values()))
              if qk_angles == "fitted" and half else None)
    layers = planes = 0
    error = 0.0
    for i, block in enumerate(blocks):
        rotations = [orthogonal(heads.head_dim, method, generator) for _ in range(heads.n_kv)]
        error = max([error] + [_orthogonality_error(r) for r in rotations])
        _rotate_rows(block.v, heads, rotations)
        o = block.o.weight.double().clone()
        for h in range(heads.n_heads):
            cols = slice(h * heads.head_dim, (h + 1) * heads.head_dim)
            o[:, cols] = o[:, cols] @ _on(rotations[h // group], o)
        _set(block.o.weight, o)
        if qk_angles == "none" or not half:
            continue
        angles = (fitted_angles(*fitted[i], heads, pinned[i]) if fitted is not None
                  else random_angles(heads, pinned[i], generator))
        turned = int((angles != 0).sum())
        if turned:
            rotations = [_plane_rotation(heads, a) for a in angles]
            _rotate_rows(block.k, heads, rotations)
            _rotate_rows(block.q, heads, [rotations[h // group] for h in range(heads.n_heads)])
            layers, planes = layers + 1, planes + turned
    return HeadRotation(values=True, queries_keys_layers=layers, qk_angles=qk_angles, qk_planes=planes,
                        qk_planes_pinned=heads.n_kv * int(sum(int(p.sum()) for p in pinned)),
                        calibration=tuple(calibration) if fitted is not None else None,
                        orthogonality_error=error)


def _orthogonality_error(m: torch.Tensor) -> float:
    return float((m @ m.T - torch.eye(m.shape[0], dtype=m.dtype)).abs().max())


def _plane_rotation(heads: Heads, angles: torch.Tensor) -> torch.Tensor:
    """head_dim x head_dim orthogonal R acting as a rotation by angles[i] in plane (i, i + rotary/2),
    written as the right factor of a row vector (v' = v R), the way RoPE rotates (x1, x2)."""
    r = torch.eye(heads.head_dim, dtype=torch.float64)
    half = heads.rotary_dim // 2
    idx = torch.arange(half)
    cos, sin = torch.cos(angles), torch.sin(angles)
    # RoPE: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin; as v' = v R: R[a,a]=cos, R[b,a]=-sin, R[a,b]=sin.
    r[idx, idx], r[idx + half, idx + half] = cos, cos
    r[idx + half, idx], r[idx, idx + half] = -sin, sin
    return r


def _rotate_rows(site: tuple, heads: Heads, rotations: list[torch.Tensor]) -> None:
    """Output rows of a projection, head by head: head j's output v_j becomes v_j R_j, so its
    rows become R_j^T W_j (its bias R_j^T b_j)."""
    linear, rows = site
    weight = linear.weight.double().clone()
    bias = linear.bias.double().clone() if linear.bias is not None else None
    start = rows.start or 0
    for j, r in enumerate(rotations):
        part = slice(start + j * heads.head_dim, start + (j + 1) * heads.head_dim)
        weight[part] = _on(r, weight).T @ weight[part]
        if bias is not None:
            bias[part] = _on(r, bias).T @ bias[part]
    _set(linear.weight, weight)
    if bias is not None:
        _set(linear.bias, bias)
