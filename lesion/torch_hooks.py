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

    ``fn(output) -> new output or None``; with ``raw=True`` ``fn(module, inputs, output)``.
    """
    handles = []
    try:
        for name, fn in fns.items():
            hook = fn if raw else (lambda module, inputs, output, fn=fn: fn(output))
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
