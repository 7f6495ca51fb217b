"""Issue 28: a search journal is evidence, not truth. An edited, non-finite or foreign entry
never becomes a certified heel; a cut line never swallows the next entry; a journal path that
cannot be written is refused before the model loads; a full disk keeps what was found."""
from __future__ import annotations

import errno
import json
import math
import os

import pytest

import lesion.heel.journal as journal_module
from lesion.cli import main
from lesion.errors import LesionError
from lesion.heel import SearchPlan, find_smallest_heel
from lesion.heel.journal import SetJournal, entry_digest, journal_path
from lesion.heel.scorer import JournalMismatch
from test_anytime import FAST, planted_dir  # noqa: F401  (a fixture)
from test_heel import N, PAIR, and_pair, synthetic

KEY = {"model": "fingerprint", "texts": ["sha"], "ablation": "zero"}


def search(model: str, out, *flags) -> int:
    return main(["search", "--model", model, *FAST, "--out", str(out), *flags])


@pytest.fixture
def stopped_search(planted_dir, tmp_path):  # noqa: F811
    """A search stopped by its row budget: its heel.json and its journal's lines."""
    out = tmp_path / "heel.json"
    assert search(planted_dir, out, "--max-rows", "30") == 0
    return out, journal_path(out)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_refused(planted_dir, out, capsys) -> None:  # noqa: F811
    before = out.read_bytes()
    assert search(planted_dir, out, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert out.read_bytes() == before  # nothing certified, nothing written


# --- edited, non-finite and foreign entries ---------------------------------------------------

@pytest.mark.parametrize("edit", ["9.9", "Infinity", "-Infinity", "NaN", "1e999"])
def test_an_edited_or_non_finite_delta_refuses_the_journal(planted_dir, stopped_search, capsys, edit):  # noqa: F811
    out, journal = stopped_search
    text = journal.read_text().splitlines()
    entry = json.loads(text[1])
    text[1] = text[1].replace(json.dumps(entry["deltas"]), f"[{edit}]")
    assert text[1] != json.dumps(entry)
    journal.write_text("\n".join(text) + "\n")
    capsys.readouterr()
    assert_refused(planted_dir, out, capsys)


def test_an_entry_from_another_text_refuses_the_journal(planted_dir, stopped_search, tmp_path, capsys):  # noqa: F811
    out, journal = stopped_search
    other = tmp_path / "other.json"
    assert main(["search", "--model", planted_dir, "--text", "Another text, about mountains and snow.", "--quiet",
                 "--signals", "activation", "--max-rows", "10", "--out", str(other)]) == 0
    foreign = journal_path(other).read_text().splitlines()[1]
    with journal.open("a") as f:
        f.write(foreign + "\n")
    capsys.readouterr()
    assert_refused(planted_dir, out, capsys)


def test_a_forged_entry_with_a_recomputed_digest_is_re_scored_and_refused(planted_dir, stopped_search,  # noqa: F811
                                                                       capsys):
    """Anyone can recompute a SHA-256: a decoy forged to Delta 999 (it would be the heel, a
    single neuron, certified) is re-scored on the model before anything is written."""
    out, journal = stopped_search
    header, *entries = lines(journal)
    key = header["journal"]
    decoy = next(e for e in entries if len(e["set"]) == 1 and e["set"][0] not in PAIR)
    decoy["deltas"] = [999.0]
    decoy["sha256"] = entry_digest(key, decoy["set"], decoy["deltas"])
    journal.write_text("".join(json.dumps(e) + "\n" for e in [header, *entries]))
    capsys.readouterr()
    assert_refused(planted_dir, out, capsys)


def test_confirm_re_scores_what_the_journal_claims():
    score = synthetic(and_pair)
    score.load({frozenset([N[1]]): (9.9,), frozenset([N[3], N[7]]): (3.3,)})  # N1 is really 0.5
    with pytest.raises(JournalMismatch):
        score.confirm([[N[1]]])
    assert score.confirm([[N[3], N[7]]]) == 1 and score.rows == 1 + 1  # both were re-scored once
    assert score.confirm([[N[3], N[7]]]) == 0  # already confirmed: no row


def test_a_forged_journal_never_becomes_a_certified_heel():
    plan = SearchPlan(epsilon=1.0, max_rows=5000, certify_rows=500)
    honest = find_smallest_heel(synthetic(and_pair), N[:12], plan)
    assert honest.reached and set(honest.neurons) == {N[3], N[7]} and honest.certificate.certified

    forged = synthetic(and_pair)
    forged.load({frozenset([N[9]]): (9.9,)})  # really 0.01: it would be a one-neuron heel
    with pytest.raises(JournalMismatch):
        find_smallest_heel(forged, N[:12], plan)

    true = synthetic(and_pair)  # a true journal: the same heel, its sets re-scored
    true.load({frozenset([n]): (and_pair(frozenset([n.channel])),) for n in N[:12]})
    resumed = find_smallest_heel(true, N[:12], plan)
    assert resumed.neurons == honest.neurons and resumed.certificate.certified
    assert resumed.screen.confirmed_sets == true.confirmed > 0


def test_the_journal_refuses_what_it_did_not_write(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = SetJournal(path, KEY)
    journal.start(resume=False)
    journal.append([(frozenset([N[1]]), (0.5,)), (frozenset([N[2]]), (math.inf,)), (frozenset([N[3]]), (math.nan,))])
    journal.close()
    assert SetJournal(path, KEY).read() == {frozenset([N[1]]): (0.5,)}  # a non-finite Delta is not kept
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(LesionError):
        SetJournal(path, {**KEY, "model": "another"}).read()
    header, entry = path.read_text().splitlines()
    for bad in (entry.replace("0.5", "0.6"), entry.replace("0.5", "NaN"), entry[:-5] + "}", "[1, 2]",
                json.dumps({**json.loads(entry), "deltas": [0.5, 0.5]})):
        path.write_text(f"{header}\n{entry}\n{bad}\n{entry}\n")
        with pytest.raises(LesionError):
            SetJournal(path, KEY).read()


# --- a journal cut mid-line -------------------------------------------------------------------

def test_an_entry_never_joins_a_cut_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = SetJournal(path, KEY)
    journal.start(resume=False)
    journal.append([(frozenset([N[1]]), (0.5,)), (frozenset([N[2]]), (0.25,))])
    journal.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"set": ["m:3"], "del')  # a kill while the third line was written
    again = SetJournal(path, KEY)
    assert len(again.read()) == 2
    again.start(resume=True)
    again.append([(frozenset([N[4]]), (0.125,))])
    again.close()
    assert path.read_bytes().startswith(whole) and path.read_bytes().endswith(b"\n")
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert SetJournal(path, KEY).read() == {frozenset([N[1]]): (0.5,), frozenset([N[2]]): (0.25,),
                                            frozenset([N[4]]): (0.125,)}


def test_a_search_resumes_a_journal_cut_mid_line(planted_dir, stopped_search):  # noqa: F811
    out, journal = stopped_search
    data = journal.read_bytes()
    journal.write_bytes(data[:-7])  # the last entry cut short
    assert search(planted_dir, out, "--resume") == 0
    assert all(json.loads(line) for line in journal.read_text().splitlines())  # every line whole
    heel = json.loads(out.read_text())
    assert heel["reached"] and set(heel["neurons"]) == PAIR
    assert heel["screen"]["resumed_sets"] == len(data.splitlines()) - 2  # the cut entry was dropped


# --- a journal path that cannot be written ----------------------------------------------------

def test_a_journal_path_that_is_a_folder_is_refused_before_the_model_loads(planted_dir, tmp_path,  # noqa: F811
                                                                           monkeypatch, capsys):
    import lesion.cli.search as cli_search

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(cli_search, "load", no_load)
    out = tmp_path / "heel.json"
    journal_path(out).mkdir()
    for flags in ((), ("--resume",)):
        assert search(planted_dir, out, *flags) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0]
    assert not out.exists() and journal_path(out).is_dir() and not any(journal_path(out).iterdir())


# --- a full disk ------------------------------------------------------------------------------

class FullDisk:
    """``os`` for the journal, whose ``write`` fills the disk after ``room`` bytes (the write that
    crosses it is cut short, as a real one is)."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done = os.write(fd, data[:self.room])
        self.room -= done
        return done


def test_a_full_disk_stops_the_journal_not_the_search(planted_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(journal_module, "os", FullDisk(room=1500))
    out = tmp_path / "heel.json"
    assert search(planted_dir, out) == 0
    heel = json.loads(out.read_text())
    assert heel["reached"] and set(heel["neurons"]) == PAIR and "journal_failure" in heel["screen"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    journal = journal_path(out)
    assert 0 < journal.stat().st_size <= 1500
    monkeypatch.undo()
    assert search(planted_dir, out, "--resume") == 0  # the cut line is dropped, the rest resumed
    assert json.loads(out.read_text())["screen"]["resumed_sets"] > 0


def test_a_full_disk_for_the_result_says_what_was_found(planted_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    import lesion.runtime.files

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(journal_module, "os", FullDisk(room=0))
    monkeypatch.setattr(lesion.runtime.files.os, "fsync", full_disk)
    out = tmp_path / "heel.json"
    capsys.readouterr()
    assert search(planted_dir, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert all(name in err[0] for name in PAIR)  # the heel, in the one line
    assert not out.exists()


def test_a_forged_single_shown_in_the_screen_table_is_re_scored():
    """A single neuron's Delta edited in the journal (digest recomputed) is not on the answer's path,
    but the heel's screen table would state it as measured: it is re-scored and refused."""
    plan = SearchPlan(epsilon=1.0, max_rows=5000, certify_rows=500)
    forged = synthetic(and_pair)
    forged.load({frozenset([N[5]]): (and_pair(frozenset([N[5].channel])) + 0.3,)})
    with pytest.raises(JournalMismatch):
        find_smallest_heel(forged, N[:12], plan)
