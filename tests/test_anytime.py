"""An anytime heel search: whatever stops it (--max-rows, --time-budget, Ctrl-C, SIGTERM), heel.json
holds the best set evaluated so far with a finite Delta; --resume evaluates no set twice."""
from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest

from conftest import char_tokenizer
from lesion.cli import main
from lesion.errors import JournalMismatch
from lesion.heel import SearchPlan, SetScorer, find_smallest_heel
from lesion.model.neurons import Neuron
from test_heel import N, PAIR, TEXT, and_pair, planted_and_model

FAST = ["--text", TEXT, "--signals", "activation,massive,superweight,attribution", "--quiet"]


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted") / "model"
    planted_and_model().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture
def evaluated(monkeypatch):
    """Every set the model scorer evaluates, per call; ``evaluated.stop_at`` = n raises
    KeyboardInterrupt on the n-th call (as Ctrl-C would)."""
    import lesion.heel.scorer as scorer
    real = scorer.set_deltas
    calls: list[list[frozenset]] = []

    def recording(model, ids, index, sets, clean, **options):
        calls.append([frozenset(map(str, s)) for s in sets])
        if len(calls) == recording.stop_at:
            raise KeyboardInterrupt
        return real(model, ids, index, sets, clean, **options)
    recording.stop_at = 0
    recording.calls = calls
    monkeypatch.setattr(scorer, "set_deltas", recording)
    return recording


def search(planted_dir, out, *flags) -> int:
    return main(["search", "--model", planted_dir, *FAST, "--out", str(out), *flags])


def assert_best_set(path, stopped: str) -> dict:
    heel = json.loads(path.read_text())
    assert heel["stopped"] == stopped and heel["neurons"] and heel["n"] == len(heel["neurons"])
    assert math.isfinite(float(heel["delta"])) and heel["rows"] > 0 and heel["screen"]["screened"] > 0
    assert heel["texts"][0]["delta"] == heel["delta"] and heel["seconds"] > 0
    return heel


def test_max_rows_40_returns_the_best_set_and_keeps_the_screen(planted_dir, tmp_path, capsys):
    out = tmp_path / "heel.json"
    assert search(planted_dir, out, "--max-rows", "40", "--epsilon", "1000") == 0  # the pair gives ~490
    heel = assert_best_set(out, "budget")
    assert heel["rows"] == 40  # the budget is spent to the last row, nothing thrown away
    assert heel["stages"][0]["stage"] == "screen" and heel["stages"][0]["rows"] == heel["screen"]["screened"]
    assert "best set so far" in capsys.readouterr().out


def test_time_budget_stops_a_slow_search_with_its_best_set():
    def slow(sets):
        time.sleep(0.05)
        return [[and_pair(frozenset(n.channel for n in s)) for s in sets]]
    score = SetScorer(slow, 1, deadline=time.monotonic() + 0.4, piece=4)
    heel = find_smallest_heel(score, N, SearchPlan(epsilon=100.0, time_budget=0.4))  # out of reach
    assert heel.stopped == "budget" and heel.neurons and math.isfinite(heel.delta)
    assert 0 < score.rows < 40 and heel.screen.screened > 0


@pytest.mark.slow
def test_time_budget_on_the_cli(planted_dir, tmp_path, monkeypatch):
    import lesion.heel.scorer as scorer
    real = scorer.set_deltas

    def slow(*args, **kwargs):
        time.sleep(0.2)
        return real(*args, **kwargs)
    monkeypatch.setattr(scorer, "set_deltas", slow)
    out = tmp_path / "heel.json"
    started = time.monotonic()
    assert search(planted_dir, out, "--time-budget", "3", "--epsilon", "1000") == 0  # out of reach
    heel = assert_best_set(out, "budget")
    assert time.monotonic() - started < 3 + 10 and heel["settings"]["time_budget"] == 3


def test_ctrl_c_writes_the_best_set_and_exits_130(planted_dir, tmp_path, evaluated, capsys):
    evaluated.stop_at = 3  # two pieces of sets were scored, the third is interrupted
    out = tmp_path / "heel.json"
    assert search(planted_dir, out) == 130
    assert_best_set(out, "interrupted")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "--resume" in err[0]


