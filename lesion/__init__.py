"""lesion: find the handful of neurons a language model cannot live without."""
__version__ = "0.1.0"

from .errors import LesionError  # noqa: E402
from .neurons import Neuron, Site, SiteIndex, discover_sites  # noqa: E402
from .hooks import hooked, mask_neurons  # noqa: E402
from .loading import load_model  # noqa: E402
from .rankers import RANKERS, rank, rank_by_noise  # noqa: E402
from .results import CriticalSet, Ranking, read_json, write_json  # noqa: E402
from .search import find_critical_set  # noqa: E402
from .pipeline import Study  # noqa: E402

__all__ = ["LesionError", "Neuron", "Site", "SiteIndex", "discover_sites", "hooked", "mask_neurons",
           "load_model", "RANKERS", "rank", "rank_by_noise", "CriticalSet", "Ranking", "read_json",
           "write_json", "find_critical_set", "Study"]
