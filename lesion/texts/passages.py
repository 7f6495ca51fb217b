"""Texts beyond one: passages drawn from a corpus, and lesion's own texts by name, each as a
``{name: text}`` mapping that :func:`lesion.search_heel` and the robustness analysis take as is.

    texts = corpus_passages("enwiki-gensim", 4, seed=42)   # {"enwiki-gensim#0": "...", ...}
    heel = search_heel(lm, texts, SearchPlan(max_rows=2000))"""
from __future__ import annotations


from ..errors import ParameterError

DEFAULT_CORPUS = "enwiki-gensim"


MAX_PASSAGES = 1000  # each passage multiplies the cost of every masked row: far beyond any study


def corpus_passages(corpus: str = DEFAULT_CORPUS, passages: int = 4, seed: int = 42) -> dict[str, str]:
    """``passages`` passages of running text drawn from ``corpus`` (a name such as
    ``enwiki-gensim``, or a ``.txt``/``.jsonl`` file or folder) with a seeded generator, named
    ``<corpus>#<i>``: the same seed draws the same passages."""
    if isinstance(passages, bool) or not isinstance(passages, int) or not 1 <= passages <= MAX_PASSAGES:
        raise ParameterError("passages", f"must be a whole number 1..{MAX_PASSAGES:,} (got {passages!r}): each is a "
                                         "text every masked row runs on; leave it out to draw none")
    from .corpora import load_corpus, sample_passages
    loaded = load_corpus(corpus)
    drawn = sample_passages(loaded.documents, passages, seed=seed)
    return {f"{loaded.name}#{i}": text for i, text in enumerate(drawn)}
