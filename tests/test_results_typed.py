"""Typed results: to_dict/from_dict derived from the fields, round trips of every result type, typed
settings that keep their keys and order, a corrupt field or an unknown schema refused in one line."""
from __future__ import annotations

import json
import math

import pytest

from golden_results import GOLDEN
from lesion.errors import LesionError
from lesion.runtime.files import json_text
from lesion.model.neurons import Neuron
from lesion.results import (Certificate, Comparison, CriticalSet, EvalReport, Heel, LevelDelta, MinimalSets,
                            NeuronProfile, Portfolio, PortfolioRun, Ranking, SchemaError, Screen, Settings, SliceCheck,
                            Stage, Step, Stopped, TextScore, TraceStep, Transfer, TransferRow, VerifyReport)

N = (Neuron("model.layers.0.mlp.down_proj", 3), Neuron("model.layers.1.mlp.down_proj", 7))
SETTINGS = Settings.of({"model": "tiny", "model_fingerprint": "f" * 32, "text_sha256": None, "text": None,
                        "tokens": 12, "epsilon": 1.0, "something_newer": {"kept": [1, 2]}})


def heel() -> Heel:
    return Heel("tiny", N, True, 2.0, 10.0, 1000.0, 40,
                (TextScore("a", "0" * 64, 12, 10.0, 2.0, 1000.0),),
                (Stage("screen", 30, 0.5, 0, None), Stage("greedy", 10, 0.2, 2, 2.0)),
                Screen.of(pool=8, screened=8, top=[{"neuron": str(N[0]), "delta": 0.5}], heel_alone={str(N[0]): 0.5}),
                Certificate.of({"pool": 8, "certified": True, "smaller_set": None, "best_delta_by_size": {1: 0.5}}),
                (TraceStep.of(stage="greedy", added=str(N[0]), size=1, delta=0.5, rescreened=0),), Stopped.REACHED,
                SETTINGS,
                profile=(NeuronProfile(str(N[0]), 0, "down", 0.5, 3, 12.0, 0.1),), seconds=1.5,
                portfolio=Portfolio("all", (PortfolioRun("all", 8, 8, 2, True, "reached", 40, 1.0),
                                            PortfolioRun("q,k,v", 4, ran=False, why="the budget was spent"))),
                transfer=Transfer(("a", "b"), {"joint": TransferRow(tuple(map(str, N)), (2.0, None))}, {"a": 2},
                                  {"a": 10}, 4))


def every_result() -> list:
    return [
        Ranking("tiny", "noise", N, (2.0, 1.0), (0, 4), 64, SETTINGS),
        CriticalSet("tiny", N, 10.0, 1000.0, 2.0, True, (Step(1, 20.0, math.log10(2.0)), Step(2, 1000.0, 2.0)), 3,
                    SETTINGS),
        heel(),
        EvalReport("tiny", tuple(map(str, N)), (0, 2), SETTINGS, perplexity=({"level": 0, "ppl": 10.0},)),
        Comparison("tiny", 10.0, (1, 2), (LevelDelta("noise", 1, 0.5, 0.0, 20.0, 1),), {"noise": []}, SETTINGS),
        VerifyReport("tiny", (SliceCheck(str(N[0]), "down_proj[:, 3]", "intact", ""),), True, SETTINGS),
        MinimalSets(("a",), 2.0, ("a",), 2.0, 3, None, None, 8, 2, 36, 4, None, SETTINGS),
    ]


@pytest.mark.parametrize("result", every_result(), ids=lambda r: type(r).__name__)
def test_every_result_type_reads_back_itself_and_writes_the_same_bytes(result, tmp_path):
    again = type(result).from_dict(json.loads(json_text(result)))
    assert again == result and json_text(again) == json_text(result)
    path = result.save(tmp_path / "result.json")
    assert json_text(type(result).load(path)) == path.read_text()


def test_settings_keep_their_keys_their_order_and_keys_lesion_does_not_know():
    data = SETTINGS.to_dict()
    assert list(data) == ["model", "model_fingerprint", "text_sha256", "text", "tokens", "epsilon", "something_newer"]
    assert data["text"] is None and "dtype" not in data  # a null key stays; an absent one stays absent
    assert SETTINGS.tokens == 12 and SETTINGS.dtype is None and SETTINGS.extra == {"something_newer": {"kept": [1, 2]}}
    moved = SETTINGS.merged(tokens=13, stage2="linear")
    assert list(moved.to_dict())[-2:] == ["something_newer", "stage2"] and moved.tokens == 13
    assert Settings().epsilon_or_default == 1.0 and SETTINGS.epsilon_or_default == 1.0


def test_a_heel_is_typed_and_its_stop_reads_as_the_string_it_is_written_as():
    h = heel()
    assert h.stopped == "reached" and json.loads(json_text(h))["stopped"] == "reached"
    assert h.stages[1].delta == 2.0 and h.texts[0].tokens == 12 and h.certificate.best_delta_by_size == {"1": 0.5}
    assert json.loads(json_text(h))["n"] == 2 and h.screen.top[0].delta == 0.5 and h.trace[0].added == str(N[0])
    assert h.portfolio.parts[1].to_dict() == {"name": "q,k,v", "pool": 4, "ran": False, "why": "the budget was spent"}


def test_an_old_critical_set_without_the_later_fields_still_loads(tmp_path):
    data = json.loads((GOLDEN / "scan" / "critical.json").read_text())
    for key in ("reached", "trajectory", "forward_rows"):
        del data[key]
    path = tmp_path / "critical.json"
    path.write_text(json.dumps(data))
    old = CriticalSet.load(path)
    assert old.reached and old.trajectory == () and old.forward_rows == 0


@pytest.mark.parametrize("key,value", [("delta", "much"), ("neurons", "m:1"), ("stopped", "tired"),
                                       ("stages", [{"stage": "screen"}]), ("settings", {"tokens": "many"})])
def test_a_corrupt_field_is_refused_naming_the_file(tmp_path, key, value):
    data = json.loads((GOLDEN / "heel.json").read_text())
    data[key] = value
    path = tmp_path / "heel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LesionError, match="heel.json"):
        Heel.load(path)


@pytest.mark.parametrize("schema", [2, "x"])
def test_a_file_of_an_unknown_schema_is_refused(tmp_path, schema):
    data = {"schema": schema, **json.loads((GOLDEN / "scan" / "ranking.json").read_text())}
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="ranking.json"):
        Ranking.load(path)
    with pytest.raises(SchemaError):
        Ranking.from_dict(data)


def test_a_file_naming_the_current_schema_loads():
    data = json.loads((GOLDEN / "scan" / "ranking.json").read_text())
    assert Ranking.from_dict({"schema": Ranking.SCHEMA, **data}) == Ranking.from_dict(data)


def test_the_heel_shows_in_a_notebook_as_tables_with_its_delta_per_text_and_its_certificate():
    import lesion.report.notebook  # noqa: F401  (registers the views)
    page = heel()._repr_html_()
    assert page.count("<table>") == 2 and "<pre>" not in page
    assert str(N[0]) in page and "down" in page and "Certificate" in page and "certified" in page
