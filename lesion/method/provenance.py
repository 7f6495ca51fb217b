"""What a result was computed on and with: the model (with a hub id's commit), its weights'
fingerprint, dtype, device, and the versions of lesion (with its git commit from a checkout),
torch and transformers."""
from __future__ import annotations

import functools
import platform
import subprocess
from typing import TYPE_CHECKING

import torch

from ..errors import ParameterError
from ..version import __version__, checkout
from ..model.loading import LoadedModel

if TYPE_CHECKING:
    from ..results.settings import Settings


def versions() -> dict:
    import transformers
    return {"lesion": __version__, "git_commit": git_commit(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def model_provenance(lm: LoadedModel) -> dict:
    """What a result was computed on and with: the model, its weights' fingerprint, dtype, device, versions;
    for a hub id, ``model_revision``: the commit its files were downloaded at; for a model accepted with
    ``partial_view``, what lesion did not see."""
    revision = {"model_revision": lm.revision} if lm.revision is not None else {}
    record = {"model": lm.name, **revision, "model_fingerprint": lm.fingerprint(), "dtype": lm.dtype,
              "device": str(lm.device), "versions": versions()}
    if lm.coverage is not None and lm.coverage.partial:
        record["partial_view"] = lm.coverage.to_dict()
    return record


def check_same_revision(settings: Settings, lm: LoadedModel, what: str) -> None:
    """Refuse a result recorded at one hub commit read against a model loaded at another: the weights
    may agree while the tokenizer or config do not. A result or model from a folder has no commit."""
    theirs = settings.model_revision
    if theirs is not None and lm.revision is not None and theirs != lm.revision:
        raise ParameterError("revision", f"must be {theirs}: the {what} was made on {settings.model!r} at that "
                                         f"commit, this model is {lm.name!r} at commit {lm.revision}; pass that "
                                         "commit, or re-run it on this one")


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the lesion checkout this code runs from (None for an installed copy)."""
    source = checkout()
    if source is None:
        return None
    try:
        done = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
