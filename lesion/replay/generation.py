"""Greedy continuations with and without masks: the failure modes the paper shows."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..masking.ablation import channel_means, check_ablation
from ..errors import ParameterError
from ..masking.masks import mask_neurons
from ..model.neurons import Neuron, SiteIndex, discover_sites
from ..texts.text import check_fits

if TYPE_CHECKING:
    from ..results import NeuronSet

MAX_NEW_TOKENS = 4096  # a continuation long enough to show a collapse; beyond it a typo


def check_generation(prompt: str, max_new_tokens: int) -> None:
    """A prompt to continue and a length, checked without a model."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ParameterError("max_new_tokens", f"must be 1..{MAX_NEW_TOKENS} (got {max_new_tokens!r})")
    if not prompt.strip():
        raise ParameterError("prompt", "is empty: give the text the model should continue")


def _prompt_ids(model, tokenizer, prompt: str, max_new_tokens: int) -> torch.Tensor:
    check_generation(prompt, max_new_tokens)
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.get_input_embeddings().weight.device)
    check_fits(model, ids.shape[1] + max_new_tokens, "max_new_tokens", "lower it or shorten `prompt`",
               what=f"plus the prompt ({ids.shape[1]} tokens) ")
    return ids


def generate(model, tokenizer, prompt: str, max_new_tokens: int = 40, use_cache: bool = True) -> str:
    """Greedy continuation of ``prompt`` (deterministic), decoded without the prompt; refused
    when the prompt and the continuation do not fit in the model's context."""
    ids = _prompt_ids(model, tokenizer, prompt, max_new_tokens)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=use_cache)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def generate_masked(model, tokenizer, index: SiteIndex, neurons: Sequence[Neuron], prompt: str,
                    max_new_tokens: int = 40, ablation: str = "zero") -> str:
    """:func:`generate` with ``neurons`` ablated as the result recorded: zero; mean (each
    neuron's mean over the prompt); position0 (zero at the first token, which needs every
    step to see the whole sequence, so the key-value cache is off)."""
    check_ablation(ablation)
    fill = None
    if ablation == "mean":
        ids = _prompt_ids(model, tokenizer, prompt, max_new_tokens)
        fill = channel_means(model, ids, index, [n.module for n in neurons])
    positions = slice(0, 1) if ablation == "position0" else None
    with mask_neurons(model, index, list(neurons), positions=positions, fill=fill):
        return generate(model, tokenizer, prompt, max_new_tokens, use_cache=ablation != "position0")


def repeated_share(tokenizer, text: str) -> float:
    """Share of the continuation's tokens that repeat an earlier one: a cheap degeneracy signal."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return 1 - len(set(ids)) / len(ids) if ids else 0.0


@dataclass(frozen=True)
class Continuation:
    """One prompt's greedy continuation, unmasked and masked, and the share of repeated tokens of each."""
    prompt: str
    original: str
    masked: str
    original_repeated: float
    masked_repeated: float


@dataclass(frozen=True)
class Continuations:
    """What :func:`compare_continuations` generated: a row per prompt."""
    rows: tuple[Continuation, ...]
    size: int  # neurons masked
    ablation: str
    notes: tuple[str, ...] = ()  # what an override changed


def compare_continuations(lm, result: "NeuronSet | str | Path", prompts: str | Sequence[str], *,
                          max_new_tokens: int = 40, ablation: str | None = None) -> Continuations:
    """``lesion generate`` as one call: each prompt's greedy continuation, unmasked and with
    ``result``'s neurons (a critical set or heel, or its file) masked under the ablation it
    recorded (``ablation`` overrides it, with a note); refused on another model.

        for row in compare_continuations(lm, "lesion-run/critical.json", "The capital of France is").rows:
            print(row.original, "|", row.masked)
    """
    from .recorded import resolve_ablation
    from ..method.study import check_same_model
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ParameterError("max_new_tokens", f"must be 1..{MAX_NEW_TOKENS} (got {max_new_tokens!r})")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(p.strip() for p in prompts):
        raise ParameterError("prompts", "is empty: give the text the model should continue")
    source: str | Path = "the result"
    if isinstance(result, (str, Path)):
        from .runfolder import read_neuron_set
        source, result = result, read_neuron_set(result)
    if not result.neurons:
        from .runfolder import no_neurons
        raise ParameterError("result", f"{str(source)!r} {no_neurons(result)}")
    check_same_model(result.settings, lm, "neuron set")
    index = discover_sites(lm.model, "all")
    neurons = list(result.neurons)
    index.check(neurons)
    chosen, notes = resolve_ablation(result, source, ablation)
    rows = []
    for prompt in prompts:
        original = generate(lm.model, lm.tokenizer, prompt, max_new_tokens)
        masked = generate_masked(lm.model, lm.tokenizer, index, neurons, prompt, max_new_tokens, chosen)
        rows.append(Continuation(prompt, original, masked, repeated_share(lm.tokenizer, original),
                                 repeated_share(lm.tokenizer, masked)))
    return Continuations(tuple(rows), len(neurons), chosen, notes)
