"""lesion's version, in a module of its own: a module that records it does not import the package
(whose ``__init__`` imports the notebook views, which import most of lesion)."""
__version__ = "0.1.0"
