"""lesion: find the handful of neurons a language model cannot live without.

The top level holds what a notebook needs: :func:`load_model`, :class:`Study` (the paper's
two stages), :func:`search_heel` (the smallest heel, on texts or on :func:`corpus_passages`),
:func:`minimal_at` (greedy vs irreducible vs optimal at any epsilon), :func:`harden_model`
(rotate the heel away, with the proof that the function is kept), :func:`evaluate` (corpus
perplexity and tasks with a set masked), :func:`masked_perplexity` and
:func:`compare_continuations` (a set masked on texts and prompts), and the result types.
Everything else is one level down, a package per job (docs/architecture.md draws the layers):
``runtime``, ``texts``, ``model``, ``masking``, ``results``, ``plan``, ``method``, ``heel``, ``mechanism``,
``analysis``, ``evaluation``, ``harden``, ``replay``, ``report``, ``tools`` and ``cli``. The module paths of
lesion 0.1's flat layout still import for one release, with a DeprecationWarning (``lesion._moved``).

The names are imported on first use, so that ``lesion --help`` (which imports this package)
does not wait seconds for torch and transformers.
"""
import sys
from importlib import import_module

from . import _moved
from .version import __version__

_moved.install()  # lesion 0.1's module paths, for one release

_EXPORTS = {
    "load_model": "model.loading", "LoadedModel": "model.loading",
    "Study": "method.study",
    "search_heel": "heel", "SearchPlan": "heel", "corpus_passages": "texts.passages", "minimal_at": "heel.minimal",
    "harden_model": "harden", "HardenRecord": "results", "evaluate": "evaluation", "EvalPlan": "evaluation",
    "masked_perplexity": "replay.recorded", "compare_continuations": "replay.generation",
    "Neuron": "model.neurons", "mask_neurons": "masking.masks",
    "Ranking": "results", "CriticalSet": "results", "Heel": "results", "Result": "results",
    "Provenance": "results", "RunFolder": "replay.runfolder", "ScanResult": "results", "reproduce": "replay.recorded",
    **dict.fromkeys(("LesionError", "ParameterError", "ResultError", "SchemaError", "ModelMismatch",
                     "ModelError", "MissingPackage", "BudgetExhausted"), "errors"),
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lesion' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if "IPython" in sys.modules:  # a notebook: results show as tables and figures (their views register here)
    from .report import notebook  # noqa: E402,F401
