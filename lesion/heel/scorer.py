"""The model-bound objective of the heel search: Delta of neuron sets over one or more texts,
every set evaluated once, within a row budget and a time budget.

The scorer is what makes the search *anytime*: every evaluated set is kept (and appended to a
:class:`~lesion.heel.journal.SetJournal` when there is one), so whatever stops the search (the
row budget, the time budget, Ctrl-C) :meth:`SetScorer.best_found` still names the best set
seen so far. A call that would cross the row budget first evaluates the sets that still fit.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch

from ..runtime import distributed
from ..masking.ablation import baseline_nll, channel_means, check_ablation, set_deltas
from ..errors import BudgetExhausted, JournalMismatch, ParameterError
from ..model.neurons import Neuron, SiteIndex
from ..runtime.options import OBJECTIVES

LOGIT_BYTES = 2 ** 29  # float32 logits one batched forward may hold


# |Delta re-scored - Delta read from a journal| <= this x max(1, |Delta|): another batch composition
# moves float32 in the 7th digit and bfloat16 in the 3rd; an edit that changes an answer is far larger.
JOURNAL_TOLERANCE = 1e-3


class SetScorer:
    """Objective Delta of neuron sets over one or more texts, counting the rows it runs.

    ``evaluate(sets)`` returns, per text, the Delta of every set; :meth:`for_model` builds it
    from a model. Every set is evaluated once and remembered in ``known``. ``deadline`` is a
    ``time.monotonic()`` instant after which no new rows start; ``piece`` is how many sets go
    through ``evaluate`` between two budget checks (``order`` sorts them first, so that sets
    sharing a prefix land in the same piece)."""

    def __init__(self, evaluate: Callable[[list[list[Neuron]]], list[list[float]]], texts: int, *,
                 objective: str = "worst", max_rows: int = 20000, clean: Sequence[float] = (),
                 deadline: float | None = None, piece: int | None = None,
                 order: Callable[[frozenset], Any] | None = None):
        if objective not in OBJECTIVES:
            raise ParameterError("objective", f"must be {' or '.join(OBJECTIVES)} (got {objective!r})")
        self.evaluate, self.texts, self.objective, self.max_rows = evaluate, texts, objective, max_rows
        self.clean = list(clean) or [0.0] * texts
        self.deadline, self.piece, self.order = deadline, piece, order
        self.known: dict[frozenset, tuple[float, ...]] = {}
        self.recalled: set[frozenset] = set()  # sets whose Deltas were read from a journal, not evaluated here
        self.confirmed = 0  # of those, re-scored on the model by confirm()
        self.rows = 0  # rows evaluated by this scorer (sets read from a journal cost none)
        self.seconds = 0.0  # spent in evaluate
        self.best: tuple[float, tuple[Neuron, ...]] = (-math.inf, ())
        self.stage = ""  # what the search is doing, for progress
        self.journal = None  # a SetJournal: every evaluated set is appended to it
        self.listeners: list[Callable[["SetScorer"], None]] = []  # called after every evaluated piece

    @classmethod
    def for_model(cls, model: torch.nn.Module, index: SiteIndex, texts: Sequence[torch.Tensor], *,
                  ablation: str = "zero", dtype: str = "", **options) -> "SetScorer":
        check_ablation(ablation)
        clean = [baseline_nll(model, ids, dtype) for ids in texts]
        names = [s.name for s in index.sites]
        means = ([channel_means(model, ids, index, names) for ids in texts] if ablation == "mean"
                 else [None] * len(texts))
        vocab = model.get_output_embeddings().weight.shape[0]  # type: ignore[operator]
        batches = [max(1, min(64, LOGIT_BYTES // (4 * vocab * ids.shape[1]))) for ids in texts]

        def evaluate(sets: list[list[Neuron]]) -> list[list[float]]:
            return [set_deltas(model, ids, index, sets, nll, ablation=ablation, means=m, max_rows=b)
                    for ids, nll, m, b in zip(texts, clean, means, batches)]

        def lowest_block_last(key: frozenset) -> int:  # masked_nll's own order: highest first block first
            return -min((index.site(n).layer for n in key), default=0)
        return cls(evaluate, len(texts), clean=clean, piece=4 * min(batches), order=lowest_block_last, **options)

    def per_text(self, sets: Sequence[Sequence[Neuron]]) -> list[tuple[float, ...]]:
        todo = list(dict.fromkeys(frozenset(s) for s in sets if frozenset(s) not in self.known))
        fits = max(0, (self.max_rows - self.rows) // self.texts)
        if self.order is not None:
            todo.sort(key=self.order)
        for start in range(0, min(len(todo), fits), self.piece or len(todo) or 1):
            piece = todo[start:min(start + (self.piece or len(todo)), fits)]
            self._check_time(len(piece))
            self._evaluate(piece)
        if len(todo) > fits:
            raise BudgetExhausted
        return [self.known[frozenset(s)] for s in sets]

    def _check_time(self, sets: int) -> None:
        """No new piece starts after the deadline, nor one that the rows/s so far say would end past it."""
        if self.deadline is None:
            return
        if self.row_seconds() * sets * self.texts > self.seconds_left():
            raise BudgetExhausted

    def seconds_left(self) -> float:
        """Seconds to the deadline by rank 0's clock, the same on every rank under torchrun (inf without one)."""
        if self.deadline is None:
            return math.inf
        return distributed.current().decide([self.deadline - time.monotonic()])[0]

    def _evaluate(self, keys: list[frozenset]) -> None:
        start = time.perf_counter()
        columns = self.evaluate([sorted(k) for k in keys])
        # Rank 0's timing on every rank: the budget's decisions read it and must agree.
        self.seconds += distributed.current().decide([time.perf_counter() - start])[0]
        for i, key in enumerate(keys):
            self.known[key] = tuple(float(col[i]) for col in columns)
            self._consider(key)
        self.rows += len(keys) * self.texts
        if self.journal is not None:
            self.journal.append([(k, self.known[k]) for k in keys])
        for listener in self.listeners:
            listener(self)

    def _consider(self, key: frozenset) -> None:
        v = self.aggregate(self.known[key])
        if v > self.best[0] or (v == self.best[0] and len(key) < len(self.best[1])):
            self.best = (v, tuple(sorted(key)))

    def load(self, known: dict[frozenset, tuple[float, ...]]) -> int:
        """Sets evaluated before (a journal being resumed): they cost no rows now, and are
        evidence, not truth: :meth:`confirm` re-scores those a result rests on."""
        fresh = {k: v for k, v in known.items() if k not in self.known and len(v) == self.texts}
        self.known.update(fresh)
        self.recalled.update(fresh)
        for key in fresh:
            self._consider(key)
        return len(fresh)

    def confirm(self, sets: Sequence[Sequence[Neuron]]) -> int:
        """Re-score on the model those of ``sets`` whose Deltas were read from a journal, outside
        the budgets (a result is about to rest on them); each then holds the model's Delta. A
        Delta that differs from the journal's by more than float noise refuses the journal
        (:class:`JournalMismatch`). Returns how many sets were re-scored."""
        todo = [k for k in dict.fromkeys(frozenset(s) for s in sets if s) if k in self.recalled]
        if not todo:
            return 0
        if self.order is not None:
            todo.sort(key=self.order)
        start = time.perf_counter()
        columns = self.evaluate([sorted(k) for k in todo])
        self.seconds += time.perf_counter() - start
        self.rows += len(todo) * self.texts
        for i, key in enumerate(todo):
            fresh, read = tuple(float(col[i]) for col in columns), self.known[key]
            if not all(_agrees(a, b) for a, b in zip(read, fresh)):
                shown = (", ".join(f"{d:.6g}" for d in deltas) for deltas in (read, fresh))
                source = f"the journal {self.journal.path}" if self.journal is not None else "the journal"
                raise JournalMismatch(
                    f"{source} gives {{{', '.join(sorted(map(str, key)))}}} Delta {next(shown)} but the model "
                    f"gives {next(shown)}: it was edited or belongs to another run; start the search afresh, "
                    "without resuming")
            self.known[key] = fresh
            self.recalled.discard(key)
        self.confirmed += len(todo)
        self.best = (-math.inf, ())
        for key in self.known:
            self._consider(key)
        return len(todo)

    def row_seconds(self) -> float:
        """Measured seconds per masked row so far (0 before the first)."""
        return self.seconds / self.rows if self.rows else 0.0

    def rows_affordable(self) -> float:
        """Rows that fit in what is left of both budgets (inf without a deadline or a measurement)."""
        rows = (self.max_rows - self.rows) / self.texts
        if self.deadline is not None and self.row_seconds() > 0:
            rows = min(rows, max(0.0, self.seconds_left()) / (self.row_seconds() * self.texts))
        return rows

    def __call__(self, sets: Sequence[Sequence[Neuron]]) -> list[float]:
        return [self.aggregate(v) for v in self.per_text(sets)]

    def aggregate(self, deltas: tuple[float, ...]) -> float:
        return min(deltas) if self.objective == "worst" else sum(deltas) / len(deltas)

    def best_found(self, epsilon: float) -> list[Neuron]:
        """Of every set evaluated: the smallest that reaches ``epsilon`` (highest Delta among those),
        else the one with the highest Delta (smallest among those); ties by name. [] if none."""
        def rank(item):
            key, deltas = item
            v = _finite(self.aggregate(deltas))
            return (0, len(key), -v) if v >= epsilon else (1, -v, len(key))
        candidates = [(k, d) for k, d in self.known.items() if k]
        if not candidates:
            return []
        best = min(candidates, key=lambda item: (*rank(item), sorted(map(str, item[0]))))
        return sorted(best[0])

    def best_by_size(self) -> dict[int, float]:
        """The highest Delta evaluated at each set size."""
        out: dict[int, float] = {}
        for key, deltas in self.known.items():
            if key:
                out[len(key)] = max(out.get(len(key), -math.inf), self.aggregate(deltas))
        return dict(sorted(out.items()))


def _agrees(read: float, fresh: float) -> bool:
    if not (math.isfinite(read) and math.isfinite(fresh)):
        return read == fresh or (read != read and fresh != fresh)
    return abs(read - fresh) <= JOURNAL_TOLERANCE * max(1.0, abs(fresh))


def _finite(x: float) -> float:
    return 1e300 if x != x else x  # NaN losses count as a collapse, as metrics.delta does
