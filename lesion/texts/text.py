"""Input texts: the authors' default sentence, reading user text, tokenising with checks."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ParameterError

if TYPE_CHECKING:  # results import this module, and `lesion --help` must not wait for torch
    import torch

BOOKENDS = ("Later reviews were more positive. In just over 29 minutes, Bookends is stunning in its "
            "vision of a bewildered America in search of itself, said AllMusic writer Thom Jurek, "
            "who gave it five stars out of five.")
MIN_TOKENS = 11  # the method needs T > 10 for a stable ranking


def read_text(text: str | None = None, text_file: str | Path | None = None) -> str:
    if text is not None and text_file is not None:
        raise ParameterError("text_file", "and `text` were both given: give one, not both")
    if text_file is not None:
        path = Path(text_file)
        if path.is_dir():
            raise ParameterError("text_file", f"{str(path)!r} is a folder: pass a text file")
        if not path.is_file():
            raise ParameterError("text_file", f"{str(path)!r} not found: pass an existing file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:  # replacing bytes would silently study another text
            raise ParameterError("text_file", f"{str(path)!r} is not valid UTF-8 (byte {e.start}): convert it, "
                                              "e.g. iconv -t utf-8") from None
        except OSError as e:
            raise ParameterError("text_file", f"{str(path)!r} cannot be read ({e.strerror or e})") from None
        if not text.strip():
            raise ParameterError("text_file", f"{str(path)!r} is empty: put at least 11 tokens of text in it")
    return BOOKENDS if text is None else text


def encode(tokenizer, text: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Text -> (1, T) token ids, refusing texts of 10 tokens or fewer."""
    if not isinstance(text, str):
        raise ParameterError("text", f"must be a string (got {type(text).__name__}): pass the text itself")
    ids = tokenizer(text, return_tensors="pt").input_ids
    if ids.shape[1] < MIN_TOKENS:
        raise ParameterError("text", f"has {ids.shape[1]} tokens; the method needs more than 10 "
                                     "(the paper uses about 30): pass a longer one")
    return ids.to(device)


def context_length(model) -> int | None:
    """The positions the model was trained on (``max_position_embeddings`` or GPT-2's
    ``n_positions``), or None when its config does not say."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(model, tokens: int, parameter: str, fix: str, what: str = "") -> None:
    """Refuse feeding the model ``tokens`` positions when its context is shorter: past it the
    position tables run out (an IndexError deep in the model) or the scores are noise. The
    refusal names ``parameter``, the one that set the length (``what``: how, if not alone)."""
    context = context_length(model)
    if context is not None and tokens > context:
        raise ParameterError(parameter, f"{what}is {tokens} tokens but the model's context is {context}: {fix}")


def check_context(model, input_ids: torch.Tensor) -> None:
    """Refuse a text longer than the positions the model was trained on: its scores would be noise."""
    check_fits(model, int(input_ids.shape[1]), "text", "pass a shorter one (or a shorter `text_file`)")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
