"""lesion's Stage 1 side by side with the authors' Stage 1 script, in one process, on one model object.

The authors' script (``method/1_importance_evaluation.py`` of their repository) is not part of
lesion: pass its path. It is imported as it is; its analyser is built around the model lesion
loaded (its own loader wants GPUs and the Hub), so both sides run the same weights, the same text,
alpha = 5 and the same K. Their hooks stay registered after their run, so lesion runs first and
their hooks are removed afterwards.

Printed: each side's wall time, the ratio, and each side's top neurons (theirs are (module,
position, channel) entries; lesion's are neurons with the position of their best score).

    PYTHONPATH=. python benchmarks/authors_stage1.py --authors PATH/1_importance_evaluation.py [--samples 100]
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import tempfile
import time

import torch

from lesion import Study, load_model
from lesion.method.rankers import rank_by_noise
from lesion.texts.text import BOOKENDS


def authors_analyser(path: str, model, tokenizer):
    spec = importlib.util.spec_from_file_location("authors_stage1_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "MultiGPUNeuronAnalyzer"):
        raise SystemExit(f"{path} has no MultiGPUNeuronAnalyzer: is it the authors' 1_importance_evaluation.py?")
    analyser = object.__new__(module.MultiGPUNeuronAnalyzer)  # their __init__ loads from the Hub onto GPUs
    logger = logging.getLogger("authors")
    logger.setLevel(logging.WARNING)
    analyser.__dict__.update(logger=logger, model=model, tokenizer=tokenizer, num_gpus=0, seed=42,
                             device="cpu", layer_activations={}, hooks=[], hooks_setup=False)
    return analyser


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--authors", required=True, help="path to the authors' 1_importance_evaluation.py")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--top", type=int, default=5)
    args = p.parse_args()
    if not os.path.isfile(args.authors):
        p.error(f"--authors {args.authors!r} is not a file: give the path of the authors' "
                "method/1_importance_evaluation.py")

    study = Study.create(load_model(args.model, progress=False), BOOKENDS)
    model, ids, index = study.lm.model, study.input_ids, study.index
    with torch.inference_mode():  # warm: the first forward faults the memory-mapped weights in
        model(input_ids=ids)
    start = time.perf_counter()
    scores = rank_by_noise(model, ids, index, samples=args.samples, alpha=5.0, progress=False)
    ours = time.perf_counter() - start
    order = torch.sort(scores.values, descending=True, stable=True).indices[:args.top].tolist()
    top_ours = [(str(n), int(scores.positions[i])) for n, i in zip(index.neurons(order), order)]

    analyser = authors_analyser(args.authors, model, study.lm.tokenizer)
    text = study.lm.tokenizer.decode(ids[0], skip_special_tokens=True)
    same_ids = torch.equal(study.lm.tokenizer.encode(text, return_tensors="pt"), ids.cpu())
    torch.manual_seed(42)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        try:
            theirs_sorted = analyser.analyze_activation_difference(
                text, noise_scale=5.0, num_samples=args.samples, output_file=os.path.join(folder, "out.json"))
        finally:
            for hook in analyser.hooks:
                hook.remove()
        theirs = time.perf_counter() - start
    top_theirs = [(f"{e['layer_name']}:{e['hidden_idx']}", e["seq_idx"]) for e in theirs_sorted[:args.top]]

    print(f"model {args.model}: {ids.shape[1]} tokens, K={args.samples}, alpha 5, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; the same token ids on both sides: {same_ids}")
    print(f"lesion Stage 1: {ours:.1f} s   the authors' script: {theirs:.1f} s   ratio {theirs / ours:.2f}x")
    print("top (neuron, position):")
    for rank, (a, b) in enumerate(zip(top_ours, top_theirs), 1):
        print(f"  {rank}. lesion {a[0]} @ {a[1]}   authors {b[0]} @ {b[1]}")


if __name__ == "__main__":
    main()
