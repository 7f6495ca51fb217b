"""Every result lesion returns: one base (:class:`Result`), neuron sets (:class:`Ranking`,
:class:`CriticalSet`, :class:`Heel`), and how a result and its text are kept on disk."""
from .base import Provenance, Result, recorded_text, restore_text, result_files, save_result, text_file_name
from .harden import HardenRecord
from .heel import Heel
from .evaluation import EvalReport
from .mechanism import MechanismReport
from .scan import ScanResult
from .sets import CriticalSet, NeuronSet, Ranking, Step, unsettled_note


def load_neuron_set(path) -> NeuronSet:
    """A critical.json or a heel.json, whichever ``path`` holds."""
    from ..files import read_json
    data = read_json(path)
    return (Heel if "stopped" in data and "screen" in data else CriticalSet).load(path)


__all__ = ["CriticalSet", "EvalReport", "HardenRecord", "Heel", "MechanismReport", "NeuronSet", "Provenance", "Ranking",
           "Result", "ScanResult", "Step", "load_neuron_set", "recorded_text", "restore_text", "result_files",
           "save_result", "text_file_name", "unsettled_note"]
