"""Outputs checked before work, lesion deleting only what it wrote, and Ctrl-C stopping any
command with exit 130 (issue 28): harden, eval, mechanism and the shared checks in lesion.runtime.files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import TEXT, scan_tiny
from lesion.cli import main
from lesion.errors import ParameterError
from lesion.runtime.files import check_output_folder, remove_own_orphans, temp_prefix

UNWRITABLE = "/proc/lesion-test/hardened"  # root ignores permission bits; /proc refuses every new file
DEAD_PID = 999_999_999  # above any pid_max: no such process


@pytest.fixture
def no_load(monkeypatch):
    """Fails the test if a model is loaded: the refusal must come first."""
    import lesion.model.loading

    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded before the output path was checked")
    monkeypatch.setattr(lesion.model.loading, "load_model", refuse)


def harden(*argv) -> int:
    return main(["harden", "--quiet", *map(str, argv)])


@pytest.mark.parametrize("where", ["unwritable", "dangling", "file", "through-file"])
def test_harden_refuses_an_output_it_cannot_write_before_loading(tmp_path, capsys, no_load, where):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    out = {"unwritable": UNWRITABLE, "dangling": tmp_path / "dangling", "file": tmp_path / "file",
           "through-file": tmp_path / "file" / "sub"}[where]
    assert harden("--out", out) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "file").read_text() == "x"


def test_harden_budget_caps_are_refused_at_once(tmp_path, no_load):
    from lesion import harden_model
    assert harden("--report", "--samples", "1000000000", "--out", tmp_path / "a") == 2
    assert harden("--report", "--max-rows", str(10**12), "--out", tmp_path / "a") == 2
    assert harden("--report", "--max-rows", "1e12", "--out", tmp_path / "a") == 2
    for name, value in (("samples", 10**9), ("max_rows", 10**12), ("max_neurons", 0), ("seed", -1)):
        with pytest.raises(ParameterError) as e:
            harden_model("smollm2-135m", tmp_path / "a", report=True, **{name: value})
        assert e.value.parameter == name
    with pytest.raises(ParameterError) as e:
        harden_model("smollm2-135m", UNWRITABLE)
    assert e.value.parameter == "out"
    for name, value in (("samples", 5), ("max_rows", 5), ("max_neurons", 5)):  # the report's budget, no report
        with pytest.raises(ParameterError) as e:
            harden_model("smollm2-135m", tmp_path / "a", **{name: value})
        assert e.value.parameter == name
    assert harden("--samples", "5", "--out", tmp_path / "a") == 2
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_harden_replaces_only_a_folder_holding_nothing_but_what_it_wrote(tiny_dir, tmp_path, capsys):
    """The user's files survive: beside the output (an orphan sweep by name and age took
    .t9.cfg and .t9.important/), inside a folder that looks like a hardening, and in the
    target of a symbolic link, which stays a link."""
    out, target = tmp_path / "t9", tmp_path / "real"
    (tmp_path / ".t9.cfg").write_text("mine")
    (tmp_path / ".t9.important").mkdir()
    (tmp_path / ".t9.important" / "notes").write_text("mine")
    orphan = tmp_path / f".t9.lesion-{DEAD_PID}-tmp"  # a killed harden's half folder
    orphan.mkdir()
    for path in (tmp_path / ".t9.cfg", tmp_path / ".t9.important", orphan):
        os.utime(path, (0, 0))  # from 1970: "old" by any age rule
    assert harden("--model", tiny_dir, "--out", out) == 0
    assert (out / "lesion-harden.json").is_file() and (out / "lesion-files.json").is_file()
    assert (tmp_path / ".t9.cfg").read_text() == "mine" and (tmp_path / ".t9.important" / "notes").is_file()
    assert not orphan.exists()

    (out / "my-notes.txt").write_text("mine")  # the folder now holds a file lesion did not write
    assert harden("--model", tiny_dir, "--out", out) == 2
    assert capsys.readouterr().err.count("\n") == 1 and (out / "my-notes.txt").read_text() == "mine"
    (out / "my-notes.txt").unlink()
    (out / "harden.md").write_text("edited by the user")  # a file lesion wrote, changed since
    assert harden("--model", tiny_dir, "--out", out) == 2
    assert (out / "harden.md").read_text() == "edited by the user"

    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert harden("--model", tiny_dir, "--out", link) == 0
    assert harden("--model", tiny_dir, "--out", link) == 0  # and replaces its own folder through the link
    assert link.is_symlink() and (target / "lesion-harden.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".link") or p.name.startswith(".real")) == []


def test_orphan_sweep_takes_only_lesion_marked_names_of_dead_processes(tmp_path):
    mine = [tmp_path / f".out.lesion-{DEAD_PID}-tmp", tmp_path / f".out.lesion-{DEAD_PID}-x1.tmp"]
    alive = tmp_path / f"{temp_prefix('out')}tmp"  # this process: still writing
    users = [tmp_path / ".out.cfg", tmp_path / ".out.tmp123", tmp_path / ".out.lesion.txt", tmp_path / "out"]
    mine[0].mkdir()
    for path in [mine[1], alive, *users]:
        path.write_text("x")
        os.utime(path, (0, 0))
    assert sorted(remove_own_orphans(tmp_path, "out")) == sorted(mine)
    assert alive.exists() and all(p.exists() for p in users)


def test_folder_check_writes_through_a_link_and_knows_free_space(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert check_output_folder(tmp_path / "link", "out") == (tmp_path / "real").resolve()
    with pytest.raises(ParameterError) as e:
        check_output_folder(tmp_path / "new", "out", needs_bytes=2**62)
    assert e.value.parameter == "out" and not (tmp_path / "new").exists()


def test_harden_report_interrupted_in_its_search_stops_with_130_and_writes_nothing(tiny_dir, tmp_path, monkeypatch,
                                                                                    capsys):
    """The search inside --report kept its best set on Ctrl-C and returned: the hardening went
    on for minutes and exited 0, reporting "none within the budget"."""
    import lesion.heel.scorer as scorer
    real, calls = scorer.set_deltas, []

    def interrupt(*args, **kwargs):  # inside the search's loop, which keeps its best set and returns
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(scorer, "set_deltas", interrupt)
    out = tmp_path / "hardened"
    assert harden("--model", tiny_dir, "--report", "--max-rows", "30", "--samples", "3", "--max-neurons", "20",
                  "--out", out) == 130
    assert "interrupted" in capsys.readouterr().err and len(calls) == 3
    assert not out.exists() and not list(tmp_path.glob(".hardened.*"))


@pytest.fixture(scope="module")
def critical(tiny_dir, tmp_path_factory):
    return str(scan_tiny(tiny_dir, tmp_path_factory.mktemp("scan")) / "critical.json")


def eval_cli(tiny_dir, critical, corpus, out) -> int:
    return main(["eval", "--model", tiny_dir, "--neurons", critical, "--corpus", str(corpus), "--window", "64",
                 "--stride", "32", "--max-tokens", "300", "--quiet", "--out", str(out)])


@pytest.mark.parametrize("finished", [0, 1])
def test_eval_interrupted_exits_130_with_what_finished_or_nothing(tiny_dir, tmp_path, monkeypatch, critical, finished):
    import lesion.evaluation.perplexity as perplexity
    real = perplexity.corpus_levels

    def interrupted(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == finished:
                raise KeyboardInterrupt
            yield result
    monkeypatch.setattr(perplexity, "corpus_levels", interrupted)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 20)
    out = tmp_path / "eval.json"
    assert eval_cli(tiny_dir, critical, corpus, out) == 130
    if finished == 0:  # stopped before any level: no eval.json with an empty table
        assert not out.exists()
    else:
        report = json.loads(out.read_text())
        assert report["stopped"] == "interrupted" and [r["level"] for r in report["perplexity"]] == [0]


def test_mechanism_interrupted_exits_130_with_what_finished(tiny_dir, tmp_path, monkeypatch, capsys):
    run = scan_tiny(tiny_dir, tmp_path / "run")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("lesion.mechanism.run.lesion_tokens", interrupt)
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    report = json.loads((run / "mechanism.json").read_text())
    assert report["stopped"] == "interrupted" and report["positions"]
    monkeypatch.setattr("lesion.mechanism.run._Probe", interrupt)  # before the first step: nothing to keep
    (run / "mechanism.json").unlink()
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run), "--quiet"]) == 130
    assert not (run / "mechanism.json").exists()


@pytest.mark.parametrize("argv", [
    ["eval", "--neurons", "{critical}", "--out", UNWRITABLE + "/eval.json"],
    ["search", "--out", UNWRITABLE + "/heel.json"],
    ["scan", "--out", UNWRITABLE],
    ["report", "{run}", "--screenshot", UNWRITABLE + "/page.png"],
])
def test_every_writing_command_checks_its_output_before_work(tiny_dir, critical, capsys, no_load, argv):
    run = str(Path(critical).parent)
    argv = [a.format(critical=critical, run=run) for a in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_search_refuses_a_journal_path_that_is_a_folder(tmp_path, no_load):
    from lesion.heel.journal import journal_path
    journal_path(tmp_path / "heel.json").mkdir()  # a traceback after the model loaded, before
    assert main(["search", "--out", str(tmp_path / "heel.json")]) == 2


@pytest.mark.parametrize("command, planted", [
    (["scan", "--out", "{folder}"], "{folder}/ranking.json"),
    (["scan", "--out", "{folder}"], "{folder}/run.json"),
    (["search", "--out", "{folder}/heel.json"], "{folder}/heel.json.sets.jsonl"),
])
def test_a_link_planted_where_lesion_names_a_file_is_refused_before_work(tmp_path, capsys, no_load, command,
                                                                          planted):
    """A run as root once replaced /etc/passwd through such a link: the file it points to stays as it was."""
    folder = tmp_path / "out"
    folder.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    Path(planted.format(folder=folder)).symlink_to(precious)
    assert main([a.format(folder=folder) for a in command] + ["--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert precious.read_text() == "keep me"


def test_library_writes_refuse_a_planted_link_and_follow_a_named_one(tmp_path):
    from lesion.runtime.files import write_text
    from lesion.results.base import save_result
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / "report.md").symlink_to(precious)
    with pytest.raises(ParameterError):
        write_text(tmp_path / "report.md", "report")  # lesion's own name in a folder
    with pytest.raises(ParameterError):
        save_result(tmp_path / "report.md", {"a": 1}, follow_link=False)
    assert precious.read_text() == "keep me"
    save_result(tmp_path / "report.md", {"a": 1})  # a path the user named: written through, the link stays
    assert (tmp_path / "report.md").is_symlink() and json.loads(precious.read_text()) == {"a": 1}


def test_harden_refuses_a_mixture_of_experts_from_its_config_before_loading(tmp_path, no_load):
    from conftest import make_tiny_moe
    from lesion import harden_model
    from lesion.errors import ModelError
    folder = tmp_path / "moe"
    make_tiny_moe("mixtral").save_pretrained(folder)
    with pytest.raises(ModelError):
        harden_model(str(folder), tmp_path / "hardened")
    assert not (tmp_path / "hardened").exists()
