"""`lesion plan`: counts from the meta model equal those of the real model; memory and time
follow the stated formulas; the device map places a 70B-class model; bad input is one line."""
from __future__ import annotations

import json

import pytest
from conftest import COMMON, FAMILIES, make_tiny, make_tiny_moe
from conftest import MOE_FAMILIES as TINY_MOE

from lesion.cli import main
from lesion.model.neurons import discover_sites
from lesion.plan import estimate
from lesion.plan.estimate import CALIBRATION, make_plan
from lesion.plan.config import read_config
from lesion.plan.shapes import shapes

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
    assert s.parameters == s.active_parameters == sum(p.numel() for p in real.parameters())
    assert s.moe is None
    assert s.head_parameters == COMMON["vocab_size"] * FAMILIES["llama"]["hidden_size"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("components", [None, "all", "mlp"])
def test_neurons_counted_from_shapes_are_the_sites_scan_ranks(family, components):
    """No forward runs in a plan: its neurons, counted from module shapes, are exactly the
    sites discover_sites finds by probing the real model."""
    real = make_tiny(family)
    by_kind: dict[str, int] = {}
    for site in discover_sites(real, components).sites:
        by_kind[site.kind] = by_kind.get(site.kind, 0) + site.width
    s = shapes(family, real.config, components)
    assert s.neurons == by_kind
    assert s.parameters == sum(p.numel() for p in real.parameters())


def test_memory_and_time_follow_the_formulas(tiny_config):
    s = shapes(*read_config(config=str(tiny_config)))
    n = sum(s.neurons.values())
    plan = make_plan(s, tokens=10, samples=50, stage2_rows=7, search_rows=0)
    assert plan["neurons"]["total"] == n
    assert plan["memory_gib"]["weights"]["bfloat16"] == round(s.parameters * 2 / 2 ** 30, 2)
    assert plan["memory_gib"]["stage1_state"] == round(3 * 10 * n * 4 / 2 ** 30, 3)
    adaptive = make_plan(s, tokens=10, samples="auto")
    assert adaptive["memory_gib"]["stage1_state"] == round(5 * 10 * n * 4 / 2 ** 30, 3)
    assert plan["flops"]["stage1"] == 2 * s.body_parameters * 10 * 50
    cpu = plan["time_s"]["cpu_this_machine"]
    assert cpu["stage1"] == pytest.approx(plan["flops"]["stage1"] * CALIBRATION["stage1_s_per_flop"])
    assert cpu["stage2"] == pytest.approx(7 * plan["flops"]["masked_row"] * CALIBRATION["row_s_per_flop"])
    assert cpu["search"] == 0


def test_device_map_and_data_parallel_copies(tiny_config):
    s = shapes(*read_config(config=str(tiny_config)))
    roomy = make_plan(s, gpus=4, gpu_memory=1.0, tokens=4)
    assert roomy["device_map"]["fits"] and roomy["device_map"]["used_gpus"] == 1
    assert roomy["device_map"]["blocks"] == {"0": 2}  # the whole model on GPU 0: both blocks
    assert roomy["data_parallel_ranks"] == 4
    assert roomy["time_s"]["gpu_assumed"]["stage1"] == pytest.approx(
        roomy["flops"]["stage1"] / (200e12 * 4))
    cramped = make_plan(s, gpus=2, gpu_memory=1e-9, tokens=4)
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


# --- mixtures of experts ----------------------------------------------------------------------

MOE_BASE = dict(vocab_size=128, num_hidden_layers=3, num_attention_heads=4, hidden_size=32, intermediate_size=64,
                num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
# family -> (config fields, the experts' intermediate width); 4 routed experts, 3 layers
MOE_FAMILIES = {
    "mixtral": (dict(num_local_experts=4, num_experts_per_tok=2), 64),
    "qwen2_moe": (dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                       shared_expert_intermediate_size=48, mlp_only_layers=[0]), 16),
    "qwen3_moe": (dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, head_dim=8), 16),
    "olmoe": (dict(num_experts=4, num_experts_per_tok=2), 64),
    "gpt_oss": (dict(num_local_experts=4, num_experts_per_tok=2, head_dim=8), 64),
    "granitemoe": (dict(num_local_experts=4, num_experts_per_tok=2), 64),
    "deepseek_v3": (dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=2,
                         first_k_dense_replace=1, n_group=2, topk_group=1, q_lora_rank=16, kv_lora_rank=16,
                         qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8), 16),
    "llama4_text": (dict(num_local_experts=4, num_experts_per_tok=1, intermediate_size_mlp=48, head_dim=8,
                         interleave_moe_layer_step=2), 64),
}


def moe_config(family: str):
    from transformers import AutoConfig
    fields, _ = MOE_FAMILIES[family]
    return AutoConfig.for_model(family, **{**MOE_BASE, **fields})


@pytest.mark.parametrize("family", sorted(MOE_FAMILIES))
def test_mixture_of_experts_counts_equal_the_real_model(family, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM
    config = moe_config(family)
    torch.manual_seed(0)
    real = AutoModelForCausalLM.from_config(config)
    experts, top_k = 4, config.num_experts_per_tok
    hidden, intermediate = MOE_BASE["hidden_size"], MOE_FAMILIES[family][1]
    routed = sum(p.numel() for n, p in real.named_parameters() if ".experts." in n)
    moe_layers = len({n.split(".experts.")[0] for n, _ in real.named_parameters() if ".experts." in n})

    def no_forward(*args, **kwargs):
        raise AssertionError("a plan ran a forward")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_forward)
    s = shapes(family, config, "all")
    monkeypatch.undo()
    assert s.parameters == sum(p.numel() for p in real.parameters())  # exact
    assert s.active_parameters == s.parameters - routed * (experts - top_k) // experts
    assert s.moe["moe_layers"] == moe_layers and s.moe["dense_layers"] == 3 - moe_layers
    assert s.moe["experts"] == experts and s.moe["experts_per_token"] == top_k
    assert s.moe["parameters"]["routed_experts"] == routed
    assert s.moe["neurons"]["routed_experts"] == moe_layers * experts * (3 * intermediate + hidden)
    assert s.moe["neurons"]["router"] == moe_layers * experts
    assert s.moe["neurons"]["block_output"] == moe_layers * hidden
    assert not s.uncounted
    plan = make_plan(s, tokens=10, samples=5)
    embeddings = 2 * MOE_BASE["vocab_size"] * hidden  # untied: input embedding and LM head
    assert plan["flops"]["stage1"] == 2 * (s.active_parameters - embeddings) * 10 * 5  # active, not total
    assert plan["memory_gib"]["weights"]["float32"] == round(s.parameters * 4 / 2 ** 30, 2)  # all experts


