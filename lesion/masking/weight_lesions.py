"""Lesions of single weights, done on activations: the weights themselves are never written.

Zeroing ``W[row, col]`` of a linear module changes only output channel ``row``, by
``-W[row, col] * x[..., col]``. A forward hook subtracts exactly that term from the
module's output, so the model computes what it would with the weight zeroed (up to the
rounding of one subtraction), while its parameters, offloaded ones included, stay as
they were. This is Yu et al.'s (2024) test for a super weight: zero that one scalar and
see whether the model collapses.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..runtime.batching import split_on_oom
from ..errors import LesionError
from .masks import hooked
from .metrics import delta, mean_nll
from ..model.weights import matrix


@dataclass(frozen=True, order=True)
class ScalarWeight:
    """One entry ``W[row, col]`` of a module's weight, in (out, in) layout (GPT-2's
    ``Conv1D`` included): ``row`` is an output channel, ``col`` an input channel."""
    module: str
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.module}.weight[{self.row}, {self.col}]"


def _values(model: torch.nn.Module, weights: Sequence[ScalarWeight]) -> list[float]:
    out = []
    for w in weights:
        m = matrix(model.get_submodule(w.module))
        if m is None:
            raise LesionError(f"{w.module} has no 2-D weight: cannot zero {w}")
        if not (0 <= w.row < m.shape[0] and 0 <= w.col < m.shape[1]):
            raise LesionError(f"{w}: out of range, the weight is {m.shape[0]} x {m.shape[1]}")
        out.append(float(m[w.row, w.col].detach()))
    return out


@contextmanager
def zeroed_weights(model: torch.nn.Module, weight_sets: Sequence[Sequence[ScalarWeight]]) -> Iterator[None]:
    """Run the model as if the weights of ``weight_sets[b]`` were zero in batch row ``b``
    (one set for every row when there is a single set). Hooks, removed on exit."""
    entries: dict[str, list[tuple[int, int, int, float]]] = {}  # module -> (batch row, row, col, w)
    for b, weights in enumerate(weight_sets):
        for w, value in zip(weights, _values(model, weights)):
            entries.setdefault(w.module, []).append((b, w.row, w.col, value))
    rows = len(weight_sets)

    def subtract(items):
        b, r, c, w = (torch.tensor(v) for v in zip(*items))

        def hook(module, inputs, output):
            # Batch-major layouts, (B, T, C) and OPT's (B*T, C), viewed as (sets, positions, C);
            # with one set, all rows are one.
            flat_batch = output.dim() == 2
            if rows > 1 and (output.shape[0] % rows if flat_batch else output.shape[0] != rows):
                raise ValueError(f"{rows} weight sets but the output is {tuple(output.shape)}")
            x = inputs[0].to(output.device).float().reshape(rows, -1, inputs[0].shape[-1])
            y = output.float().reshape(rows, -1, output.shape[-1]).transpose(1, 2).clone()  # (sets, C, T)
            dev = output.device
            terms = w.to(dev, torch.float32)[:, None] * x[b.to(dev), :, c.to(dev)]  # (n, T)
            # accumulate: two zeroed weights of one row both count.
            y.index_put_((b.to(dev), r.to(dev)), -terms, accumulate=True)
            # The float32 round trip gives the untouched entries back bit for bit.
            return y.transpose(1, 2).to(output.dtype).reshape(output.shape)
        return hook

    with hooked(model, {name: subtract(items) for name, items in entries.items()}, raw=True):
        yield


def weight_deltas(model: torch.nn.Module, input_ids: torch.Tensor, weights: Sequence[ScalarWeight],
                  clean: float, max_rows: int = 8) -> list[float]:
    """Delta (log10 perplexity ratio to ``clean``, a mean NLL) when each weight alone is zeroed,
    ``max_rows`` weights per forward (fewer when memory runs out)."""
    def run(chunk: Sequence[list[ScalarWeight]]) -> list[float]:
        with zeroed_weights(model, chunk):
            return [delta(nll, clean) for nll in mean_nll(model, input_ids, rows=len(chunk)).tolist()]

    out: list[float] = []
    for i in range(0, len(weights), max_rows):
        out += split_on_oom(run, [[w] for w in weights[i:i + max_rows]])
    return out
