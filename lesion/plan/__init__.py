"""A plan for a study before any weight is read: the config checked (:mod:`.config`), what the
study is made of (:mod:`.shapes`), and its memory, device map and time (:mod:`.estimate`)."""
from .._moved import names_from

__getattr__ = names_from(__name__)  # lesion 0.1's ``lesion.plan`` names, now in its parts