def test_shared_experts_and_dense_layers_are_counted():
    s = shapes("deepseek", moe_config("deepseek_v3"), "all")
    # layer 0 dense (first_k_dense_replace = 1); 2 shared experts of width 16 run as one MLP of 32
    assert s.moe["dense_layers"] == 1 and s.moe["shared_experts"] == 2
    assert s.moe["neurons"]["shared_experts"] == 2 * (3 * 32 + 32)
    qwen = shapes("qwen2_moe", moe_config("qwen2_moe"), "all")
    # one shared expert of width 48 and its one-channel gate, in each of the 2 MoE layers
    assert qwen.moe["shared_experts"] == 1 and qwen.moe["neurons"]["shared_experts"] == 2 * (3 * 48 + 32 + 1)
    attention_only = shapes("qwen2_moe", moe_config("qwen2_moe"), "attn")
    assert attention_only.moe["neurons"]["routed_experts"] == 0 and set(attention_only.neurons) <= {"q", "k", "v", "o"}


def test_a_random_weight_mixtral_folder_is_planned_without_a_forward(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM
    config = moe_config("mixtral")
    config.dtype = "bfloat16"
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(tmp_path / "mixtral")
    assert main(["plan", "--model", str(tmp_path / "mixtral"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["moe"]["experts"] == 4 and plan["active_parameters"] < plan["parameters"]


@pytest.mark.parametrize("path, total, active", [
    ("tests/data/configs/mixtral-8x7b.json", 46.7e9, 12.9e9),  # Mistral's published 46.7B, 12.9B active
    ("tests/data/configs/qwen3-30b-a3b.json", 30.5e9, 3.3e9),  # Qwen's published 30.5B, 3.3B activated
    ("tests/data/configs/deepseek-v3.json", 671e9, 37e9),  # DeepSeek's published 671B, 37B activated
])
def test_published_mixtures_of_experts(path, total, active):
    s = shapes(*read_config(config=path))
    assert s.parameters == pytest.approx(total, rel=0.005)
    assert s.active_parameters == pytest.approx(active, rel=0.02)


@pytest.mark.parametrize("path, total", [
    ("tests/data/configs/qwen2.5-7b.json", 7.61e9),  # Qwen's published 7.61B
    ("tests/data/configs/llama-3.1-8b.json", 8.03e9),  # Meta's published 8.03B
])
def test_published_dense_models_of_the_gpu_scale_benchmark(path, total):
    """benchmarks/gpu_scale.py builds these configs with random weights: their shapes are the published ones."""
    s = shapes(*read_config(config=path))
    assert s.parameters == pytest.approx(total, rel=0.005) and s.moe is None


@pytest.mark.parametrize("family", sorted(TINY_MOE))
@pytest.mark.parametrize("components", [None, "all", "expert"])
def test_moe_neurons_counted_from_shapes_are_the_sites_scan_ranks(family, components):
    """The same on mixtures of experts: each expert's gate/up/act/down, routers, block outputs, units."""
    real = make_tiny_moe(family)
    s = shapes(family, real.config, components)
    by_kind: dict[str, int] = {}
    for site in discover_sites(real, components).sites:
        by_kind[site.kind] = by_kind.get(site.kind, 0) + site.width
    assert s.neurons == by_kind
    assert s.parameters == sum(p.numel() for p in real.parameters())


@pytest.mark.parametrize("dtype, fits", [("float32", False), ("bfloat16", True)])
def test_the_plan_says_whether_the_model_fits_this_machine(dtype, fits, monkeypatch, capsys):
    # a 24 GB machine with 22 GiB available: Llama-3.1-8B's 29.9 GiB of float32 weights do not fit, 15 in bfloat16 do
    monkeypatch.setattr(estimate, "host_memory_gib", lambda: (23.5, 22.0))
    config = "tests/data/configs/llama-3.1-8b.json"
    assert main(["plan", "--config", config, "--dtype", dtype, "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["cpu_fit"]
    assert fit["fits"] is fits and fit["available_gib"] == 22.0 and fit["dtype"] == dtype
    assert fit["needs_gib"]["float32"] > 22.0 > fit["needs_gib"]["bfloat16"]
    assert (fit["advice"] == "dtype bfloat16") is not fits
    assert main(["plan", "--config", config, "--dtype", dtype]) == 0
    assert ("does not fit" in capsys.readouterr().out) is not fits


def test_a_model_no_dtype_fits_is_told_disk_offload_or_gpus(monkeypatch):
    monkeypatch.setattr(estimate, "host_memory_gib", lambda: (23.5, 22.0))
    fit = estimate.cpu_fit({"float32": 262.8, "bfloat16": 131.4, "float16": 131.4}, 1.0, "bfloat16")
    assert not fit["fits"] and "device_map auto" in fit["advice"] and "2 GPU(s)" in fit["advice"]
