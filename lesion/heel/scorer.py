"""The model-bound objective of the heel search: Delta of neuron sets over one or more texts,
every set evaluated once, within a row budget."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..ablation import baseline_nll, channel_means, check_ablation, set_deltas
from ..errors import LesionError
from ..neurons import Neuron, SiteIndex
from ..options import OBJECTIVES

LOGIT_BYTES = 2 ** 29  # float32 logits one batched forward may hold


class BudgetExhausted(Exception):
    """The row budget (--max-rows) ran out; the search returns its best set so far."""


class SetScorer:
    """Objective Delta of neuron sets over one or more texts, counting the rows it runs.

    ``evaluate(sets)`` returns, per text, the Delta of every set; :meth:`for_model` builds it
    from a model. Every set is evaluated once and remembered."""

    def __init__(self, evaluate: Callable[[list[list[Neuron]]], list[list[float]]], texts: int, *,
                 objective: str = "worst", max_rows: int = 20000, clean: Sequence[float] = ()):
        if objective not in OBJECTIVES:
            raise LesionError(f"unknown objective {objective!r}: use {' or '.join(OBJECTIVES)}")
        self.evaluate, self.texts, self.objective, self.max_rows = evaluate, texts, objective, max_rows
        self.clean = list(clean) or [0.0] * texts
        self.known: dict[frozenset, tuple[float, ...]] = {}
        self.rows = 0
        self.best: tuple[float, tuple[Neuron, ...]] = (-math.inf, ())

    @classmethod
    def for_model(cls, model: torch.nn.Module, index: SiteIndex, texts: Sequence[torch.Tensor], *,
                  ablation: str = "zero", dtype: str = "", **options) -> "SetScorer":
        check_ablation(ablation)
        clean = [baseline_nll(model, ids, dtype) for ids in texts]
        names = [s.name for s in index.sites]
        means = ([channel_means(model, ids, index, names) for ids in texts] if ablation == "mean"
                 else [None] * len(texts))
        vocab = model.get_output_embeddings().weight.shape[0]
        batches = [max(1, min(64, LOGIT_BYTES // (4 * vocab * ids.shape[1]))) for ids in texts]

        def evaluate(sets: list[list[Neuron]]) -> list[list[float]]:
            return [set_deltas(model, ids, index, sets, nll, ablation=ablation, means=m, max_rows=b)
                    for ids, nll, m, b in zip(texts, clean, means, batches)]
        return cls(evaluate, len(texts), clean=clean, **options)

    def per_text(self, sets: Sequence[Sequence[Neuron]]) -> list[tuple[float, ...]]:
        todo = list(dict.fromkeys(frozenset(s) for s in sets if frozenset(s) not in self.known))
        if self.rows + len(todo) * self.texts > self.max_rows:
            raise BudgetExhausted
        if todo:
            columns = self.evaluate([sorted(s) for s in todo])
            for i, key in enumerate(todo):
                self.known[key] = tuple(col[i] for col in columns)
        self.rows += len(todo) * self.texts
        return [self.known[frozenset(s)] for s in sets]

    def __call__(self, sets: Sequence[Sequence[Neuron]]) -> list[float]:
        values = [self.aggregate(v) for v in self.per_text(sets)]
        for s, v in zip(sets, values):
            if v > self.best[0] or (v == self.best[0] and len(s) < len(self.best[1])):
                self.best = (v, tuple(s))
        return values

    def aggregate(self, deltas: tuple[float, ...]) -> float:
        return min(deltas) if self.objective == "worst" else sum(deltas) / len(deltas)
