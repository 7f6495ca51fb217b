"""Adaptive K against the paper's K = 100: samples used, forwards saved, same critical set?

For each model and text: Stage 1 with ``samples="auto"`` (cap 100), then Stage 2 on its
ranking; Stage 1 with K = 100, then Stage 2 on that. When auto reaches the cap it has used
the same 100 samples as K = 100 (summed in other batches), so the K = 100 run is skipped.

    PYTHONPATH=. python benchmarks/adaptive_k.py [--models smollm2-135m,gemma3-270m] [--no-stage2-at-cap]

``--stability`` asks what any stopping rule could achieve: Stage 2 (gallop) on the ranking
of the first K samples for every checkpoint K = 10, 20, ..., 100 of the seeded stream, and on
K = 100 rankings of other seeds, each critical set compared with seed 42's K = 100 set. A K
below 100 whose set is not identical cannot be the stop of a rule that promises K = 100's set.

    PYTHONPATH=. python benchmarks/adaptive_k.py --stability --models gemma3-270m --texts bookends,news
"""
from __future__ import annotations

import argparse
import time

from lesion import Study, load_model
from lesion.method.rankers import rank_by_noise
from lesion.method.stage2 import find_critical_set
from lesion.analysis.sweep import jaccard
from lesion.method.rankers import ranking_from_scores
from lesion.texts.text import BOOKENDS

TEXTS = {
    "bookends": BOOKENDS,
    "news": ("The city council voted on Tuesday to extend the night bus service to the northern "
             "suburbs, after a survey found that most shift workers had no way home after midnight."),
    "german": ("Der kleine Bahnhof am Rand des Dorfes wurde im Sommer renoviert, und seitdem halten "
               "dort wieder jeden Morgen zwei Züge in Richtung der Stadt."),
}


def critical(study, scores, stage2: str = "linear"):
    ranking = ranking_from_scores(study.index, scores, "noise", 1000, study.lm.name, {})
    return find_critical_set(study.lm.model, study.input_ids, study.index, ranking.neurons, stage2=stage2,
                             progress=False)


def stability(study, seeds: list[int]) -> None:
    """Critical sets at every checkpoint of seed 42's stream and at K = 100 of other seeds."""
    plan = [(42, 100)] + [(42, k) for k in range(10, 100, 10)] + [(seed, 100) for seed in seeds]
    reference = None
    for seed, k in plan:
        scores = rank_by_noise(study.lm.model, study.input_ids, study.index, samples=k, seed=seed, progress=False)
        found = critical(study, scores, stage2="gallop")
        members = set(found.neurons)
        reference = reference or members
        print(f"  seed {seed} K {k:3d}: n* {len(members):4d}, Delta {found.delta:.2f}, Jaccard with seed 42 "
              f"K = 100 {jaccard(members, reference):.3f}, identical: {members == reference}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="smollm2-135m,gemma3-270m")
    p.add_argument("--texts", default=",".join(TEXTS))
    p.add_argument("--no-stage2-at-cap", action="store_true",
                   help="skip Stage 2 when auto ran to the cap: its samples are K = 100's")
    p.add_argument("--stability", action="store_true",
                   help="critical sets at every K of one stream and at K = 100 of other seeds (see above)")
    p.add_argument("--seeds", default="43,44", help="other seeds for --stability")
    args = p.parse_args()
    for model in args.models.split(","):
        lm = load_model(model, progress=False)
        for name in args.texts.split(","):
            study = Study.create(lm, TEXTS[name])
            m, ids, index = lm.model, study.input_ids, study.index
            if args.stability:
                print(f"{model} {name} ({ids.shape[1]} tokens):", flush=True)
                stability(study, [int(x) for x in args.seeds.split(",") if x])
                continue
            start = time.perf_counter()
            auto = rank_by_noise(m, ids, index, samples="auto", max_samples=100, progress=False)
            auto_s = time.perf_counter() - start
            a = auto.adaptive
            if a["samples_used"] == 100 and args.no_stage2_at_cap:
                print(f"{model} {name} ({ids.shape[1]} tokens): K used 100 of 100 (cap), settled top "
                      f"{a['settled_top']} of head {a['settle_top']}, stage 1 {auto_s:.1f} s; the same 100 "
                      "samples as K = 100 (Stage 2 not run)", flush=True)
                continue
            auto_set = critical(study, auto)
            if a["samples_used"] < 100:
                full_set = critical(study, rank_by_noise(m, ids, index, samples=100, progress=False))
                same = auto_set.neurons == full_set.neurons
            else:
                full_set, same = auto_set, "same 100 samples"
            print(f"{model} {name} ({ids.shape[1]} tokens): K used {a['samples_used']} of 100 "
                  f"({100 - a['samples_used']}% forwards saved), settled top {a['settled_top']} of head "
                  f"{a['settle_top']} ({a['stopped']}), stage 1 {auto_s:.1f} s; n* auto {len(auto_set.neurons)} "
                  f"(Delta {auto_set.delta:.2f}), n* K=100 {len(full_set.neurons)}, same critical set: {same}",
                  flush=True)


if __name__ == "__main__":
    main()
