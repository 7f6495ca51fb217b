"""Results render in a notebook: ``_repr_html_`` gives a table of neurons and a figure."""
from __future__ import annotations

import base64
import dataclasses
import importlib
import io
import json
import re
from pathlib import Path

from PIL import Image

import lesion.report.notebook  # noqa: F401  (registers the views, as `import lesion` does in IPython)
from lesion.results import CriticalSet, Ranking


def images(page: str) -> dict:
    return {name: Image.open(io.BytesIO(base64.b64decode(data)))
            for name, data in re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([^"]+)"', page)}


def test_ranking_renders_its_top_neurons_and_scores(run_dir):
    ranking = Ranking.load(run_dir / "ranking.json")
    page = ranking._repr_html_()
    assert page.count("<tr>") == 1 + 20  # header and the first 20
    assert all(str(n) in page for n in ranking.neurons[:20]) and str(ranking.neurons[20]) not in page
    assert set(images(page)) == {"scores"} and images(page)["scores"].format == "PNG"
    without_positions = dataclasses.replace(ranking, positions=None)
    assert without_positions._repr_html_().count("<tr>") == 21


def test_critical_set_renders_verdict_neurons_and_trajectory(run_dir):
    critical = CriticalSet.load(run_dir / "critical.json")
    page = critical._repr_html_()
    assert f"{len(critical.neurons)} neuron(s) reach Delta" in page
    assert str(critical.neurons[0]) in page and "<table>" in page
    assert set(images(page)) == {"trajectory"}


# The tutorial notebook itself is executed by CI (`pytest --nbmake notebooks/`, on the real model);
# these checks are the fast part: it parses, and every name it takes from lesion still exists.
TUTORIAL = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"


def tutorial_code() -> list[str]:
    cells = json.loads(TUTORIAL.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def test_tutorial_compiles_and_is_committed_without_outputs():
    cells = json.loads(TUTORIAL.read_text(encoding="utf-8"))["cells"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code")
    for source in tutorial_code():
        compile(source, str(TUTORIAL), "exec")


def test_tutorial_imports_only_names_lesion_exports():
    imported = {(m.group(1), name.strip()) for source in tutorial_code()
                for m in re.finditer(r"^from (lesion[\w.]*) import (.+)$", source, re.M)
                for name in m.group(2).split(",")}
    assert ("lesion", "search_heel") in imported and ("lesion", "Study") in imported
    for module, name in imported:
        exported = importlib.import_module(module)
        assert name in getattr(exported, "__all__", dir(exported)), f"{module}.{name}"
        assert getattr(exported, name) is not None


README = TUTORIAL.parents[1] / "README.md"


def test_readme_example_imports_exported_names_and_links_stay_in_the_repository():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024
    names = {n.strip() for m in re.finditer(r"^from lesion import (.+)$", text, re.M) for n in m.group(1).split(",")}
    assert {"load_model", "Study", "search_heel"} <= names <= set(importlib.import_module("lesion").__all__)
    for target in re.findall(r"\]\(([^)#]+)[^)]*\)", text):
        assert not target.startswith(("http", "..")) and (README.parent / target).exists(), target
