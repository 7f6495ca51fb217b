"""Robustness: are the same neurons found from texts of other kinds, languages and lengths?"""
from __future__ import annotations

from typing import Mapping

from ..runtime.anytime import Anytime
from ..model.loading import LoadedModel
from ..results.analysis import CommonNeuron, RobustnessData, TextScan
from ..method.study import Study
from .sweep import jaccard
from ..texts.named import TEXTS


def robustness(lm: LoadedModel, texts: Mapping[str, str] | None = None, *, epsilon: float = 1.0,
               components: str | None = None, stage2: str = "linear", progress: bool = True,
               time_budget: float | None = None, **rank_options) -> RobustnessData:
    """The critical set of each text and their overlap. Each text is a scan; ``time_budget``
    (seconds) or Ctrl-C stops between texts and the result holds those that finished."""
    texts = dict(texts or TEXTS)
    found: dict[str, TextScan] = {}
    run = Anytime(len(texts), "robustness", time_budget=time_budget, progress=progress, unit="text")
    with run:
        for name, text in texts.items():
            study = Study.create(lm, text, components)
            _, critical = study.scan(epsilon=epsilon, stage2=stage2, progress=progress, **rank_options)
            found[name] = TextScan(tokens=int(study.input_ids.shape[1]), reached=critical.reached,
                                   n_star=len(critical.neurons), delta=critical.delta,
                                   neurons=tuple(str(n) for n in critical.neurons))
            run.step()
    names = list(found)
    overlap = tuple(tuple(jaccard(found[a].neurons, found[b].neurons) for b in names) for a in names)
    counts: dict[str, int] = {}
    for row in found.values():
        for n in row.neurons:
            counts[n] = counts.get(n, 0) + 1
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return RobustnessData(texts=found, names=tuple(names), jaccard=overlap,
                          most_common=tuple(CommonNeuron(neuron=n, texts=c) for n, c in common),
                          stopped=run.stopped)
