"""Loading a causal LM from an alias, a local folder, a .gguf file or a hub id (downloaded on
first use by :mod:`lesion.model.hub`, safetensors only).

A GGUF file is dequantised by transformers, which takes many seconds; the result is
saved once as safetensors under the cache folder so later runs start in a few seconds."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .coverage import Coverage
from .coverage import check as check_coverage
from ..errors import ParameterError
from ..runtime.options import DEFAULT_MODEL, DTYPES
from ..runtime.temporary import temporarily
from .aliases import ALIASES, resolve
from .fingerprints import weights_fingerprint
from .model_cache import _gguf_cache, _load_cached, _save_atomically, sweep_orphans
from ..runtime.files import cache_dir

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for (alias, path or hub id)
    dtype: str
    revision: str | None = None  # a hub id's commit hash, the snapshot loaded (None for a folder, file or alias)
    coverage: Coverage | None = None  # what share of the parameters lesion's sites see

    @property
    def device(self) -> torch.device:
        """Where input ids go: the embedding's execution device when accelerate placed it."""
        embeddings = self.model.get_input_embeddings()
        placed = getattr(getattr(embeddings, "_hf_hook", None), "execution_device", None)
        return torch.device(placed) if placed is not None else embeddings.weight.device

    def fingerprint(self) -> str:
        """Identity of the weights: a hash of every parameter's name, shape, dtype and bytes."""
        return self._weights_digest

    @functools.cached_property
    def _weights_digest(self) -> str:
        # Computed once per loaded model (about 0.5 s for SmolLM2-135M in float32); lesion
        # never changes weights, so the digest stays true for the model's lifetime.
        return weights_fingerprint(self.model)


