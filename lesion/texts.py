"""Input texts: the authors' default sentence, reading user text, tokenising with checks."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .errors import LesionError

BOOKENDS = ("Later reviews were more positive. In just over 29 minutes, Bookends is stunning in its "
            "vision of a bewildered America in search of itself, said AllMusic writer Thom Jurek, "
            "who gave it five stars out of five.")
MIN_TOKENS = 11  # the method needs T > 10 for a stable ranking


def read_text(text: str | None = None, text_file: str | Path | None = None) -> str:
    if text is not None and text_file is not None:
        raise LesionError("give either --text or --text-file, not both")
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise LesionError(f"text file {str(path)!r} not found: pass an existing file to --text-file")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise LesionError(f"text file {str(path)!r} is empty: put at least 11 tokens of text in it")
    return BOOKENDS if text is None else text


def encode(tokenizer, text: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Text -> (1, T) token ids, refusing texts of 10 tokens or fewer."""
    ids = tokenizer(text, return_tensors="pt").input_ids
    if ids.shape[1] < MIN_TOKENS:
        raise LesionError(f"the text has {ids.shape[1]} tokens; the method needs more than 10 "
                          "(the paper uses about 30): pass a longer --text or --text-file")
    return ids.to(device)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
