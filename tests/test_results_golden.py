"""The same bytes as before results were typed: the golden files in tests/data/golden were written by
the code before (tests/golden_results.py); each one read back writes the same bytes, and the same
computation today writes the same JSON, timings and versions aside."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_results import GOLDEN, produce
from lesion.files import json_text
from lesion.results import CriticalSet, Heel, Ranking

FILES = sorted(p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*.json")
               if p.name not in ("run.json", "fingerprints.json"))
TYPES = {"ranking.json": Ranking, "critical.json": CriticalSet}


def result_type(name: str):
    return TYPES.get(Path(name).name, Heel)


@pytest.mark.parametrize("name", FILES)
def test_a_golden_file_read_back_writes_the_same_bytes(name):
    path = GOLDEN / name
    assert json_text(result_type(name).load(path)) == path.read_text(encoding="utf-8")


def untimed(value):
    """``value`` with what changes between runs (seconds, the library versions) set to None."""
    if isinstance(value, dict):
        return {k: None if k == "versions" or k == "seconds" or k.endswith("_seconds") else untimed(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")
    produce(out)
    return out


@pytest.mark.parametrize("name", FILES)
def test_the_same_computation_writes_the_same_json(produced, name):
    ours = (produced / name).read_text(encoding="utf-8")
    golden = (GOLDEN / name).read_text(encoding="utf-8")
    # json.loads keeps the key order: the comparison of the lists of items checks it too
    assert json.dumps(untimed(json.loads(ours))) == json.dumps(untimed(json.loads(golden)))
