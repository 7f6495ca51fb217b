"""Why `lesion harden` refuses Gemma 3 rather than approximating: how far the closest rotatable
model moves its function.

    python benchmarks/harden_gemma.py            # gemma3-270m, lesion's five proof texts

Gemma 3 scales each branch's output per channel (its post-attention and post-feedforward
RMSNorms) before the residual add, and a per-channel scale does not commute with a rotation of
the stream. A scalar does: the closest model a rotation could keep exactly replaces every such
scale by its mean. This prints how much that alone changes: per text, the perplexity before and
after and Delta (log10 of their ratio), and the largest logit difference.
"""
from __future__ import annotations

import argparse
import math

import torch

from lesion.harden.proof import proof_texts
from lesion.model.loading import load_model
from lesion.masking.metrics import nll_of_logits
from lesion.texts.text import encode


def traces(lm, texts: dict[str, str]) -> dict[str, tuple[float, torch.Tensor]]:
    out = {}
    with torch.inference_mode():
        for name, text in texts.items():
            ids = encode(lm.tokenizer, text)
            logits = lm.model(input_ids=ids, use_cache=False).logits
            out[name] = (float(nll_of_logits(logits, ids)[0].double().mean()), logits[0].float())
    return out


def flatten_post_norms(model) -> list[float]:
    """Each post-branch norm's (1 + weight) scale set to its mean; returns each scale's std / mean."""
    spread = []
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm):
                scale = 1 + norm.weight.double()
                spread.append(float(scale.std() / scale.mean().abs()))
                norm.weight.copy_((scale.mean() - 1).expand_as(norm.weight).to(norm.weight.dtype))
    return spread


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3-270m")
    lm = load_model(p.parse_args().model, dtype="float32", progress=False)
    texts = proof_texts()
    before = traces(lm, texts)
    spread = sorted(flatten_post_norms(lm.model))
    after = traces(lm, texts)
    print(f"post-branch norm scales, std / mean: {spread[0]:.2f} to {spread[-1]:.2f} "
          f"(median {spread[len(spread) // 2]:.2f})")
    print("| text | PPL original | PPL, post-norm scales set to their mean | Delta | max abs logit difference |")
    print("|---|---|---|---|---|")
    for name in texts:
        (b, lb), (a, la) = before[name], after[name]
        ppl = math.exp(a) if a < 700 else math.inf
        print(f"| {name} | {math.exp(b):.1f} | {ppl:.3g} | {(a - b) / math.log(10):.1f} | "
              f"{float((lb - la).abs().max()):.0f} |")


if __name__ == "__main__":
    main()
