"""Running work in batches that shrink, instead of crashing, when memory runs out."""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch

from ..errors import LesionError

T = TypeVar("T")
Item = TypeVar("Item")


# CUDA says "out of memory"; the CPU allocator says "DefaultCPUAllocator: can't allocate memory".
OOM_MESSAGES = ("out of memory", "can't allocate memory")


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(m in str(error).lower() for m in OOM_MESSAGES))


def split_on_oom(fn: Callable[[Sequence[Item]], list[T]], items: Sequence[Item]) -> list[T]:
    """``fn(items)`` returns a list; on out-of-memory, retry each half and join their lists.

    ``fn`` must not leave partial state behind when it fails (it returns what it computed).
    """
    try:
        return fn(items)
    except (RuntimeError, torch.OutOfMemoryError) as e:
        if not is_oom(e):
            raise
        if len(items) <= 1:
            raise LesionError("out of memory even with a batch of one: use `dtype` bfloat16, "
                              "`device_map` auto or a shorter text") from None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(items) // 2
        return split_on_oom(fn, items[:half]) + split_on_oom(fn, items[half:])
