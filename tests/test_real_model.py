"""End to end on the real offline default model, SmolLM2-135M-Instruct."""
import json
import re

import pytest

from lesion.cli import main


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scan")
    assert main(["scan", "--quiet", "--no-cache", "--out", str(out)]) == 0
    return out


@pytest.mark.real
def test_scan_finds_the_known_critical_neuron_on_its_own(scan_dir):
    critical = json.loads((scan_dir / "critical.json").read_text())
    assert critical["neurons"] == ["model.layers.11.mlp.down_proj:507"]
    assert critical["reached"] and critical["delta"] >= 1
    assert 70 < critical["baseline_ppl"] < 100 and critical["masked_ppl"] > 1e6
    assert critical["settings"]["tokens"] > 10 and critical["settings"]["alpha"] == 5.0


@pytest.mark.real
def test_ranking_top_is_position_zero_down_proj(scan_dir):
    ranking = json.loads((scan_dir / "ranking.json").read_text())
    assert ranking["total_neurons"] == 201600
    assert ranking["neurons"][0] == "model.layers.11.mlp.down_proj:507"
    assert all(".mlp.down_proj:" in n for n in ranking["neurons"][:3])
    assert ranking["positions"][:3] == [0, 0, 0]


@pytest.mark.real
def test_mask_command_reproduces_the_collapse(capsys):
    assert main(["mask", "model.layers.11.mlp.down_proj:507"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"49 tok, PPL 8[45]\.\d", out)  # the unmasked perplexity of the default text
    assert re.search(r"the set\s*│\s*5\.\d+e\+06\s*│\s*4\.8\d", out)
