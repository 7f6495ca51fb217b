"""The one way lesion puts forward hooks on a torch model: a context manager that removes them
in ``finally``. It knows nothing about neurons, so :mod:`lesion.model.neurons` (which probes a model to
find its sites) and :mod:`lesion.masking.masks` (which masks neurons) can both build on it."""
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


def on_routed_rows(fn: Callable, values: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int]):
    """``fn`` applied to the (n, C) ``values`` of the flat token rows ``rows`` as if every token had
    them: ``fn`` sees (batch, tokens, C) with 0 at the other tokens, and the routed rows of what it
    returns come back as (n, C) (None when ``fn`` returns None)."""
    batch, tokens = shape
    dense = values.new_zeros(batch * tokens, values.shape[-1]).index_copy(0, rows, values)
    new = fn(dense.view(batch, tokens, -1))
    return None if new is None else new.reshape(batch * tokens, -1).index_select(0, rows)


def _dense(hook: Callable) -> Callable:
    """``hook`` on a module that runs on some tokens' rows alone (an expert kept in a list of modules)."""
    def on(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return hook(module, inputs, output)
        rows, shape = module._lesion_routed()
        new = on_routed_rows(lambda dense: hook(module, inputs, dense), output.reshape(-1, output.shape[-1]),
                             rows, shape)
        return None if new is None else new.view(output.shape)
    return on


def _on_first(fn: Callable, output):
    if not isinstance(output, tuple):
        return fn(output)
    first = fn(output[0])
    return None if first is None else (first, *output[1:])
