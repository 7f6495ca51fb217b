"""Greedy continuations with and without masks: the failure modes the paper shows."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .hooks import mask_neurons
from .neurons import Neuron, SiteIndex


def generate(model, tokenizer, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` (deterministic), decoded without the prompt."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.get_input_embeddings().weight.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def generate_masked(model, tokenizer, index: SiteIndex, neurons: Sequence[Neuron], prompt: str,
                    max_new_tokens: int = 40) -> str:
    with mask_neurons(model, index, list(neurons)):
        return generate(model, tokenizer, prompt, max_new_tokens)


def repeated_share(tokenizer, text: str) -> float:
    """Share of the continuation's tokens that repeat an earlier one: a cheap degeneracy signal."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return 1 - len(set(ids)) / len(ids) if ids else 0.0
