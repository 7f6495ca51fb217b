"""The paper's analyses, each a function of a Study (or of results) returning JSON-ready data."""
from .distribution import distribution
from .phase import phase_transition
from .components import component_ablation
from .sweep import jaccard, sensitivity_sweep
from .robustness import TEXTS, robustness
from .precision import precision

ANALYSES = ("distribution", "phase", "components", "sweep", "robustness", "precision")
__all__ = ["distribution", "phase_transition", "component_ablation", "jaccard", "sensitivity_sweep", "TEXTS",
           "robustness", "precision", "ANALYSES"]
