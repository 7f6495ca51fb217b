"""The one place that knows how architectures name things.

A table by ``config.model_type`` says where the blocks are; names not in it fall back to
the largest ``ModuleList`` whose length is the layer count. Component kinds come from
module names by rules, so a new family with the usual names needs no entry.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch

from ..errors import ModelError, ParameterError

BLOCKS_BY_MODEL_TYPE = {
    "llama": "model.layers", "mistral": "model.layers", "qwen2": "model.layers", "qwen3": "model.layers",
    "gemma": "model.layers", "gemma2": "model.layers", "gemma3_text": "model.layers",
    "phi3": "model.layers", "gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers", "gptj": "transformer.h", "falcon": "transformer.h",
}

# Families whose model forward runs its blocks one after another, each fed only the previous
# block's hidden states (attention masks and rotary tables come from positions and are made
# before the loop): the hidden states entering block L do not depend on masks at or above L,
# so lesion.masking.ablation computes them once and shares them between batch rows. Only families
# the tests check against the full forward are listed; others always run the full forward.
SEQUENTIAL_BLOCKS = {"llama", "qwen2", "gemma3_text", "phi3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                     "granitemoe", "gpt_oss", "deepseek_v3", "llama4_text"}

# (pattern on the module name, kind); the first match wins.
KIND_RULES = [
    (r"experts\.routing$", "expert"),  # lesion.model.experts' taps: an expert as a unit, a router's logits
    (r"\.logits$", "router"),
    (r"(q|k)_norm$", "norm"),
    (r"(layernorm|layer_norm|ln_\w+|ln\d*|norm\d*)$", "ln"),
    (r"(qkv_proj|query_key_value|c_attn|Wqkv)$", "qkv"),
    (r"(q_proj|query)$", "q"),
    (r"(k_proj|key)$", "k"),
    (r"(v_proj|value)$", "v"),
    (r"(attn|attention)\.(o_proj|c_proj|out_proj|dense)$", "o"),
    (r"gate_up_proj$", "gate_up"),
    (r"(gate_proj|w1)$", "gate"),
    (r"(up_proj|c_fc|fc1|fc_in|dense_h_to_4h|w3)$", "up"),
    (r"(down_proj|c_proj|fc2|fc_out|dense_4h_to_h|w2)$", "down"),
    (r"(act_fn|act|activation_fn|activation)$", "act"),
]
KINDS = ("q", "k", "v", "o", "qkv", "gate", "up", "gate_up", "down", "act", "norm", "ln", "router", "moe",
         "expert", "other")
# An expert as a unit (``expert``) is opt-in, as the layer norms are: it is a set of neurons
# the other kinds already hold, asked for by ``unit="expert"``.
GROUPS = {
    "attn": ("q", "k", "v", "o", "qkv", "norm"),
    "mlp": ("gate", "up", "gate_up", "down", "act", "router", "moe"),
    "default": ("q", "k", "v", "o", "qkv", "gate", "up", "gate_up", "down", "act", "norm", "router", "moe",
                "other"),
    "all": KINDS,
}


def kind_of(name: str, module: torch.nn.Module) -> str:
    for pattern, kind in KIND_RULES:
        if re.search(pattern, name):
            return kind
    return "other" if any(True for _ in module.parameters(recurse=False)) else "none"


def resolve_components(components: Iterable[str] | str | None) -> set[str]:
    if components is None:
        return set(GROUPS["default"])
    if isinstance(components, str):
        components = [c for c in components.split(",") if c.strip()]
    kinds: set[str] = set()
    for c in components:
        c = c.strip()
        if c in GROUPS:
            kinds.update(GROUPS[c])
        elif c in KINDS:
            kinds.add(c)
        else:
            raise ParameterError("components", f"names an unknown component {c!r}: use kinds "
                                 f"{', '.join(KINDS)} or groups {', '.join(GROUPS)}")
    return kinds


UNITS = ("neuron", "expert")


def unit_components(components: Iterable[str] | str | None, unit: str = "neuron"):
    """The components a study of ``unit`` covers: ``expert`` studies whole experts (kind ``expert``:
    one unit per expert, masked by taking the expert out of its block's sum)."""
    if unit not in UNITS:
        raise ParameterError("unit", f"must be one of {', '.join(UNITS)} (got {unit!r})")
    if unit == "neuron":
        return components
    if components not in (None, "expert", ["expert"], ("expert",)):
        raise ParameterError("unit", f"expert studies whole experts: it cannot be combined with components "
                                     f"{components!r}")
    return "expert"


def block_prefix(model: torch.nn.Module) -> str:
    model_type = getattr(model.config, "model_type", None)
    known = BLOCKS_BY_MODEL_TYPE.get(str(model_type))
    if known is not None:
        try:
            model.get_submodule(known)
            return known
        except AttributeError:
            pass
    n_layers = getattr(model.config, "num_hidden_layers", None)
    lists = [(len(m), name) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    lists = [(n, name) for n, name in lists if n_layers is None or n == n_layers] or lists
    if not lists:
        raise ModelError(f"cannot find the transformer blocks of model type {model_type!r}: "
                         "add it to lesion.model.architectures.BLOCKS_BY_MODEL_TYPE")
    return max(lists)[1]


def layer_of(name: str, blocks: str) -> int:
    return int(name[len(blocks) + 1:].split(".", 1)[0])
