"""What a result was computed on and with: the model, its weights' fingerprint, dtype, device,
and the versions of lesion (with its git commit from a checkout), torch and transformers."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from .version import __version__
from .loading import LoadedModel


def versions() -> dict:
    import transformers
    return {"lesion": __version__, "git_commit": git_commit(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def model_provenance(lm: LoadedModel) -> dict:
    """What a result was computed on and with: the model, its weights' fingerprint, dtype, device, versions."""
    return {"model": lm.name, "model_fingerprint": lm.fingerprint(), "dtype": lm.dtype, "device": str(lm.device),
            "versions": versions()}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the lesion checkout this code runs from (None for an installed copy)."""
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
