"""Proof that a hardened model computes the original's function, measured rather than assumed:
perplexity on several texts, the largest logit difference, greedy generations token for token.
Speed is not timed here: the two models run minutes apart, so a timing would measure the machine's
load, not the rotation (merged into the weights: same shapes, same work). benchmarks/harden_speed.py
times both models in alternation."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..masking.metrics import nll_of_logits
from ..results.harden import GenerationProof, Proof, TextProof
from ..texts.text import BOOKENDS, encode

GENERATE_TOKENS = 64


def proof_texts() -> dict[str, str]:
    """The Bookends sentence and lesion's own texts of other kinds and languages. The rotation is
    data-free, so none of them was used to harden; they only check the function."""
    from ..analysis import TEXTS
    return {"bookends": BOOKENDS, **{name: TEXTS[name] for name in ("wikipedia", "news", "french", "chinese")}}


PROMPTS = ("The history of the printing press begins", "Later reviews were more positive. In just over")


@dataclass
class Trace:
    """What a model computes on fixed inputs: per-text mean NLL and logits, greedy generations."""
    nll: dict[str, float]
    logits: dict[str, torch.Tensor]
    generated: list[list[int]]


def trace(model: torch.nn.Module, tokenizer, texts: dict[str, str], prompts=PROMPTS,
          new_tokens: int = GENERATE_TOKENS) -> Trace:
    device = model.get_input_embeddings().weight.device
    nll, logits = {}, {}
    with torch.inference_mode():
        for name, text in texts.items():
            ids = encode(tokenizer, text, device)
            out = model(input_ids=ids, use_cache=False).logits
            logits[name] = out[0].float().cpu()
            nll[name] = float(nll_of_logits(out, ids)[0].double().mean())
        generated = [_greedy(model, tokenizer, p, new_tokens, device) for p in prompts]
    return Trace(nll, logits, generated)


def cast_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` in ``dtype`` that never holds a second full-precision copy (deepcopy,
    then cast, would: 7 GB more for a 1.5B model): built empty on the meta device from the
    config, then filled tensor by tensor."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # a GGUF's dequantised weights are plain floats
        del config.quantization_config
    with torch.device("meta"):
        low = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                               attn_implementation=model.config._attn_implementation)
    low.to_empty(device=model.get_input_embeddings().weight.device)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    with torch.no_grad():
        for name, p in low.named_parameters():
            p.copy_(params[name])
        for name, b in low.named_buffers():
            b.copy_(buffers[name])
    low.generation_config = copy.deepcopy(model.generation_config)
    return low.eval()


def _greedy(model, tokenizer, prompt: str, new_tokens: int, device) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    # min_new_tokens: an early end-of-sequence would compare fewer than new_tokens tokens
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def compare(reference: Trace, hardened: Trace) -> Proof:
    """Side by side: PPL before/after and relative difference per text, the max |logit difference|
    (and the max |logit| for scale), whether each greedy generation is identical."""
    texts = {}
    for name, nll in reference.nll.items():
        before, after = math.exp(nll), math.exp(hardened.nll[name])
        diff = (reference.logits[name] - hardened.logits[name]).abs().max()
        texts[name] = TextProof(ppl_before=before, ppl_after=after, ppl_rel_diff=abs(after - before) / before,
                                max_abs_logit_diff=float(diff), max_abs_logit=float(reference.logits[name].abs().max()),
                                tokens=int(reference.logits[name].shape[0]))
    generations = tuple(GenerationProof(tokens=len(a), identical=a == b, first_difference=_first_difference(a, b))
                        for a, b in zip(reference.generated, hardened.generated))
    return Proof(texts=texts, max_ppl_rel_diff=max(t.ppl_rel_diff for t in texts.values()),
                 max_abs_logit_diff=max(t.max_abs_logit_diff for t in texts.values()), generations=generations,
                 generations_identical=all(g.identical for g in generations))


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
