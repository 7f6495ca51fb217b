"""Console tables keep neuron names whole; --json prints the result file's object on stdout."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from lesion.cli.tables import neuron_table, shared_prefix
from conftest import scan_tiny

NAMES = ["model.layers.11.mlp.down_proj:507", "model.layers.28.mlp.down_proj:507", "model.layers.3.self_attn.o_proj:12"]


@pytest.mark.parametrize("names, prefix", [
    (NAMES, "model.layers."),
    (NAMES[:1], "model.layers."),  # one name: still never into the layer number
    (["transformer.h.3.mlp.c_proj:2", "transformer.h.0.attn.c_attn:7"], "transformer.h."),
    (["model.layers.1.mlp.up_proj:3", "lm_head:4"], ""),
    ([], ""),
])
def test_shared_prefix_stops_before_the_layer_number(names, prefix):
    assert shared_prefix(names) == prefix


def render(table, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, highlight=False).print(table)
    return out.getvalue()


@pytest.mark.parametrize("width", [30, 40, 60, 80])
def test_narrow_output_keeps_the_part_that_differs(width):
    rows = [[str(i), name, "1.234e+05"] for i, name in enumerate(NAMES, 1)]
    text = render(neuron_table(["#", "neuron", "score"], rows, neuron_columns=(1,)), width)
    assert "…" not in text and all(len(line) <= width for line in text.splitlines())
    # A name that does not fit is folded onto the next lines of its cell: join the cell back up.
    column = "".join(line.split("│")[2].strip() for line in text.splitlines() if line.startswith("│"))
    assert column == "".join(name.removeprefix("model.layers.") for name in NAMES)
    assert text.count("1.234e+05") == 3
    if width >= 40:
        assert "(model.layers.*)" in text
    if width >= 60:  # room enough: each name whole on one line
        assert all(name.removeprefix("model.layers.") in text for name in NAMES)


def test_scan_json_prints_the_critical_set_file(tiny_dir, tmp_path, capsys):
    scan_tiny(tiny_dir, tmp_path, "--json")
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads((tmp_path / "critical.json").read_text())
    assert "wrote" in captured.err  # the human summary still there, on stderr
