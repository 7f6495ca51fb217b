"""lesion: find the handful of neurons a language model cannot live without.

The top level holds what a notebook needs: :func:`load_model`, :class:`Study` (the paper's
two stages), :func:`search_heel` (the smallest heel, on texts or on :func:`corpus_passages`),
:func:`minimal_at` (greedy vs irreducible vs optimal at any epsilon), :func:`harden_model`
(rotate the heel away, with the proof that the function is kept), :func:`evaluate` (corpus
perplexity and tasks with a set masked), :func:`masked_perplexity` and
:func:`compare_continuations` (a set masked on texts and prompts), and the result types.
Everything else is one level down (``lesion.stage1``, ``lesion.hooks``, ``lesion.files``, ...).

The names are imported on first use, so that ``lesion --help`` (which imports this package)
does not wait seconds for torch and transformers.
"""
import sys
from importlib import import_module

from .version import __version__

_EXPORTS = {
    "load_model": "loading", "LoadedModel": "loading",
    "Study": "study",
    "search_heel": "heel", "SearchPlan": "heel", "corpus_passages": "passages", "minimal_at": "heel.minimal",
    "harden_model": "harden", "HardenRecord": "results", "evaluate": "evaluation", "EvalPlan": "evaluation",
    "masked_perplexity": "recorded", "compare_continuations": "generation",
    "Neuron": "neurons", "mask_neurons": "hooks",
    "Ranking": "results", "CriticalSet": "results", "Heel": "results", "Result": "results",
    "Provenance": "results", "RunFolder": "runfolder", "ScanResult": "results", "reproduce": "recorded",
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
    from . import notebook  # noqa: E402,F401
