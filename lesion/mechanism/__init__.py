"""Why the critical neurons matter: what they look like (:mod:`.detect`: massive activations,
super weights), where they sit in the computation (:mod:`.graph`), causal tests (:mod:`.causal`),
and the report that puts them together (:mod:`.run`: :func:`~lesion.mechanism.run.mechanism`)."""
from .._moved import names_from

__getattr__ = names_from(__name__)  # lesion 0.1's ``lesion.mechanism`` names, now in its parts
