"""The one registry of everything that scores neurons: Stage 1's rankers and the heel search's
signals, one entry each (noise and activation are both).

Each :class:`Scorer` gives one score per neuron of a :class:`~lesion.model.neurons.SiteIndex` (higher =
more suspect) and says where it may be used: ``ranker`` (``Study.rank``, ``lesion rank --ranker``,
``lesion compare``) and ``signal`` (``search_heel(signals=...)``, ``lesion search --signals``).
The functions are named, not imported, so that the CLI lists the names without waiting for torch;
:attr:`Scorer.fn` imports one on first use.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import import_module
from typing import Callable

from ..errors import ParameterError


@dataclass(frozen=True)
class Scorer:
    """A way to score every neuron, registered once."""
    name: str
    summary: str
    function: str  # "module:attribute" under lesion; called (model, input_ids, index, **options)
    # Keyword options that determine its scores besides seed and progress (all in Stage 1's cache key).
    options: tuple[str, ...] = ()
    ranker: bool = False  # Stage 1 may rank by it
    signal: bool = False  # the heel search may pool candidates by it
    cached: bool = False  # as a signal, computed through Stage 1's on-disk cache (Study.scores): it is costly
    reads_activations: bool = False  # takes the text's clean activations as ``clean``: one forward for all
    data_free: bool = False  # the same scores on every text (read from the weights alone)

    @property
    def fn(self) -> Callable:
        module, attribute = self.function.split(":")
        return getattr(import_module(f"lesion.{module}"), attribute)


SCORERS: dict[str, Scorer] = {s.name: s for s in (
    Scorer("noise", "the paper's Stage 1: mean |A_clean - A_noisy| under input-embedding noise, best position",
           "method.rankers:rank_by_noise", ("alpha", "samples", "alpha_relative", "reduce", "batch_size"),
           ranker=True, signal=True, cached=True),
    Scorer("activation", "|activation| on the clean text, at its largest position", "method.rankers:rank_by_activation",
           ("reduce",), ranker=True, signal=True, reads_activations=True),
    Scorer("gradient", "baseline: |dLoss/dA|, the gradient of the text's mean NLL", "method.rankers:rank_by_gradient",
           ("reduce",), ranker=True),
    Scorer("random", "baseline: a seeded random order", "method.rankers:rank_by_random", ranker=True),
    Scorer("massive", "max |activation| over the text / median |activation| of its module (Sun et al. 2024)",
           "heel.signals:massive_scores", signal=True, reads_activations=True),
    Scorer("superweight", "data-free: a down_proj output row's largest |w| / the matrix's median |w| "
           "(Yu et al. 2024)", "heel.signals:superweight_scores", signal=True, data_free=True),
    Scorer("attribution", "|sum over positions of a * dLoss/da|: first-order estimate of zeroing the neuron",
           "heel.signals:attribution_scores", signal=True),
)}
RANKERS = tuple(name for name, s in SCORERS.items() if s.ranker)  # in the order the CLI lists them
SIGNALS = tuple(name for name, s in SCORERS.items() if s.signal)  # the search's default: all of them


def check_ranker(name: str, parameter: str = "ranker") -> str:
    """``name`` if Stage 1 may rank by it, else a :class:`ParameterError` (on ``parameter``) naming
    the closest ranker."""
    return _check(name, RANKERS, parameter, "ranker")


def check_signals(names) -> list[str]:
    """The signal names (a list, or one comma-separated string), each once, in order; every one
    registered as a signal, else a :class:`ParameterError` naming the closest."""
    if isinstance(names, str):
        names = names.split(",")
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ParameterError("signals", f"names no signal: use one or more of {', '.join(SIGNALS)}")
    for name in names:
        _check(name, SIGNALS, "signals", "signal")
    return names


def _check(name: str, allowed: tuple[str, ...], parameter: str, what: str | None = None) -> str:
    if name in allowed:
        return name
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ParameterError(parameter, f"names unknown {what or parameter} {name!r}: {hint}use one of "
                                    f"{', '.join(allowed)}")