def test_sigterm_takes_the_interrupt_path(planted_dir, tmp_path, monkeypatch):
    import lesion.heel.scorer as scorer
    real, calls = scorer.set_deltas, []

    def terminated(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(scorer, "set_deltas", terminated)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "heel.json"
    assert search(planted_dir, out) == 130
    assert_best_set(out, "interrupted")
    assert signal.getsignal(signal.SIGTERM) == before


def test_resume_evaluates_no_set_twice_and_finds_the_same_heel(planted_dir, tmp_path, evaluated):
    whole = tmp_path / "whole.json"
    assert search(planted_dir, whole) == 0
    uninterrupted = json.loads(whole.read_text())
    assert uninterrupted["reached"] and set(uninterrupted["neurons"]) == PAIR

    evaluated.calls.clear()
    evaluated.stop_at = 4
    out = tmp_path / "heel.json"
    assert search(planted_dir, out) == 130
    journal = out.with_name("heel.json.sets.jsonl")
    before = {frozenset(json.loads(line)["set"]) for line in journal.read_text().splitlines()[1:]}
    assert before and before <= {s for call in evaluated.calls for s in call}

    evaluated.calls.clear()
    evaluated.stop_at = 0
    assert search(planted_dir, out, "--resume") == 0
    resumed = json.loads(out.read_text())
    # The search evaluates no set twice; then the journal's sets the heel rests on (the heel's
    # neurons alone, here) are re-scored on the model in one last call: evidence, not truth.
    confirmed = evaluated.calls[-1]
    assert resumed["screen"]["confirmed_sets"] == len(confirmed) > 0 and set(confirmed) <= before
    again = [s for call in evaluated.calls[:-1] for s in call]
    assert again and not set(again) & before and len(again) == len(set(again))
    assert resumed["screen"]["resumed_sets"] == len(before)
    for key in ("neurons", "delta", "reached", "stopped"):
        assert resumed[key] == uninterrupted[key]
    assert resumed["rows"] + len(before) == uninterrupted["rows"] + len(confirmed)


def test_a_journal_of_another_model_is_refused(planted_dir, tmp_path, tiny_dir, refused):
    out = tmp_path / "heel.json"
    assert search(planted_dir, out, "--max-rows", "20") == 0
    _, line = refused(["search", "--model", tiny_dir, *FAST, "--out", str(out), "--resume"], JournalMismatch)
    assert "model" in line  # it says what differs
    _, line = refused(["search", "--model", planted_dir, "--text", "another text entirely", "--quiet",
                       "--signals", "activation", "--out", str(out), "--resume"], JournalMismatch)
    assert "texts" in line


def test_resume_without_a_journal_is_refused(planted_dir, tmp_path, refused):
    refused(["search", "--model", planted_dir, *FAST, "--out", str(tmp_path / "none.json"), "--resume"], "resume")


def test_best_found_prefers_the_smallest_set_that_reaches():
    score = SetScorer(lambda sets: [[and_pair(frozenset(n.channel for n in s)) for s in sets]], 1)
    score([[N[1]], [N[1], N[3], N[7]], [N[3], N[7]], [N[1], N[3]]])
    assert score.best_found(1.0) == [N[3], N[7]]
    assert score.best_found(10.0) == [N[1], N[3], N[7]]  # none reaches: the highest Delta
    assert SetScorer(lambda sets: [[0.0] * len(sets)], 1).best_found(1.0) == []
    assert Neuron("m", 3) in score.best_found(1.0)


@pytest.mark.parametrize("seconds", [0, -3, float("nan"), float("inf")])
def test_a_bad_time_budget_is_one_rule_everywhere(seconds, capsys):
    """SearchPlan and every anytime command refuse the same budgets with the same words."""
    from lesion.runtime.anytime import check_time_budget
    from lesion.errors import ParameterError
    for check in (lambda: SearchPlan(time_budget=seconds).check(), lambda: check_time_budget(seconds)):
        with pytest.raises(ParameterError, match="must be a finite number of seconds > 0"):
            check()
    assert main(["search", "--time-budget", str(seconds), "--quiet"]) == 2
    assert "--time-budget must be a finite number of seconds > 0" in capsys.readouterr().err


def test_a_ctrl_c_swallowed_in_a_finalizer_still_stops_stage_1_and_masked_rows(study, monkeypatch):
    """Python may run the SIGINT handler inside a __del__, where its KeyboardInterrupt is printed
    and dropped; lesion's handler also remembers it, and the next batch stops."""
    import lesion.masking.ablation as ablation
    import lesion.runtime.anytime as anytime
    import lesion.method.rankers as stage1
    for module in (stage1, ablation):
        real = module.split_on_oom

        def swallowed(fn, items, real=real):
            anytime._interrupted = True  # the handler ran; its exception went nowhere
            return real(fn, items)
        monkeypatch.setattr(module, "split_on_oom", swallowed)
    with pytest.raises(KeyboardInterrupt):
        stage1.rank_by_noise(study.lm.model, study.input_ids, study.index, samples=48, batch_size=16,
                             progress=False)
    sets = [[n] for n in study.index.neurons(range(8))]
    with pytest.raises(KeyboardInterrupt):
        ablation.masked_nll(study.lm.model, study.input_ids, study.index, sets, max_rows=4)
    anytime.forget_interrupt()


def test_the_cli_handler_raises_and_remembers_ctrl_c_until_the_command_ends():
    import lesion.runtime.anytime as anytime
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with anytime.remembered_interrupts():
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here at the latest
            assert anytime._interrupted
        assert not anytime._interrupted and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup: an ignored Ctrl-C stays ignored
        with anytime.remembered_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_sigterm_stops_every_command_as_ctrl_c_does(tiny_dir, tmp_path, monkeypatch, capsys):
    """A scheduler's SIGTERM during `lesion rank` (no anytime steps): exit 130 with the one line, nothing
    written, the handler put back; it used to kill the process silently (143)."""
    import lesion.method.rankers as stage1
    real = stage1.rank_by_noise

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here at the latest
        return real(*args, **kwargs)
    monkeypatch.setattr(stage1, "rank_by_noise", terminated)  # the registry looks it up at each call
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "ranking.json"
    assert main(["rank", "--model", tiny_dir, "--samples", "2", "--no-cache", "--quiet", "--out", str(out)]) == 130
    assert not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_budget_spent_in_the_signals_starts_no_further_signal(planted_dir, tmp_path, monkeypatch):
    """The time budget is checked between signals: past it, the rest are left out (and said so), the
    first-order estimate and the portfolio's parts are skipped, and the search stops at once."""
    import lesion.heel.search as search_module
    real, ran = search_module._scores, []

    def slow(lm, study, index, name, cached, memo):
        ran.append(name)
        time.sleep(0.6)
        return real(lm, study, index, name, cached, memo)
    monkeypatch.setattr(search_module, "_scores", slow)
    out = tmp_path / "heel.json"
    assert main(["search", "--model", planted_dir, "--quiet", "--signals", "activation,massive,superweight",
                 "--time-budget", "0.5", "--out", str(out)]) == 0
    heel = json.loads(out.read_text())
    assert ran == ["activation"]
    left = heel["settings"]["signals_left_out"]
    assert set(left) == {"massive", "superweight"} and heel["settings"]["signals"] == ["activation"]
    assert heel["stopped"] == "budget" and heel["screen"]["signal_seconds"]["estimate"] < 0.5


def test_the_stage_table_shows_the_set_a_stage_built_though_it_reached_nothing():
    plan = SearchPlan(epsilon=100.0, max_rows=400, max_size=4)  # out of reach: greedy builds, reaches nothing
    heel = find_smallest_heel(SetScorer(lambda sets: [[and_pair(frozenset(n.channel for n in s)) for s in sets]], 1),
                              N[:12], plan)
    greedy = next(s for s in heel.stages if s.stage == "greedy")
    assert not heel.reached and heel.neurons and greedy.size > 0 and greedy.delta is not None
