"""Tools around a study: :mod:`.upcycle` turns a dense model into a mixture of experts with real
weights (``python -m lesion.tools.upcycle``)."""
