"""What users expect of a package: a version that names its commit, lm-eval task names that
resolve, a wheel that runs without the checkout (the last is .ci/run's job: it needs a venv)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import lesion
from lesion.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_names_the_commit_of_a_checkout(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    found = re.fullmatch(rf"lesion {re.escape(lesion.__version__)} \(git ([0-9a-f]{{12}})(-dirty)?\)", line)
    assert found and commit.startswith(found.group(1))


def test_version_outside_a_checkout_is_the_version_alone(tmp_path, monkeypatch):
    import lesion.cli as cli

    fake = tmp_path / "site-packages" / "lesion" / "cli" / "__init__.py"  # as installed from a wheel
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(cli, "__file__", str(fake))
    assert cli._version() == f"lesion {lesion.__version__}"


def test_lm_eval_registry_knows_every_paper_task_the_readme_lists(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    from lesion.evaluation.tasks import PAPER_TASKS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in PAPER_TASKS.values())
    known = set(TaskManager().all_tasks)  # reads lm-eval's task YAML files; no network
    assert sorted(set(PAPER_TASKS.values()) - known) == []
    assert "no_such_task_lesion" not in known