def check_device(device: str = "cpu", device_map: str | dict | None = None) -> None:
    """A device torch understands and this machine has, checked before a model loads."""
    if isinstance(device_map, str) and device_map != "auto":
        raise ParameterError("device_map", f"takes 'auto' or accelerate's {{module: device}} (got {device_map!r})")
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ParameterError("device", f"{device!r} is not a device: use cpu, cuda or cuda:N") from None
    if kind.type == "cuda":  # with a device_map too: accelerate would quietly place it all on the CPU
        if not torch.cuda.is_available():
            raise ParameterError("device", f"{device} asked for but no CUDA device is available: use cpu")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise ParameterError("device", f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif kind.type not in ("cpu", "cuda", "mps"):
        raise ParameterError("device", f"{device!r}: lesion runs on cpu, cuda or mps")


def load_model(spec: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu",
               device_map: str | dict | None = None, use_cache: bool = True, progress: bool = True,
               revision: str | None = None, partial_view: bool = False) -> LoadedModel:
    """``device_map`` ("auto", or accelerate's {module: device or "cpu" or "disk"}) shards and
    offloads a model too large for one device; the rest of lesion works on it unchanged.
    ``revision`` pins a hub id to a branch, tag or commit (default: the repository's main branch).

    A model whose MLP, experts or router lesion cannot see (a mixture-of-experts family it does
    not know) is refused unless ``partial_view``: then its results record what was not seen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)  # a folder or .gguf file given as a Path names it as its string does
    if not isinstance(spec, str):
        raise ParameterError("model", f"must be an alias, a folder, a .gguf file or a hub id (got "
                                      f"{type(spec).__name__} {spec!r})")
    if dtype not in DTYPES:
        raise ParameterError("dtype", f"must be one of {', '.join(DTYPES)} (got {dtype!r})")
    check_device(device, device_map)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    folder, gguf = resolve(spec)
    folder, commit = _hub_snapshot(spec, folder, gguf, revision, progress)
    kwargs = {"dtype": TORCH_DTYPES[dtype]}
    if device_map is not None:
        # What does not fit on the devices and in memory goes to disk, under the cache, per model.
        offload = cache_dir() / "offload" / hashlib.sha256(spec.encode()).hexdigest()[:16]
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun, ranks on a node offload apart
            offload = offload.with_name(f"{offload.name}-rank{os.environ.get('LOCAL_RANK', '0')}")
        kwargs.update(device_map=device_map, offload_folder=str(offload))
    # Never run code shipped with a model (an ``auto_map`` in its config): lesion needs none,
    # and with it transformers would also stop to ask on an open stdin.
    kwargs["trust_remote_code"] = False
    cached = _gguf_cache(folder, gguf) if gguf else None
    sweep_orphans(cache_dir() / "models")  # copies left by dequantisations that were killed
    digest = None  # the weights' fingerprint, when checking the cache already computed it
    try:
        loaded = _load_cached(cached, kwargs, dtype) if cached is not None and use_cache else None
        if loaded is not None:
            tokenizer, model, digest = loaded
        else:
            local = {"gguf_file": gguf} if gguf else {"local_files_only": True}
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, **local)
            with _gguf_progress(progress):
                if gguf:  # TODO(issue 34): the same check through transformers' GGUF conversion
                    model = AutoModelForCausalLM.from_pretrained(folder, **local, **kwargs)
                else:
                    loaded_info: Any = AutoModelForCausalLM.from_pretrained(folder, **local, **kwargs,
                                                                            output_loading_info=True)
                    model, info = loaded_info
                    check_all_weights_read(spec, info)
            if cached is not None and use_cache:
                digest = _save_atomically(model, tokenizer, cached, dtype)
    except LOAD_ERRORS as e:
        raise ParameterError("model", _load_error(spec, e)) from None
    if device_map is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = LoadedModel(model, tokenizer, spec, dtype, commit, check_coverage(model, partial_view))
    if digest is not None:
        lm.__dict__["_weights_digest"] = digest  # the cached_property, filled: computed once per load
    return lm


def _hub_snapshot(spec: str, folder: str, gguf: str | None, revision: str | None,
                  progress: bool) -> tuple[str, str | None]:
    """(the folder to load, its hub commit or None): a hub id's snapshot, downloaded if need be."""
    from ..errors import ParameterError
    from .hub import check_no_code, check_revision, snapshot
    if gguf is not None or Path(folder).is_dir():
        if revision is not None:
            raise ParameterError("revision", f"pins a hub id's files; {spec!r} is a local model: drop `revision`")
        if gguf is None:
            check_no_code(Path(folder), spec)
        return folder, None
    check_revision(revision)  # before the hub client joins it into a path
    local, commit = snapshot(folder, revision, progress)
    check_no_code(local, spec)
    return str(local), commit


def check_all_weights_read(spec: str, info: dict) -> None:
    """Refuse a model any parameter of which transformers did not read from the weights (missing,
    unexpected or renamed keys): it would be studied as random initialisation, differently each run.
    Tied weights and non-persistent buffers are not reported by transformers, so they pass."""
    for kind in ("missing", "unexpected", "mismatched"):
        keys = sorted(str(k) for k in (info.get(f"{kind}_keys") or ()))
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            raise ParameterError("model", f"{spec!r} cannot be loaded: {len(keys)} {kind} weight(s) for its "
                                 f"architecture ({shown}), which would be random initialisation: pass a folder "
                                 "whose weights and config.json belong together")
    errors = [str(e).splitlines()[0] for e in info.get("error_msgs") or () if str(e).strip()]
    if errors:
        raise ParameterError("model", f"{spec!r} cannot be loaded: {errors[0][:200]}")


def _safetensors_error() -> type[Exception]:
    try:
        from safetensors import SafetensorError
        return SafetensorError
    except ImportError:  # pragma: no cover - transformers requires safetensors
        return OSError


# What a broken model folder raises from transformers: a missing or cut file (OSError,
# EOFError, struct.error), weights that are not safetensors (SafetensorError), a config
# that names shapes the weights do not have (RuntimeError: size mismatch), bad JSON (ValueError).
LOAD_ERRORS = (OSError, ValueError, KeyError, struct.error, EOFError, RuntimeError, _safetensors_error())


def _load_error(spec: str, e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, RuntimeError) and ("size mismatch" in str(e) or "ignore_mismatched_sizes" in str(e)):
        return (f"{spec!r} cannot be loaded: its config.json disagrees with its weights ({first[:160]}): "
                "pass the folder's original config.json")
    if isinstance(e, _safetensors_error()):
        return (f"{spec!r} cannot be loaded: its weights file is not valid safetensors ({first[:160]}): "
                "copy the model's files again")
    return (f"{spec!r} cannot be loaded ({first[:200]}): pass a local folder, a supported .gguf file or an "
            f"alias ({', '.join(ALIASES)})")


@contextlib.contextmanager
def _gguf_progress(enabled: bool):
    """transformers' GGUF dequantisation bar is a bare tqdm that its progress switch does not reach."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if enabled or not hasattr(gguf_utils, "tqdm"):
        yield
        return
    with temporarily(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)):
        yield
