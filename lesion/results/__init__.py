"""Every result lesion returns: one base (:class:`Result`), neuron sets (:class:`Ranking`,
:class:`CriticalSet`, :class:`Heel`), and how a result and its text are kept on disk."""
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


def load_neuron_set(path) -> NeuronSet:
    """A critical.json or a heel.json, whichever ``path`` holds."""
    from ..files import read_json
    data = read_json(path)
    return (Heel if "stopped" in data and "screen" in data else CriticalSet).load(path)


__all__ = ["Certificate", "Comparison", "CriticalSet", "EstimateCheck", "EvalReport", "HardenRecord", "Heel",
           "LevelDelta", "MechanismReport", "MinimalSets", "NeuronDelta", "NeuronProfile", "NeuronSet", "Portfolio",
           "PortfolioRun", "Provenance", "Ranking", "Result", "ScanResult", "SchemaError", "Screen", "Settings",
           "SliceCheck", "Stage", "Step", "Stopped", "TextScore", "TraceStep", "Transfer", "TransferRow",
           "VerifyReport", "load_neuron_set", "recorded_text", "restore_text", "result_files", "save_result",
           "text_file_name", "unsettled_note"]
