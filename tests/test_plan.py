"""`lesion plan`: counts from the meta model equal those of the real model; memory and time
follow the stated formulas; the device map places a 70B-class model; bad input is one line."""
from __future__ import annotations

import json

import pytest
from conftest import COMMON, FAMILIES, make_tiny

from lesion.cli import main
from lesion.neurons import discover_sites
from lesion.plan import CALIBRATION, make_plan, read_config, shapes

LLAMA_70B = "tests/data/configs/llama-3.1-70b.json"
QWEN_72B = "tests/data/configs/qwen2.5-72b.json"


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "_note": "keys starting with _ are comments",
                                **COMMON, **FAMILIES["llama"]}))
    return path


def test_meta_counts_equal_the_real_model(tiny_config):
    name, config = read_config(config=str(tiny_config))
    s = shapes(name, config)
    real = make_tiny("llama")
    assert s.parameters == sum(p.numel() for p in real.parameters())
    by_kind: dict[str, int] = {}
    for site in discover_sites(real).sites:
        by_kind[site.kind] = by_kind.get(site.kind, 0) + site.width
    assert s.neurons == by_kind
    assert s.head_parameters == COMMON["vocab_size"] * FAMILIES["llama"]["hidden_size"]


def test_memory_and_time_follow_the_formulas(tiny_config):
    s = shapes(*read_config(config=str(tiny_config)))
    n = sum(s.neurons.values())
    plan = make_plan(s, tokens=10, samples=50, stage2_rows=7, search_rows=0)
    assert plan["neurons"]["total"] == n
    assert plan["memory_gib"]["weights"]["bfloat16"] == round(s.parameters * 2 / 2 ** 30, 2)
    assert plan["memory_gib"]["stage1_state"] == round(3 * 10 * n * 4 / 2 ** 30, 3)
    adaptive = make_plan(s, tokens=10, samples=50, adaptive=True)
    assert adaptive["memory_gib"]["stage1_state"] == round(5 * 10 * n * 4 / 2 ** 30, 3)
    assert plan["flops"]["stage1"] == 2 * s.body_parameters * 10 * 50
    cpu = plan["time_s"]["cpu_this_machine"]
    assert cpu["stage1"] == pytest.approx(plan["flops"]["stage1"] * CALIBRATION["stage1_s_per_flop"])
    assert cpu["stage2"] == pytest.approx(7 * plan["flops"]["masked_row"] * CALIBRATION["row_s_per_flop"])
    assert cpu["search"] == 0


def test_device_map_and_data_parallel_copies(tiny_config):
    s = shapes(*read_config(config=str(tiny_config)))
    roomy = make_plan(s, gpus=4, gpu_gib=1.0, tokens=4)
    assert roomy["device_map"]["fits"] and roomy["device_map"]["used_gpus"] == 1
    assert roomy["data_parallel_ranks"] == 4
    assert roomy["time_s"]["gpu_assumed"]["stage1"] == pytest.approx(
        roomy["flops"]["stage1"] / (200e12 * 4))
    cramped = make_plan(s, gpus=2, gpu_gib=1e-9, tokens=4)
    assert not cramped["device_map"]["fits"] and cramped["data_parallel_ranks"] == 0


def test_seventy_b_plan_from_the_published_config(capsys):
    assert main(["plan", "--config", LLAMA_70B, "--gpus", "8", "--gpu-memory", "80", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] == 70_553_706_496  # Llama-3.1-70B's published count
    # per layer: gate, up, act (28672 each); q, o, down (8192 each); k, v (1024 each)
    assert plan["neurons"]["total"] == 80 * (3 * 28672 + 3 * 8192 + 2 * 1024)
    assert plan["memory_gib"]["weights"]["bfloat16"] == pytest.approx(131.4, abs=0.1)
    dm = plan["device_map"]
    assert dm["fits"] and dm["used_gpus"] == 2 and sum(dm["blocks"].values()) == 80
    assert plan["data_parallel_ranks"] == 4


def test_qwen_72b_plan_from_the_published_config(capsys):
    assert main(["plan", "--config", QWEN_72B, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert round(plan["parameters"] / 1e9, 1) == 72.7  # Qwen2.5-72B's published size
    assert plan["neurons"]["total"] == 80 * (3 * 29568 + 3 * 8192 + 2 * 1024)
    assert "device_map" not in plan and plan["time_s"]["rows"]["ranks"] == 1


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["plan", "--config", str(tmp_path / "missing.json")]) == 2
    assert main(["plan", "--config", LLAMA_70B, "--samples", "many"]) == 2
    (tmp_path / "bad.json").write_text("{\"hidden_size\": 8}")
    assert main(["plan", "--config", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("lesion: error:") for line in err)
