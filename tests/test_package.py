"""What users expect of a package: a public API a notebook can tab-complete, type information in
the wheel, a version that names its commit, lm-eval task names that resolve. That the wheel runs
without the checkout is .ci/run's job (it needs a venv)."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lesion
from lesion.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_NAMES = {"load_model", "Study", "search_heel", "harden_model", "Ranking", "CriticalSet", "Heel", "LesionError"}


def test_the_notebook_verbs_and_types_are_at_the_top():
    from lesion import Heel, search_heel
    from lesion.heel import search_heel as defined
    from lesion.results import Heel as heel_type

    assert search_heel is defined and Heel is heel_type
    from lesion.harden.workflow import harden_model
    assert lesion.harden_model is harden_model and harden_model.__doc__
    assert NOTEBOOK_NAMES <= set(dir(lesion)) <= set(lesion.__all__) | {"__version__"}
    for name in lesion.__all__:
        assert getattr(lesion, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'rank_by_noise'"):
        getattr(lesion, "rank_by_noise")  # noqa: B009 -- one level down: lesion.method.rankers.rank_by_noise


@pytest.mark.slow
def test_the_wheel_ships_type_information(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, timeout=300, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("lesion-*.whl"))).namelist()
    assert "lesion/py.typed" in names
    assert "lesion/results/base.py" in names and not any(n.startswith("tests/") for n in names)


def test_version_names_the_commit_of_a_checkout(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    found = re.fullmatch(rf"lesion {re.escape(lesion.__version__)} \(git ([0-9a-f]{{12}})(-dirty)?\)", line)
    assert found and commit.startswith(found.group(1))


def test_results_record_the_commit_of_the_checkout():
    from lesion.method.provenance import git_commit
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    git_commit.cache_clear()
    assert git_commit() == commit


def test_version_outside_a_checkout_is_the_version_alone(tmp_path, monkeypatch):
    import lesion.cli as cli
    import lesion.method.provenance as provenance
    import lesion.version as version

    fake = tmp_path / "site-packages" / "lesion" / "version.py"  # as installed from a wheel
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(version, "__file__", str(fake))
    assert cli._version() == f"lesion {lesion.__version__}"
    provenance.git_commit.cache_clear()
    assert provenance.git_commit() is None
    provenance.git_commit.cache_clear()


@pytest.mark.slow
def test_lm_eval_registry_knows_every_paper_task(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    from lesion.evaluation.tasks import PAPER_TASKS

    known = set(TaskManager().all_tasks)  # reads lm-eval's task YAML files; no network
    assert sorted(set(PAPER_TASKS.values()) - known) == []
    assert "no_such_task_lesion" not in known


def test_a_parameter_error_names_the_parameter_and_the_cli_shows_its_flag():
    from lesion.cli import error_line
    from lesion.errors import ParameterError

    error = ParameterError("max_rows", "must be >= 1 (got 0)")
    assert isinstance(error, lesion.LesionError) and error.parameter == "max_rows"
    assert str(error) == "max_rows must be >= 1 (got 0)"  # what a notebook shows
    assert error_line(error) == "--max-rows must be >= 1 (got 0)"
    assert error_line(ParameterError("per_signal", "must be >= 1 (got 0)")) == "--pool must be >= 1 (got 0)"
    assert error_line(lesion.LesionError("--out is a file")) == "--out is a file"
    both = ParameterError("text_file", "cannot be given with `text`: give one of them")
    assert str(both) == "text_file cannot be given with `text`: give one of them"
    assert error_line(both) == "--text-file cannot be given with --text: give one of them"


def test_the_cli_prints_a_library_parameter_error_with_the_flag(tiny_dir, capsys):
    from lesion.model.architectures import resolve_components
    from lesion.errors import ParameterError

    with pytest.raises(ParameterError, match="^components names an unknown component 'bogus'"):
        resolve_components("down,bogus")
    assert main(["sites", "--model", tiny_dir, "--components", "down,bogus"]) == 2
    assert capsys.readouterr().err.startswith("lesion: error: --components names an unknown component 'bogus'")
