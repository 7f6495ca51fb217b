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
            module = model.get_submodule(name)
            if hasattr(module, "_lesion_routed"):
                hook = _dense(hook)
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _dense(hook: Callable) -> Callable:
    """``hook`` on a module that runs on some tokens' rows alone (an expert kept in a list of modules):
    it sees (batch, tokens, C) with 0 at the other tokens, and the rows it returns are put back."""
    def on(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return hook(module, inputs, output)
        rows, (batch, tokens) = module._lesion_routed()
        width = output.shape[-1]
        dense = output.new_zeros(batch * tokens, width).index_copy(0, rows, output.reshape(-1, width))
        new = hook(module, inputs, dense.view(batch, tokens, width))
        return None if new is None else new.reshape(batch * tokens, width).index_select(0, rows).view(output.shape)
    return on


def _on_first(fn: Callable, output):
    if not isinstance(output, tuple):
        return fn(output)
    first = fn(output[0])
    return None if first is None else (first, *output[1:])
