"""The paper's analyses, each a function of a Study (or of results) returning JSON-ready data,
and their registry (:mod:`lesion.analysis.registry`): ``run_analysis(name, inputs, **options)``.

The analysis functions load on first use: ``lesion --help`` reads the registry's names and
help lines without importing torch.
"""
from __future__ import annotations

import importlib
import sys
import types

from .registry import REGISTRY, Analysis, AnalysisInputs, run_analysis

ANALYSES = tuple(REGISTRY)
_EXPORTS = {"distribution": "distribution", "phase_transition": "phase", "component_ablation": "components",
            "jaccard": "sweep", "sensitivity_sweep": "sweep", "TEXTS": "robustness", "robustness": "robustness",
            "precision": "precision"}
__all__ = [*_EXPORTS, "ANALYSES", "REGISTRY", "Analysis", "AnalysisInputs", "run_analysis"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Three functions share their module's name (``distribution``, ``robustness``,
    ``precision``). Importing such a submodule would bind the package attribute to the
    module; the function keeps that name, as the eager imports of old gave it."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            self.__dict__.pop(name, None)  # looked up again through __getattr__: the function
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
