"""The module paths of lesion 0.1's flat layout, kept working for one release.

Each old module that moved whole is an alias of its new module: ``import lesion.stage1`` gives the
module object ``lesion.method.rankers`` itself, so its private names and a monkeypatch on it reach
the code that runs. An old module that was split in parts (``lesion.loading``, ``lesion.passages``,
``lesion.heel.algorithms``) is a stand-in that finds each name in the part that now holds it; a
package that took an old module's name (``lesion.plan``, ``lesion.mechanism``, ``lesion.texts``)
finds the old names the same way. Every such import or name warns once with a DeprecationWarning
that names the new place. Nothing inside lesion uses an old path (a test checks it).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module -> the module it became
MOVED = {
    "lesion.anytime": "lesion.runtime.anytime",
    "lesion.batching": "lesion.runtime.batching",
    "lesion.distributed": "lesion.runtime.distributed",
    "lesion.files": "lesion.runtime.files",
    "lesion.options": "lesion.runtime.options",
    "lesion.temporary": "lesion.runtime.temporary",
    "lesion.evaluation.corpora": "lesion.texts.corpora",
    "lesion.hub": "lesion.model.hub",
    "lesion.fast_tokenizer": "lesion.model.tokenizer",
    "lesion.neurons": "lesion.model.neurons",
    "lesion.architectures": "lesion.model.architectures",
    "lesion.coverage": "lesion.model.coverage",
    "lesion.weights": "lesion.model.weights",
    "lesion.torch_hooks": "lesion.model.hook_points",
    "lesion.experts": "lesion.model.experts",
    "lesion.expert_list": "lesion.model.expert_list",
    "lesion.hooks": "lesion.masking.masks",
    "lesion.weight_lesions": "lesion.masking.weight_lesions",
    "lesion.ablation": "lesion.masking.ablation",
    "lesion.metrics": "lesion.masking.metrics",
    "lesion.filenames": "lesion.results.filenames",
    "lesion.views": "lesion.results.views",
    "lesion.stage1": "lesion.method.rankers",
    "lesion.stage2": "lesion.method.stage2",
    "lesion.study": "lesion.method.study",
    "lesion.scorers": "lesion.method.scorers",
    "lesion.cache": "lesion.method.cache",
    "lesion.compare": "lesion.method.compare",
    "lesion.provenance": "lesion.method.provenance",
    "lesion.recorded": "lesion.replay.recorded",
    "lesion.generation": "lesion.replay.generation",
    "lesion.verify": "lesion.replay.verify",
    "lesion.runfolder": "lesion.replay.runfolder",
    "lesion.notebook": "lesion.report.notebook",
    "lesion.notebook_payloads": "lesion.report.notebook_views",
    "lesion.upcycle": "lesion.tools.upcycle",
}

# old module that was split -> the modules that hold its names, searched in order
SPLIT = {
    "lesion.loading": ("lesion.model.loading", "lesion.model.aliases", "lesion.model.model_cache",
                       "lesion.model.fingerprints", "lesion.runtime.files"),
    "lesion.passages": ("lesion.texts.passages", "lesion.texts.named"),
    "lesion.heel.algorithms": ("lesion.heel.run", "lesion.heel.plan", "lesion.heel.screen", "lesion.heel.select",
                               "lesion.heel.prune", "lesion.heel.certify"),
    # packages that took an old module's name: its names, found in their parts
    "lesion.plan": ("lesion.plan.estimate", "lesion.plan.config", "lesion.plan.shapes"),
    "lesion.mechanism": ("lesion.mechanism.run", "lesion.mechanism.detect", "lesion.mechanism.graph",
                         "lesion.mechanism.causal"),
    "lesion.texts": ("lesion.texts.text",),
}


def _warn(old: str, new: str) -> None:
    # the first frame outside the import machinery and this module: the user's import or look-up
    frame: types.FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and (frame.f_code.co_filename == __file__ or "importlib" in frame.f_code.co_filename
                                 or frame.f_code.co_filename.startswith("<frozen")):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{old} is deprecated: use {new} (the old path goes in lesion's next release)",
                  DeprecationWarning, stacklevel=level)


def names_from(old: str):
    """A module ``__getattr__`` for ``old``: each of its old names, found in the module now holding it."""
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        found = [(new, vars(module)[name]) for new in SPLIT[old]
                 if name in vars(module := importlib.import_module(new))]
        if not found:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        # the part that defines it, not one that imports it from there
        new, value = next(((n, v) for n, v in found if getattr(v, "__module__", None) == n), found[0])
        _warn(f"{old}.{name}", f"{new}.{name}")
        return value
    return __getattr__


class _Alias(importlib.abc.Loader):
    """Loads an old module path as the new module object itself."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        _warn(spec.name, self.new)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:
        pass


class _StandIn(importlib.abc.Loader):
    """Loads a split old module as a module that finds each name in its parts."""

    def create_module(self, spec):
        _warn(spec.name, " or ".join(SPLIT[spec.name]))
        return None  # a fresh module, filled below

    def exec_module(self, module) -> None:
        module.__doc__ = f"Deprecated: {module.__name__} was split into {', '.join(SPLIT[module.__name__])}."
        module.__getattr__ = names_from(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, _Alias(MOVED[fullname]))
        if fullname in SPLIT and fullname not in _PACKAGES:
            return importlib.util.spec_from_loader(fullname, _StandIn())
        return None


_PACKAGES = {"lesion.plan", "lesion.mechanism", "lesion.texts"}  # real packages now: their __init__ looks up


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


__all__ = ["MOVED", "SPLIT", "install", "names_from"]
