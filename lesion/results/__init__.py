"""Every result lesion returns: one base (:class:`Result`), neuron sets (:class:`Ranking`,
:class:`CriticalSet`, :class:`Heel`), and how a result and its text are kept on disk.

The types load on first use (``from lesion.results import Ranking`` imports its module alone), so that
a command reading a file name or one record does not wait for torch."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import (Provenance, Result, SchemaError, recorded_text, restore_text, result_files, save_result,
                       text_file_name)
    from .settings import Settings
    from .harden import HardenRecord
    from .heel import (Certificate, EstimateCheck, Heel, NeuronProfile, Portfolio, PortfolioRun, Screen,
                       Stage, Stopped, TextScore, TraceStep, Transfer, TransferRow)
    from .compare import Comparison, LevelDelta
    from .evaluation import EvalReport
    from .mechanism import MechanismReport
    from .minimal import MinimalSets
    from .scan import ScanResult
    from .sets import CriticalSet, NeuronDelta, NeuronSet, Ranking, Step, unsettled_note
    from .verify import SliceCheck, VerifyReport

_EXPORTS = {
    "Provenance": "base", "Result": "base", "SchemaError": "base", "recorded_text": "base", "restore_text": "base",
    "result_files": "base", "save_result": "base", "text_file_name": "base", "Settings": "settings",
    "HardenRecord": "harden", "Certificate": "heel", "EstimateCheck": "heel", "Heel": "heel",
    "NeuronProfile": "heel", "Portfolio": "heel", "PortfolioRun": "heel", "Screen": "heel", "Stage": "heel",
    "Stopped": "heel", "TextScore": "heel", "TraceStep": "heel", "Transfer": "heel", "TransferRow": "heel",
    "Comparison": "compare", "LevelDelta": "compare", "EvalReport": "evaluation", "MechanismReport": "mechanism",
    "MinimalSets": "minimal", "ScanResult": "scan", "CriticalSet": "sets", "NeuronDelta": "sets",
    "NeuronSet": "sets", "Ranking": "sets", "Step": "sets", "unsettled_note": "sets", "SliceCheck": "verify",
    "VerifyReport": "verify",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def load_neuron_set(path) -> NeuronSet:
    """A critical.json or a heel.json, whichever ``path`` holds."""
    from ..runtime.files import read_json
    from .heel import Heel
    from .sets import CriticalSet
    data = read_json(path)
    return (Heel if "stopped" in data and "screen" in data else CriticalSet).load(path)


__all__ = ["Certificate", "Comparison", "CriticalSet", "EstimateCheck", "EvalReport", "HardenRecord", "Heel",
           "LevelDelta", "MechanismReport", "MinimalSets", "NeuronDelta", "NeuronProfile", "NeuronSet", "Portfolio",
           "PortfolioRun", "Provenance", "Ranking", "Result", "ScanResult", "SchemaError", "Screen", "Settings",
           "SliceCheck", "Stage", "Step", "Stopped", "TextScore", "TraceStep", "Transfer", "TransferRow",
           "VerifyReport", "load_neuron_set", "recorded_text", "restore_text", "result_files", "save_result",
           "text_file_name", "unsettled_note"]
