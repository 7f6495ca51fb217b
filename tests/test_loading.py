"""The dequantised-model cache loads a tokenizer class's generic backend only where it was
checked to be the same tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lesion.model.tokenizer import PROBES, RECORD, load_tokenizer, same_tokenizer


def gemma_tokenizer_folder(path: Path) -> Path:
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer
    chars = [chr(c) for c in range(33, 127)]
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁"] + chars
                                        + ["▁t", "he", "▁the"])}
    GemmaTokenizer(vocab=vocab, merges=[("▁", "t"), ("h", "e"), ("▁t", "he")]).save_pretrained(path)
    return path


def test_a_verified_cache_loads_the_generic_tokenizer_with_the_class_settings(tmp_path):
    from transformers.tokenization_utils_tokenizers import TokenizersBackend
    folder = gemma_tokenizer_folder(tmp_path / "tok")
    first = load_tokenizer(folder)
    assert type(first).__name__ == "GemmaTokenizer"  # the first load is the class's, and checks
    recorded = json.loads((folder / RECORD).read_text())
    assert recorded["padding_side"] == "left" and recorded["truncation_side"] == "right"
    assert recorded["added_tokens"]["2"] == {"content": "<bos>", "single_word": False, "lstrip": False,
                                             "rstrip": False, "normalized": False, "special": True}
    second = load_tokenizer(folder)
    assert type(second) is TokenizersBackend and second.padding_side == "left"
    assert same_tokenizer(first, second)
    assert [first(p).input_ids for p in PROBES] == [second(p).input_ids for p in PROBES]


def test_a_tokenizer_file_the_class_reads_otherwise_keeps_the_class(tmp_path, monkeypatch):
    # GemmaTokenizer rebuilds its normaliser and ignores the file's; the generic backend would
    # lowercase: another tokenizer, so the cache must never switch to it.
    folder = gemma_tokenizer_folder(tmp_path / "tok")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Lowercase"}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    assert type(load_tokenizer(folder)).__name__ == "GemmaTokenizer"
    assert json.loads((folder / RECORD).read_text())["same"] is False
    # The outcome is kept: later loads take the class without building the generic one again.
    monkeypatch.setattr("lesion.model.tokenizer._generic", lambda *a: pytest.fail("checked twice"))
    assert type(load_tokenizer(folder)).__name__ == "GemmaTokenizer"


def test_a_planted_or_corrupt_marker_is_ignored(tmp_path):
    folder = gemma_tokenizer_folder(tmp_path / "tok")
    first = load_tokenizer(folder)
    good = json.loads((folder / RECORD).read_text())
    token = good["added_tokens"]["2"]
    for planted in ("{not json", ["left"], {**good, "padding_side": "up"}, {**good, "chat_template": "x"},
                    {**good, "added_tokens": {"two": token}},
                    {**good, "added_tokens": {"2": {**token, "__class__": "os.system"}}},
                    {**good, "added_tokens": {"2": {**token, "special": "yes"}}}):
        (folder / RECORD).write_text(planted if isinstance(planted, str) else json.dumps(planted))
        assert type(load_tokenizer(folder)).__name__ == "GemmaTokenizer"
        assert json.loads((folder / RECORD).read_text()) == good  # checked again and rewritten
    assert type(first).__name__ == "GemmaTokenizer"


def test_the_check_is_redone_when_the_tokenizer_files_or_versions_change(tmp_path, monkeypatch):
    import transformers
    folder = gemma_tokenizer_folder(tmp_path / "tok")
    load_tokenizer(folder)
    assert type(load_tokenizer(folder)).__name__ == "TokenizersBackend"
    monkeypatch.setattr(transformers, "__version__", "99.0.0")  # an upgrade may change the class
    assert type(load_tokenizer(folder)).__name__ == "GemmaTokenizer"
    assert json.loads((folder / RECORD).read_text())["checked_for"]["transformers"] == "99.0.0"
    # An edit after the check that makes the generic backend another tokenizer: never trusted.
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Lowercase"}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    for _ in range(2):
        tokenizer = load_tokenizer(folder)
        assert type(tokenizer).__name__ == "GemmaTokenizer" and tokenizer("The").input_ids != tokenizer("the").input_ids


def test_a_read_only_cache_loads_the_class_without_a_check_it_could_not_keep(tmp_path, monkeypatch):
    import os
    folder = gemma_tokenizer_folder(tmp_path / "tok")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    monkeypatch.setattr("lesion.model.tokenizer._generic", lambda *a: pytest.fail("checked a read-only cache"))
    assert type(load_tokenizer(folder)).__name__ == "GemmaTokenizer"
    assert not (folder / RECORD).exists()


def test_a_generic_backend_that_cannot_load_is_recorded_as_not_the_same(tmp_path, monkeypatch):
    folder = gemma_tokenizer_folder(tmp_path / "tok")

    def broken(*args):
        raise ValueError("cannot build this backend")
    monkeypatch.setattr("lesion.model.tokenizer._generic", broken)
    assert type(load_tokenizer(folder)).__name__ == "GemmaTokenizer"
    assert json.loads((folder / RECORD).read_text())["same"] is False
