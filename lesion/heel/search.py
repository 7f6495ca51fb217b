"""``lesion search`` as a library call: the candidate pool from several signals, then the
search of :mod:`lesion.heel.algorithms` under a :class:`~lesion.heel.scorer.SetScorer`."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch

from ..errors import LesionError
from ..neurons import Neuron, SiteIndex
from ..options import SIGNALS
from ..results import Heel
from ..stage1 import clean_activations
from ..study import Study
from ..texts import text_hash
from .algorithms import SearchPlan, find_smallest_heel
from .scorer import SetScorer
from .signals import candidate_pool, signal_scores, top_neurons


def transfer_table(score_for_each: Sequence[SetScorer], heels: dict[str, Sequence[Neuron]]) -> dict:
    """Delta of every heel on every text: rows are heels, columns texts (one scorer per text)."""
    return {name: [s([list(neurons)])[0] if neurons else None for s in score_for_each]
            for name, neurons in heels.items()}


def search_heel(lm, texts: Sequence[str], plan: SearchPlan, *, signals: Sequence[str] = tuple(SIGNALS),
                per_signal: int = 100, components: str | None = None,
                noise_options: dict | None = None, progress: bool = True,
                say: Callable[[str], None] | None = None, memo: dict | None = None,
                names: Sequence[str] = ()) -> Heel:
    """``lesion search`` as a library call: pool from ``signals`` on every text, then
    :func:`find_smallest_heel` with the objective over all ``texts``. ``memo`` keeps each
    (signal, text)'s top list across calls on the same model."""
    plan.check()
    if per_signal < 1:
        raise LesionError(f"--pool must be >= 1 (got {per_signal})")
    studies = [Study.create(lm, text, components) for text in texts]
    index = studies[0].index
    noise_options = {"alpha": 5.0, "samples": 100, "seed": 42, **(noise_options or {})}
    lists: dict[str, list] = {}
    memo = {} if memo is None else memo
    for name in signals:
        for study in studies:
            key = (name, per_signal, text_hash(study.text))
            if key not in memo:
                noise = (lambda s=study: s.scores("noise", progress=progress, **noise_options)[0].values)
                memo[key] = top_neurons(index, signal_scores(name, lm.model, study.input_ids, index, noise),
                                        per_signal)
            lists.setdefault(name, []).append(memo[key])
            if name == "superweight":
                break  # data-free: the same on every text
    pool, brought = candidate_pool(lists)
    score = SetScorer.for_model(lm.model, index, [s.input_ids for s in studies], ablation=plan.ablation,
                                objective=plan.objective, max_rows=plan.max_rows, dtype=lm.dtype)

    def prefix_order() -> list[Neuron]:
        ranking = studies[0].rank("noise", keep=1000, progress=progress, **noise_options)
        return list(ranking.neurons)

    info = [{"name": name, "sha256": text_hash(s.text), "tokens": int(s.input_ids.shape[1])}
            for name, s in zip(list(names) + [f"text{i + 1}" for i in range(len(names), len(studies))], studies)]
    settings = {**studies[0].settings(), "signals": list(signals), "per_signal": per_signal, "noise": noise_options}
    if len(texts) > 1:  # each text is in the result's `texts`, with its hash and token count
        settings.update(text=None, text_sha256=None, tokens=None, texts=list(texts))
    heel = find_smallest_heel(score, pool, plan, prefix_order, lm.name, settings,
                              {**brought, "per_signal": per_signal}, info, say)
    return replace(heel, profile=tuple(describe(lm.model, index, studies[0].input_ids, heel)))


def describe(model: torch.nn.Module, index: SiteIndex, input_ids: torch.Tensor, heel: Heel) -> list[dict]:
    """Where each heel neuron sits and where (on the first text) its |activation| peaks."""
    if not heel.neurons:
        return []
    sites = SiteIndex([index.by_name[m] for m in dict.fromkeys(n.module for n in heel.neurons)])
    acts = clean_activations(model, input_ids, sites)
    alone = heel.screen.get("heel_alone", {})
    rows = []
    for n in heel.neurons:
        a = acts[n.module][:, n.channel].abs()
        site = index.by_name[n.module]
        rows.append({"neuron": str(n), "layer": site.layer, "kind": site.kind, "alone": alone.get(str(n)),
                     "peak_position": int(a.argmax()), "peak_abs": float(a.max()),
                     "median_abs_of_module": float(acts[n.module].abs().median())})
    return rows


def search_with_transfer(lm, texts: Sequence[str], names: Sequence[str], plan: SearchPlan, **options) -> Heel:
    """The joint heel over all texts, plus each text's own heel, and the Delta of every heel on
    every text (does a heel found on one input collapse the model on the others?)."""
    memo: dict = {}
    joint = search_heel(lm, texts, plan, memo=memo, names=names, **options)
    own = {name: search_heel(lm, [text], plan, memo=memo, names=[name], **options)
           for name, text in zip(names, texts)}
    studies = [Study.create(lm, text, options.get("components")) for text in texts]
    scorers = [SetScorer.for_model(lm.model, studies[0].index, [s.input_ids], ablation=plan.ablation,
                                   max_rows=10 ** 9, dtype=lm.dtype) for s in studies]
    heels = {"joint": joint.neurons, **{f"own:{n}": h.neurons for n, h in own.items()}}
    table = transfer_table(scorers, heels)
    transfer = {"texts": list(names), "rows": {k: {"neurons": [str(n) for n in heels[k]], "deltas": v}
                                                for k, v in table.items()},
                "own_sizes": {n: len(h.neurons) for n, h in own.items()},
                "own_rows": {n: h.rows for n, h in own.items()},
                "transfer_rows": sum(s.rows for s in scorers)}
    return Heel(**{**{f: getattr(joint, f) for f in joint.__dataclass_fields__}, "transfer": transfer})
