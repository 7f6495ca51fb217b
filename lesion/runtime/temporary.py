"""Setting another library's attribute for the length of a block, without unittest.mock in
library code."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def temporarily(owner, name: str, value):
    """``owner.name`` set to ``value`` inside the block, put back as it was on the way out."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)
