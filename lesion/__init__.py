"""lesion: find the handful of neurons a language model cannot live without.

The names below are imported on first use, so that ``lesion --help`` (which imports this
package) does not wait seconds for torch and transformers.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {"LesionError": "errors", "Neuron": "neurons", "Site": "neurons", "SiteIndex": "neurons",
            "discover_sites": "neurons", "hooked": "hooks", "mask_neurons": "hooks", "load_model": "loading",
            "RANKERS": "rankers", "RANKER_SPECS": "rankers", "rank": "rankers", "rank_by_noise": "rankers",
            "CriticalSet": "results", "Ranking": "results", "read_json": "results", "write_json": "results",
            "find_critical_set": "search", "Study": "pipeline", "RunFolder": "run"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lesion' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
