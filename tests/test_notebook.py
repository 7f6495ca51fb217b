"""Results render in a notebook: ``_repr_html_`` gives a table of neurons and a figure."""
from __future__ import annotations

import base64
import dataclasses
import io
import re

import pytest
from PIL import Image

from lesion.cli import main
from lesion.results import CriticalSet, Ranking


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["scan", "--model", tiny_dir, "--text", "Every morning the baker opened the shop early.",
                 "--samples", "4", "--epsilon", "0.001", "--quiet", "--out", str(out)]) == 0
    return out


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
