"""Re-check an expert heel without lesion's hooks: zero, in transformers' own model, the weights that
write each expert neuron of a critical.json or heel.json, and print the perplexity before and after.

Handles ``<block>.experts.E.down_proj:c`` (row c of expert E's down projection) and ``<block>:c``
(row c of every expert's down projection), the neurons an upcycled model's heel is made of.

    python benchmarks/moe_check.py --model /tmp/smollm2-moe --neurons /tmp/moe-run/critical.json
"""
from __future__ import annotations

import argparse
import json
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lesion.texts.text import BOOKENDS


def nll(model, ids) -> float:
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--neurons", required=True)
    args = p.parse_args()
    names = json.loads(open(args.neurons).read())["neurons"]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(args.model)(BOOKENDS, return_tensors="pt").input_ids
    clean = nll(model, ids)
    for name in names:
        module, _, channel = name.rpartition(":")
        c = int(channel)
        if ".experts." in module and module.endswith(".down_proj"):
            experts, e = module.rsplit(".", 2)[0], int(module.rsplit(".", 2)[1])
            model.get_submodule(experts).down_proj.data[e, c, :] = 0
        else:
            model.get_submodule(f"{module}.experts").down_proj.data[:, c, :] = 0
        print(f"zeroed the weights writing {name}")
    masked = nll(model, ids)
    print(f"PPL {math.exp(clean):.2f} -> {math.exp(masked):.4g}   Delta {(masked - clean) / math.log(10):.3f}")


if __name__ == "__main__":
    main()
