"""lesion's version, in a module of its own: a module that records it does not import the package
(whose ``__init__`` imports the notebook views, which import most of lesion)."""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def checkout() -> Path | None:
    """The git checkout this code runs from (its root holds ``.git`` and ``pyproject.toml``), or None
    for an installed copy. Every module asks here, so none depends on how deep it sits."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / ".git").exists() and (root / "pyproject.toml").is_file() else None
