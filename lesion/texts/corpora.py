"""Corpora by name or path, as lists of documents.

Names: ``enwiki-gensim`` (offline: 100 real English Wikipedia articles shipped in the
``gensim`` wheel, markup stripped), ``wikitext-103`` and ``c4`` (the paper's corpora,
through ``datasets`` when the hub or its local cache has them). Paths: a ``.txt`` file
(one document), a ``.jsonl`` file (the ``text`` field of each line) or a folder of those.
"""
from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import LesionError, MissingPackage, ParameterError
from ..runtime.files import bounded_json
from ..runtime.temporary import temporarily

HUB_CORPORA = {
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "test"),
    "c4": ("allenai/c4", "en", "validation"),
}
OFFLINE_HINT = "use the corpus enwiki-gensim (offline) or a local .txt/.jsonl file or folder"
# A .jsonl line is one document: a book fits; a line past this is not a document but a mistake.
MAX_JSONL_LINE_CHARS = 256 << 20


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: tuple[str, ...]


# Characters per token are well under this for any tokenizer, so ``max_tokens * CHARS_PER_TOKEN``
# characters of text always hold ``max_tokens`` tokens.
CHARS_PER_TOKEN = 8


def load_corpus(spec: str, max_chars: int | None = None) -> Corpus:
    """The documents of ``spec``, stopping once they hold more than ``max_chars`` characters."""
    if spec == "enwiki-gensim":
        docs = enwiki_gensim()
    elif spec in HUB_CORPORA:
        docs = _hub_corpus(spec, max_chars)
    else:
        docs = _local_corpus(Path(spec))
    docs = take_chars((d for d in docs if d.strip()), max_chars)
    if not docs:
        raise LesionError(f"corpus {spec!r} has no text: {OFFLINE_HINT}")
    return Corpus(spec, tuple(docs))


def enwiki_gensim() -> list[str]:
    try:
        import bz2

        import gensim
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    except ImportError:
        raise MissingPackage("corpus enwiki-gensim needs gensim: pip install gensim") from None
    path = Path(gensim.__file__).parent / "test" / "test_data" / (
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    docs = []
    with bz2.open(path) as f:
        for _title, text, _pageid in extract_pages(f):
            text = filter_wiki(text)
            if text.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = re.sub(r"'{2,}", "", text)
            text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
            docs.append(text)
    return docs


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def prose_paragraphs(document: str, min_chars: int = 200) -> list[str]:
    """Paragraphs of running text: no tables, templates or headings left over from markup."""
    return [p for p in document.split("\n\n")
            if len(p) > min_chars and not p.lstrip().startswith(("|", "{", "="))]


def sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", paragraph) if s.strip()]


def sample_passages(documents: Iterable[str], n: int, seed: int = 0, chars: int = 250) -> list[str]:
    """``n`` passages of whole sentences, about ``chars`` characters each (a shorter paragraph
    whole), each from a different document while there are enough, drawn with a seeded generator."""
    rng = random.Random(seed)
    # A paragraph that spans several lines is a gallery or a list, not running text.
    pools = [[p for p in prose_paragraphs(d) if "\n" not in p.strip()] for d in documents]
    pools = [p for p in pools if p]
    if n < 1 or not pools:
        raise LesionError(f"cannot draw {n} passages: the corpus needs paragraphs of running text, and n >= 1")
    order = rng.sample(range(len(pools)), len(pools))
    passages: list[str] = []
    for i in range(n):
        for _ in range(DRAWS_PER_PASSAGE):  # a passage drawn before is drawn again (a text counts once)
            passage = _draw(rng, pools[order[i % len(order)]], chars)
            if passage not in passages:
                break
        else:
            raise ParameterError("passages", f"asks for {n} passages, and the corpus gave only {len(passages)} "
                                             "different ones: ask for fewer, or give a larger corpus")
        passages.append(passage)
    return passages


DRAWS_PER_PASSAGE = 20


def _draw(rng: random.Random, pool: list[str], chars: int) -> str:
    parts = sentences(rng.choice(pool))
    remaining = [len(" ".join(parts[k:])) for k in range(len(parts))]
    start = rng.choice([k for k, r in enumerate(remaining) if r >= chars] or [0])
    taken = []
    for part in parts[start:]:
        taken.append(part)
        if len(" ".join(taken)) >= chars:
            break
    return " ".join(taken)


def take_chars(documents: Iterable[str], max_chars: int | None) -> list[str]:
    """Leading documents up to the first that takes the total past ``max_chars``; reads no further."""
    taken, total = [], 0
    for doc in documents:
        if max_chars is not None and total > max_chars:
            break
        taken.append(doc)
        total += len(doc)
    return taken


def _hub_corpus(name: str, max_chars: int | None) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise MissingPackage(f"corpus {name} needs the datasets package: pip install datasets") from None
    path, config, split = HUB_CORPORA[name]
    try:
        with _offline_unless_reachable():
            ds = datasets.load_dataset(path, config, split=split, streaming=name == "c4")
            return take_chars((r["text"] for r in ds), max_chars)  # c4 streams: read only what is used
    except Exception as e:  # noqa: BLE001  (datasets raises many types for "not there")
        raise LesionError(f"corpus {name} is not reachable ({type(e).__name__}): {OFFLINE_HINT}") from None


@contextmanager
def _offline_unless_reachable():
    """Without a network, only the local cache: no minute of retries against a dead hub.

    Both libraries read HF_HUB_OFFLINE once at import (lm-eval imports them early), so the
    environment variable is too late here; their module flags are switched for this call only.
    """
    if _hub_reachable():
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    with temporarily(datasets.config, "HF_HUB_OFFLINE", True), \
            temporarily(huggingface_hub.constants, "HF_HUB_OFFLINE", True):
        yield


def _local_corpus(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
        return [doc for f in files for doc in _local_corpus(f)]
    if not path.is_file():
        raise ParameterError("corpora", f"{str(path)!r} is not a known corpus or an existing path: use "
                                        "enwiki-gensim, wikitext-103, c4, or a .txt/.jsonl file or folder")
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ParameterError("corpora", f"cannot read {str(path)!r} ({e.strerror or e}): check its "
                                        "permissions") from None
    if path.suffix != ".jsonl":
        return [content]
    docs = []
    for i, line in enumerate(content.splitlines(), 1):
        if line.strip():
            def refuse(problem: str, i: int = i) -> ParameterError:
                return ParameterError("corpora", f"{str(path)!r} line {i} {problem}: fix the line or pass a .txt file")
            entry = bounded_json(line, refuse, max_bytes=MAX_JSONL_LINE_CHARS, unique_keys=False)
            text = entry.get("text") if isinstance(entry, dict) else None
            if not isinstance(text, str):
                raise refuse("is not a JSON object with a 'text' string")
            docs.append(text)
    return docs
