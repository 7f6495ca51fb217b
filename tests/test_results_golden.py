"""The golden files in tests/data/golden (written by tests/golden_results.py) against today's code.

Three promises, each tested as such:

- a golden file read back writes the same bytes (no float is recomputed: exact on every machine);
- the same computation twice on one machine writes the same bytes (timings aside);
- today's code computes what the golden files hold: on the CPU kind that wrote them
  (``machine.json``), the same JSON exactly; on any other, the same keys, order, neurons, counts,
  strings and hashes exactly, and every float within :data:`REL` of it. Float32 matmuls round in
  another order on another instruction set (AVX2 against AVX-512/AMX), so the last bits differ.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from golden_results import GOLDEN, machine, produce
from lesion.runtime.files import json_text
from lesion.results import CriticalSet, Heel, Ranking

FILES = sorted(p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*.json")
               if p.name not in ("run.json", "fingerprints.json", "machine.json"))
TYPES = {"ranking.json": Ranking, "critical.json": CriticalSet}

# Float tolerance across CPUs: 256 units of float32 rounding (2**-24 each), relative, and the same
# absolute for values near 0 (a Delta of 0.004 is a ratio of perplexities within 1%). One float32
# forward of the tiny models sums ~64 products per output through 2 blocks: its rounding error is a
# few dozen units; 256 leaves room for the softmax and the log, and stays 1,000 times below any
# difference a change of method makes.
REL = 256 * 2.0**-24
ABS = REL


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


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


def differences(ours, golden, where: str = "$") -> list[str]:
    """Where ``ours`` differs from ``golden`` beyond float rounding: keys and their order, types,
    strings, whole numbers and booleans exactly; floats within REL. A ranking's neurons may swap only
    where their scores are within REL (a tie the other CPU broke the other way)."""
    if isinstance(golden, bool) or isinstance(ours, bool) or type(ours) is not type(golden):
        return [] if ours == golden and type(ours) is type(golden) else [f"{where}: {ours!r} != {golden!r}"]
    if isinstance(golden, float):
        return [] if close(ours, golden) else [f"{where}: {ours!r} != {golden!r} (beyond {REL:.1e})"]
    if isinstance(golden, dict):
        if list(ours) != list(golden):
            return [f"{where}: keys {list(ours)} != {list(golden)}"]
        if {"neurons", "scores", "positions"} <= set(golden):
            return ranking_differences(ours, golden, where)
        return [d for k in golden for d in differences(ours[k], golden[k], f"{where}.{k}")]
    if isinstance(golden, list):
        if len(ours) != len(golden):
            return [f"{where}: {len(ours)} items != {len(golden)}"]
        return [d for i, (a, b) in enumerate(zip(ours, golden)) for d in differences(a, b, f"{where}[{i}]")]
    return [] if ours == golden else [f"{where}: {ours!r} != {golden!r}"]


def ranking_differences(ours: dict, golden: dict, where: str) -> list[str]:
    rest = {k: v for k, v in golden.items() if k not in ("neurons", "scores", "positions")}
    found = [d for k in rest for d in differences(ours[k], golden[k], f"{where}.{k}")]
    if len(ours["neurons"]) != len(golden["neurons"]):
        return [*found, f"{where}.neurons: {len(ours['neurons'])} != {len(golden['neurons'])}"]
    found += differences(ours["scores"], golden["scores"], f"{where}.scores")
    # runs of golden scores within REL of their neighbour: a tie, in any order on another CPU
    start = 0
    scores = golden["scores"]
    for end in range(1, len(scores) + 1):
        if end < len(scores) and close(scores[end], scores[end - 1]):
            continue
        mine = sorted(zip(ours["neurons"][start:end], ours["positions"][start:end]))
        theirs = sorted(zip(golden["neurons"][start:end], golden["positions"][start:end]))
        if mine != theirs:
            found.append(f"{where}.neurons[{start}:{end}]: {mine[:3]} != {theirs[:3]}")
        start = end
    return found


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")
    produce(out)
    return out


@pytest.mark.parametrize("name", FILES)
def test_the_same_computation_computes_what_the_golden_file_holds(produced, name):
    ours = untimed(json.loads((produced / name).read_text(encoding="utf-8")))
    golden = untimed(json.loads((GOLDEN / name).read_text(encoding="utf-8")))
    assert differences(ours, golden) == []
    if machine() == json.loads((GOLDEN / "machine.json").read_text(encoding="utf-8")):
        # json.loads keeps the key order: the comparison of the dumps checks it too
        assert json.dumps(ours) == json.dumps(golden), "the CPU kind that wrote the golden files writes other bits"


def test_the_same_computation_twice_writes_the_same_bytes(produced, tmp_path):
    produce(tmp_path)
    for name in FILES:
        first = untimed(json.loads((produced / name).read_text(encoding="utf-8")))
        again = untimed(json.loads((tmp_path / name).read_text(encoding="utf-8")))
        assert json.dumps(again) == json.dumps(first), name


@pytest.mark.parametrize("ours, golden, found", [
    (1.0, 1.0 + 1e-6, False),                     # rounding
    (1.0, 1.0 + 1e-3, True),                      # a real difference
    (1, 1.0, True),                               # a whole number is not a float
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),   # key order
    (["x"], ["x", "y"], True),
    ({"neurons": ["a", "b"], "scores": [2.0, 2.0 + 1e-7], "positions": [0, 1]},
     {"neurons": ["b", "a"], "scores": [2.0, 2.0 + 1e-7], "positions": [1, 0]}, False),  # a tie broken otherwise
    ({"neurons": ["a", "b"], "scores": [2.0, 1.0], "positions": [0, 1]},
     {"neurons": ["b", "a"], "scores": [2.0, 1.0], "positions": [1, 0]}, True),  # not a tie: another order
])
def test_the_comparison_tells_rounding_from_a_difference(ours, golden, found):
    assert bool(differences(ours, golden)) == found
