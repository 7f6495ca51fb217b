"""Adaptive K against the paper's K = 100: samples used, forwards saved, same critical set?

For each model and text: Stage 1 with ``samples="auto"`` (cap 100), then Stage 2 on its
ranking; Stage 1 with K = 100, then Stage 2 on that. When auto reaches the cap it has used
the same 100 samples as K = 100 (summed in other batches), so the K = 100 run is skipped.

    PYTHONPATH=. python benchmarks/adaptive_k.py [--models smollm2-135m,gemma3-270m] [--no-stage2-at-cap]
"""
from __future__ import annotations

import argparse
import time

from lesion import Study, find_critical_set, load_model, rank_by_noise
from lesion.rankers import ranking_from_scores
from lesion.texts import BOOKENDS

TEXTS = {
    "bookends": BOOKENDS,
    "news": ("The city council voted on Tuesday to extend the night bus service to the northern "
             "suburbs, after a survey found that most shift workers had no way home after midnight."),
    "german": ("Der kleine Bahnhof am Rand des Dorfes wurde im Sommer renoviert, und seitdem halten "
               "dort wieder jeden Morgen zwei Züge in Richtung der Stadt."),
}


def critical(study, scores):
    ranking = ranking_from_scores(study.index, scores, "noise", 1000, study.lm.name, {})
    return find_critical_set(study.lm.model, study.input_ids, study.index, ranking.neurons, progress=False)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="smollm2-135m,gemma3-270m")
    p.add_argument("--texts", default=",".join(TEXTS))
    p.add_argument("--no-stage2-at-cap", action="store_true",
                   help="skip Stage 2 when auto ran to the cap: its samples are K = 100's")
    args = p.parse_args()
    for model in args.models.split(","):
        lm = load_model(model, progress=False)
        for name in args.texts.split(","):
            study = Study.create(lm, TEXTS[name])
            m, ids, index = lm.model, study.input_ids, study.index
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
