"""Issue 28: every reader of a run folder checks that its files belong together (same weights,
text and ranking), as `lesion verify` does, `lesion report` included."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import TEXT, save_tiny, scan_tiny
from lesion.cli import main
from lesion.replay.runfolder import InconsistentRun, RunFolder


@pytest.fixture(scope="module")
def two_runs(tiny_dir, tmp_path_factory):
    """A run of the tiny Llama, and one of another tiny Llama (other weights), on the same text."""
    root = tmp_path_factory.mktemp("runs")
    other_model = str(save_tiny(root / "other-llama", seed=1))
    return tiny_dir, scan_tiny(tiny_dir, root / "a"), other_model, scan_tiny(other_model, root / "b")


@pytest.fixture
def run(two_runs, tmp_path):
    """A fresh copy of the first run, to spoil."""
    return shutil.copytree(two_runs[1], tmp_path / "run")


def edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def readers(run) -> list[list[str]]:
    """Every command that reads a run folder or a critical.json inside one."""
    critical = str(run / "critical.json")
    return [["report", str(run)], ["minimal", "--run", str(run), "--pool", "3", "--max-size", "1"],
            ["mechanism", "--run", str(run)], ["mask", "--neurons", critical],
            ["eval", "--neurons", critical, "--corpus", "none", "--humaneval", "1"],
            ["generate", "--neurons", critical, "--prompt", "The quick"],
            ["analyze", "distribution", "--out-dir", str(run)]]


def assert_every_reader_refuses(run, capsys) -> None:
    """Each reader stops on the folder's inconsistency (the very error the library raises), exit 2."""
    with pytest.raises(InconsistentRun) as refused:
        RunFolder(run).check()
    before = sorted(p.name for p in run.iterdir())
    capsys.readouterr()
    for command in readers(run):
        assert main([*command, "--quiet"]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(refused.value) in err[0], (command, err)
    assert sorted(p.name for p in run.iterdir()) == before  # no report, no figures, no result written


def test_a_consistent_run_is_read(run):
    assert RunFolder(run).check().critical().neurons
    assert main(["report", str(run), "--quiet"]) == 0


def test_another_models_critical_set_beside_the_ranking_is_refused(two_runs, run, capsys):
    shutil.copy(two_runs[3] / "critical.json", run / "critical.json")
    shutil.copy(two_runs[3] / "fingerprints.json", run / "fingerprints.json")
    assert_every_reader_refuses(run, capsys)


def test_a_renamed_critical_neuron_is_refused(run, capsys):
    """Renamed in critical.json and in fingerprints.json alike (so that verify's own check of
    the fingerprints passes): the set is no longer the ranking's top."""
    ranking = json.loads((run / "critical.json").read_text())
    first = ranking["neurons"][0]
    other = json.loads((run / "ranking.json").read_text())["neurons"][-1]
    assert other not in ranking["neurons"]
    edit(run / "critical.json", lambda d: d["neurons"].__setitem__(0, other))
    edit(run / "fingerprints.json", lambda d: d["neurons"].__setitem__(other, d["neurons"].pop(first)))
    assert_every_reader_refuses(run, capsys)


def test_fingerprints_of_other_neurons_are_refused(two_runs, run, capsys):
    shutil.copy(two_runs[3] / "fingerprints.json", run / "fingerprints.json")
    assert_every_reader_refuses(run, capsys)


def test_a_critical_set_made_from_another_ranking_is_refused(run, capsys):
    edit(run / "critical.json", lambda d: d["settings"].__setitem__("seed", 7))
    assert_every_reader_refuses(run, capsys)


@pytest.mark.slow
def test_a_result_of_another_text_in_the_folder_is_refused(two_runs, run, tmp_path, capsys):
    other = scan_tiny(two_runs[0], tmp_path / "other-text", text=TEXT + " And a second sentence, longer.")
    assert main(["minimal", "--run", str(other), "--pool", "3", "--max-size", "1", "--quiet"]) == 0
    minimal = next(other.glob("minimal-eps*.json"))
    shutil.copy(minimal, run / minimal.name)
    assert_every_reader_refuses(run, capsys)


def test_results_that_choose_their_own_texts_belong_to_the_run(run):
    """compare and robustness run on texts of their own; only other weights make them foreign."""
    fingerprint = json.loads((run / "ranking.json").read_text())["settings"]["model_fingerprint"]
    (run / "compare.json").write_text(json.dumps({"settings": {"model_fingerprint": fingerprint,
                                                               "text_sha256": "another text"}}))
    (run / "analysis-robustness.json").write_text(json.dumps({"settings": {"model_fingerprint": fingerprint,
                                                                           "text_sha256": {"news": "its hash"}}}))
    RunFolder(run).check()
    (run / "compare.json").write_text(json.dumps({"settings": {"model_fingerprint": "other weights"}}))
    with pytest.raises(InconsistentRun):
        RunFolder(run).check()


def _trajectory_point_added(data):
    data["trajectory"].insert(0, {"n": 1, "ppl": 1e30, "delta": 99.0})


@pytest.mark.parametrize("name, change", [
    ("n-a-boolean", lambda d: d.update(n=True)),
    ("negative-count", lambda d: d.update(forward_rows=-5)),
    ("another-models-name", lambda d: d.update(model="gemma3-270m")),
    ("a-second-point-at-n", _trajectory_point_added),
    ("a-point-whose-delta-its-ppl-denies", lambda d: d["trajectory"][0].update(delta=d["trajectory"][0]["delta"] + 1)),
])
def test_an_edited_critical_set_is_refused_by_the_report(run, capsys, name, change):
    """Contradictions a reader can see without the model: each is refused, nothing is written."""
    from lesion.errors import ResultError
    from lesion.results import CriticalSet
    edit(run / "critical.json", change)
    with pytest.raises(ResultError):
        CriticalSet.load(run / "critical.json")
    before = sorted(p.name for p in run.iterdir())
    assert main(["report", str(run), "--quiet"]) == 2
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_key_given_twice_or_a_damaged_run_record_is_refused(run, capsys):
    from lesion.errors import ResultError
    from lesion.runtime.files import read_json
    text = (run / "critical.json").read_text()
    (run / "critical.json").write_text(text[:text.rindex("}")] + ', "delta": 0.5}')
    with pytest.raises(ResultError):
        read_json(run / "critical.json")
    (run / "critical.json").write_text(text)
    assert main(["report", str(run), "--quiet"]) == 0
    (run / "run.json").write_text("garbage")
    assert main(["report", str(run), "--quiet"]) == 2
