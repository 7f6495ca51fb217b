"""Loading a cached model's tokenizer fast, and only where that is the same tokenizer.

A model's own tokenizer class (GemmaTokenizer...) rebuilds its backend from tokenizer.json
parsed in Python, and any class parses the file a second time for its added tokens unless it
is told them (Gemma 3 270M: 3.05 s). The generic backend, told its added tokens, reads the
file once, in Rust (1.19 s). A folder gets the generic one only after a check, done once, that
it encodes, decodes and is configured exactly as the model's class. RECORD keeps the outcome,
the class's sides and added tokens, and what the check held true for: the tokenizer files'
bytes and the transformers and tokenizers versions (an upgrade may change a class); any change
to those means checking again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from ..errors import LesionError

RECORD = "lesion-fast-tokenizer.json"
SIDES = ("padding_side", "truncation_side")
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
PROBES = ("The Bookends sentence, with  two spaces and a tab\t.", "Der Bahnhof wurde renoviert; l'été dernier.",
          "中文文本，日本語のテキスト", "def f(x):\n    return x ** 2  # 🎉", "", " ",
          "<bos><eos><pad><|endoftext|><|im_start|>user<start_of_turn>", "a" * 300)


def load_tokenizer(folder: Path):
    """The tokenizer saved in ``folder``: the generic backend where a record says it is the
    same tokenizer, else the model's class (and then the check, whose outcome is recorded)."""
    from transformers import AutoTokenizer

    checked_for = _identity(folder)
    recorded = _read(folder / RECORD)
    if recorded is not None and recorded["checked_for"] == checked_for:
        if recorded["same"]:
            return _generic(folder, recorded)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    if not os.access(folder, os.W_OK):  # a check that cannot be recorded would be paid on every load
        return tokenizer
    recorded = {"checked_for": checked_for, "same": False, **{side: getattr(tokenizer, side) for side in SIDES},
                "added_tokens": {str(i): t.__getstate__() for i, t in tokenizer.added_tokens_decoder.items()}}
    if _valid(recorded) is not None:
        try:
            recorded["same"] = same_tokenizer(tokenizer, _generic(folder, recorded))
        except Exception:  # noqa: BLE001 - a generic backend that cannot even load is not the same
            recorded["same"] = False
    from ..runtime.files import write_text
    with contextlib.suppress(LesionError):  # a cache that cannot be written only costs time
        write_text(folder / RECORD, json.dumps(recorded))
    return tokenizer


def _identity(folder: Path) -> dict:
    import tokenizers
    import transformers
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.name.startswith(("tokenizer", "chat_template"))):
        digest.update(f"|{name}|".encode())
        digest.update((folder / name).read_bytes())
    return {"files_sha256": digest.hexdigest(), "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}


def _generic(folder: Path, recorded: dict):
    from tokenizers import AddedToken
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    added = {int(i): AddedToken(**t) for i, t in recorded["added_tokens"].items()}
    tokenizer = TokenizersBackend.from_pretrained(folder, trust_remote_code=False, added_tokens_decoder=added)
    for side in SIDES:
        setattr(tokenizer, side, recorded[side])
    return tokenizer


def _read(path: Path) -> dict | None:
    """What a check recorded, or None (no file, or one lesion did not write)."""
    try:
        return _valid(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _valid(data) -> dict | None:
    if not (isinstance(data, dict) and set(data) == {"checked_for", "same", *SIDES, "added_tokens"}
            and isinstance(data["checked_for"], dict) and isinstance(data["same"], bool)
            and all(data[side] in ("left", "right") for side in SIDES) and isinstance(data["added_tokens"], dict)):
        return None
    for i, token in data["added_tokens"].items():
        if not (isinstance(i, str) and i.isdigit() and isinstance(token, dict)
                and set(token) == {"content", *ADDED_TOKEN_FLAGS} and isinstance(token["content"], str)
                and all(isinstance(token[flag], bool) for flag in ADDED_TOKEN_FLAGS)):
            return None
    return data


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers give the same ids, text and settings on every probe."""
    def view(t):
        chat = None
        if t.chat_template:
            try:
                chat = t.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                             tokenize=False)
            except Exception:  # noqa: BLE001 - a template that fails must fail the same way in both
                chat = "error"
        encoded = [(t(p).input_ids, t(p, add_special_tokens=False).input_ids) for p in PROBES]
        added = {i: token.__getstate__() for i, token in t.added_tokens_decoder.items()}
        return (len(t), added, t.special_tokens_map, t.all_special_ids, t.model_max_length, t.chat_template, chat,
                t.padding_side, t.truncation_side, encoded,
                [t.decode(ids, skip_special_tokens=skip) for ids, _ in encoded for skip in (True, False)])
    try:
        return view(a) == view(b)
    except Exception:  # noqa: BLE001 - anything the generic tokenizer cannot do means: keep the class
        return False
