"""A mixture of experts with real weights, made from a dense Llama-style model.

No real MoE checkpoint installs offline, and a random one has no heel worth finding. Upcycling
copies the dense MLP into every expert (each copy's weights scaled by 1 + ``noise`` * N(0, 1)) and
adds a random router with top-k routing whose weights sum to 1 over the chosen experts: the block
computes about what the dense MLP did, so the model keeps its function, and the dense model's heel
moves into the experts (the channel of ``down_proj`` now written by every expert).

    python -m lesion.tools.upcycle --model smollm2-135m --out smollm2-moe   # then lesion scan --model smollm2-moe
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from ..errors import LesionError, ModelError, ParameterError
from ..runtime.files import check_output_folder, write_folder
from ..runtime.options import check_seed, check_whole_number


def check_upcycle(experts: int = 4, top_k: int = 2, noise: float = 0.01, seed: int = 0) -> None:
    """The options of :func:`upcycle`, checked before any model is read."""
    for name, value in (("experts", experts), ("top_k", top_k)):
        check_whole_number(name, value, 1, 1024)
    if top_k > experts:
        raise ParameterError("top_k", f"must be at most `experts` ({experts}), got {top_k}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and 0 <= noise <= 1):
        raise ParameterError("noise", f"must be a number 0..1 (got {noise!r}): each copy's weights are scaled by "
                             "1 + noise * N(0, 1)")
    check_seed(seed)


def upcycle(model: torch.nn.Module, experts: int = 4, top_k: int = 2, noise: float = 0.01,
            seed: int = 0) -> PreTrainedModel:
    """A Mixtral model with ``experts`` noisy copies of each block's MLP and a random router."""
    from transformers import MixtralConfig, MixtralForCausalLM

    check_upcycle(experts, top_k, noise, seed)

    dense: Any = model.config  # a transformers config: its fields are its family's
    if getattr(dense, "model_type", None) not in ("llama", "mistral", "qwen2"):
        raise ModelError(f"upcycle takes a Llama-style model (llama, mistral, qwen2), not {dense.model_type!r}")
    config = MixtralConfig(
        vocab_size=dense.vocab_size, hidden_size=dense.hidden_size, intermediate_size=dense.intermediate_size,
        num_hidden_layers=dense.num_hidden_layers, num_attention_heads=dense.num_attention_heads,
        num_key_value_heads=dense.num_key_value_heads, head_dim=getattr(dense, "head_dim", None),
        hidden_act=dense.hidden_act, max_position_embeddings=dense.max_position_embeddings,
        rms_norm_eps=dense.rms_norm_eps, rope_parameters=dict(dense.rope_parameters),
        tie_word_embeddings=dense.tie_word_embeddings, num_local_experts=experts, num_experts_per_tok=top_k,
        bos_token_id=dense.bos_token_id, eos_token_id=dense.eos_token_id, pad_token_id=dense.pad_token_id,
        sliding_window=None, router_jitter_noise=0.0, output_router_logits=False)
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        moe = MixtralForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        if ".mlp." not in name:
            state[name] = value
    body: Any = model.model  # the Llama-style body: embed_tokens, layers, norm
    for i, layer in enumerate(body.layers):
        mlp: Any = layer.mlp
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach().float()
        down = mlp.down_proj.weight.detach().float()

        def copies(w: torch.Tensor) -> torch.Tensor:
            return (w * (1 + noise * torch.randn((experts, *w.shape), generator=gen))).to(dtype)
        prefix = f"model.layers.{i}.mlp."
        state[prefix + "experts.gate_up_proj"] = copies(gate_up)
        state[prefix + "experts.down_proj"] = copies(down)
        router = torch.randn((experts, dense.hidden_size), generator=gen) * dense.initializer_range
        state[prefix + "gate.weight"] = router.to(dtype)
    moe.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        moe.tie_weights()
    missing = [n for n, p in moe.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ModelError(f"upcycle left parameters unset: {missing[:3]}")
    for buffer_name, buffer in list(moe.named_buffers()):
        if buffer.device.type == "meta":  # rotary tables: made again on the CPU from the config
            owner = moe.get_submodule(buffer_name.rpartition(".")[0])
            fresh = type(owner)(config)
            for n, b in fresh.named_buffers(recurse=False):
                owner.register_buffer(n, b, persistent=False)
    return moe.eval()


def check_out(out: str | Path) -> Path:
    """The folder the upcycled model goes to: writable, and new or empty (nothing of the user's is replaced)."""
    target = check_output_folder(out, "out")
    if target.is_dir() and any(target.iterdir()):
        raise ParameterError("out", f"{str(out)!r} is not empty: pass a new or empty folder")
    return target


def save(moe: PreTrainedModel, tokenizer, out: str | Path) -> Path:
    """Write the model and tokenizer to a new or empty folder ``out``, whole or not at all."""
    def fill(tmp: Path) -> None:
        moe.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        check_out(out)  # again: a file the user put there meanwhile is theirs, not replaced
    return write_folder(check_out(out), fill, out)


def main(argv: list[str] | None = None) -> int:
    from ..cli import Parser, error_line
    from ..model.loading import load_model

    p = Parser(prog="python -m lesion.tools.upcycle", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", required=True)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    try:
        args = p.parse_args(argv)
        check_upcycle(args.experts, args.top_k, args.noise, args.seed)
        check_out(args.out)
        lm = load_model(args.model, progress=False)
        save(upcycle(lm.model, args.experts, args.top_k, args.noise, args.seed), lm.tokenizer, args.out)
    except LesionError as e:
        print(f"{p.prog}: error: {error_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {args.experts} experts per block, top-{args.top_k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
