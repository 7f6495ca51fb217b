"""The one way lesion puts forward hooks on a torch model: a context manager that removes them
in ``finally``. It knows nothing about neurons, so :mod:`lesion.neurons` (which probes a model to
find its sites) and :mod:`lesion.hooks` (which masks neurons) can both build on it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch


@contextmanager
def hooked(model: torch.nn.Module, fns: Mapping[str, Callable], raw: bool = False) -> Iterator[None]:
    """Register a forward hook per module name.

    ``fn(output) -> new output or None``; with ``raw=True`` ``fn(module, inputs, output)``. A module
    returning a tuple (an MoE block with its router logits) shows ``fn`` its first element.
    """
    handles = []
    try:
        for name, fn in fns.items():
            hook = fn if raw else (lambda module, inputs, output, fn=fn: _on_first(fn, output))
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _on_first(fn: Callable, output):
    if not isinstance(output, tuple):
        return fn(output)
    first = fn(output[0])
    return None if first is None else (first, *output[1:])
