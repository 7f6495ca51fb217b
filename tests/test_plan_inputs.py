"""`lesion plan` on hostile input (issue 28): no code shipped with a model runs, every config field
and every option is checked in the library (a ParameterError naming it; exit 2 and one line in
the CLI), and nothing is written."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from lesion.cli import main
from lesion.errors import ConfigError, LesionError, ParameterError
from lesion.plan.config import read_config
from lesion.plan.estimate import check_options, make_plan, plan_study
from lesion.plan.shapes import shapes

SMOL = {"model_type": "llama", "vocab_size": 128, "hidden_size": 576, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 8192, "tie_word_embeddings": True}
MOE = {"model_type": "deepseek_v3", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
       "moe_intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
       "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1,
       "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 8}


def folder_with(tmp_path, content, name="model"):
    folder = tmp_path / name
    folder.mkdir()
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / "config.json").write_text(text)
    return folder


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- code shipped with a model ------------------------------------------------------------------

def evil_folder(tmp_path, model_type):
    marker = tmp_path / "ran"
    folder = folder_with(tmp_path, {**SMOL, "model_type": model_type,
                                    "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                 "AutoModelForCausalLM": "evil.EvilModel"}}, f"evil-{model_type}")
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        f"class EvilConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    return folder, marker


def test_a_folder_whose_config_names_code_is_refused_with_y_on_stdin(tmp_path):
    folder, marker = evil_folder(tmp_path, "evil_llama")
    before = listing(tmp_path)
    # A real process with `y` waiting on stdin: transformers' prompt would read it and run evil.py.
    done = subprocess.run([sys.executable, "-m", "lesion", "plan", "--model", str(folder)], input="y\n",
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LESION_NO_PROGRESS": "1"})
    assert not marker.exists()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "evil.py" in lines[0] and "Traceback" not in done.stderr
    assert listing(tmp_path) == before


@pytest.mark.parametrize("model_type", ["llama", "evil_llama"])
def test_auto_map_is_refused_in_the_library_whatever_the_type(tmp_path, model_type):
    folder, marker = evil_folder(tmp_path, model_type)
    with pytest.raises(LesionError, match="evil.py"):
        read_config(model=str(folder))
    with pytest.raises(LesionError, match="evil.py"):
        read_config(config=str(folder / "config.json"))
    assert not marker.exists()


# --- the config file as a whole -----------------------------------------------------------------

@pytest.mark.parametrize("content", ["[1, 2]", '"llama"', "null", "[" * 100_000 + "]" * 100_000,
                                     '{"model_type": "llama", ', "\xff\xfe"])
def test_a_config_that_is_not_a_json_object_is_refused(tmp_path, content):
    folder = folder_with(tmp_path, content)
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder))
    assert e.value.parameter == "model" and e.value.field is None
    with pytest.raises(ConfigError) as e:
        read_config(config=str(folder / "config.json"))
    assert e.value.parameter == "config"


def test_nesting_beyond_the_limit_is_refused_without_recursion(tmp_path):
    nested: dict = {}
    inner = nested
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, {**SMOL, "rope_scaling": nested})))
    assert e.value.field.startswith("rope_scaling.a.a")


def test_a_folder_without_a_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError) as e:
        read_config(model=str(tmp_path / "empty"))
    assert e.value.parameter == "model"


# --- fields -------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("hidden_size", 0), ("hidden_size", -576), ("hidden_size", "576"), ("hidden_size", None), ("hidden_size", 576.0),
    ("hidden_size", True), ("intermediate_size", 1.5), ("num_hidden_layers", -3), ("num_hidden_layers", 10 ** 9),
    ("vocab_size", 1e15), ("vocab_size", 10 ** 15), ("num_key_value_heads", 0), ("num_attention_heads", 0),
    ("head_dim", "64"), ("max_position_embeddings", 0),
])
def test_a_bad_size_is_refused_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, {**SMOL, field: value})))
    assert e.value.parameter == "model" and e.value.field == field


@pytest.mark.parametrize("field", ["hidden_size", "rms_norm_eps", "rope_theta"])
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_anywhere(tmp_path, field, constant):
    text = json.dumps({k: v for k, v in SMOL.items() if k != field})[:-1] + f', "{field}": {constant}}}'
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, text)))
    assert e.value.field == field


@pytest.mark.parametrize("fields, field", [
    ({"num_attention_heads": 7}, "num_attention_heads"),  # 576 / 7
    ({"num_key_value_heads": 4}, "num_key_value_heads"),  # 9 heads
    ({"num_key_value_heads": 18}, "num_key_value_heads"),
])
def test_heads_must_divide(tmp_path, fields, field):
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, {**SMOL, **fields})))
    assert e.value.field == field


def test_head_dim_given_lifts_the_width_divisibility(tmp_path):
    # Qwen3 and Mistral project to heads x head_dim, whatever the width (Llama's config refuses it)
    name, config = read_config(model=str(folder_with(tmp_path, {**SMOL, "model_type": "qwen3",
                                                               "num_attention_heads": 7, "num_key_value_heads": 7,
                                                               "head_dim": 64})))
    assert shapes(name, config).neurons["q"] == 2 * 7 * 64


@pytest.mark.parametrize("fields, field", [
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ({"num_experts_per_tok": 0}, "num_experts_per_tok"),
    ({"n_routed_experts": 0}, "n_routed_experts"),
    ({"first_k_dense_replace": 3}, "first_k_dense_replace"),
    ({"first_k_dense_replace": -1}, "first_k_dense_replace"),
    ({"n_group": 3}, "n_group"),
    ({"topk_group": 3}, "topk_group"),
    ({"n_routed_experts": 4096, "num_hidden_layers": 1000}, "n_routed_experts"),  # 4 million expert modules
])
def test_expert_fields_are_checked(tmp_path, fields, field):
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, {**MOE, **fields})))
    assert e.value.field == field


@pytest.mark.parametrize("fields, field", [
    ({"decoder_sparse_step": 0}, "decoder_sparse_step"),
    ({"mlp_only_layers": [5]}, "mlp_only_layers"),
    ({"text_config": [1]}, "text_config"),
])
def test_qwen_moe_fields_are_checked(tmp_path, fields, field):
    config = {**SMOL, "model_type": "qwen2_moe", "num_experts": 4, "num_experts_per_tok": 2, **fields}
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, config)))
    assert e.value.field == field


def test_what_transformers_refuses_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        read_config(model=str(folder_with(tmp_path, {**SMOL, "model_type": "no_such_family"})))
    assert e.value.parameter == "model"


# --- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [
    ("gpu_tflops", -5.0), ("gpu_tflops", 0.0), ("gpu_tflops", math.nan), ("gpu_tflops", math.inf),
    ("ranks", -2), ("ranks", 0), ("ranks", 1.5),
    ("gpu_memory", math.nan), ("gpu_memory", math.inf), ("gpu_memory", 0.0), ("gpu_memory", -80.0),
    ("tokens", 0), ("tokens", 10 ** 12), ("tokens", 1e12), ("samples", 0), ("samples", "many"),
    ("samples", 10 ** 6), ("gpus", -1), ("gpus", 10 ** 7), ("stage2_rows", -1), ("search_rows", -1),
    ("dtype", "int8"),
])
def test_a_bad_option_is_refused_naming_it(option, value):
    options = {option: value, **({"gpus": 1} if option in ("gpu_tflops", "gpu_memory", "ranks") else {})}
    with pytest.raises(ParameterError) as e:
        check_options(**options)
    assert e.value.parameter == option


@pytest.fixture
def smol_shapes(tmp_path):
    return shapes(*read_config(model=str(folder_with(tmp_path, SMOL))))


def test_a_text_longer_than_the_context_is_refused(smol_shapes):
    with pytest.raises(ParameterError) as e:
        make_plan(smol_shapes, tokens=8193)
    assert e.value.parameter == "tokens"
    assert make_plan(smol_shapes, tokens=8192)["tokens"] == 8192


def test_gpu_tflops_zero_is_not_the_default_and_needs_gpus(smol_shapes):
    with pytest.raises(ParameterError):
        make_plan(smol_shapes, gpus=1, gpu_tflops=0.0)
    with pytest.raises(ParameterError) as e:
        make_plan(smol_shapes, gpu_tflops=100.0)
    assert e.value.parameter == "gpu_tflops"
    plan = make_plan(smol_shapes, gpus=1, gpu_memory=1.0, gpu_tflops=100.0)
    assert plan["time_s"]["gpu_assumed"]["stage1"] == pytest.approx(plan["flops"]["stage1"] / 100e12)


def test_a_million_gpus_are_answered_at_once(smol_shapes):
    start = time.monotonic()
    plan = make_plan(smol_shapes, gpus=1_000_000, gpu_memory=1.0)
    assert time.monotonic() - start < 10
    assert plan["device_map"]["used_gpus"] == 1 and plan["data_parallel_ranks"] == 1_000_000
    assert plan["time_s"]["rows"]["ranks"] == 1_000_000


@pytest.mark.parametrize("option, value", [("ranks", 1000), ("gpu_memory", 80.0), ("gpu_tflops", 100.0)])
def test_gpu_options_without_gpus_are_refused(smol_shapes, option, value):
    """Without GPUs the plan is for this CPU: 1000 ranks on its two cores would divide its times by 1000."""
    with pytest.raises(ParameterError) as e:
        make_plan(smol_shapes, **{option: value})
    assert e.value.parameter == option


def test_gpus_that_hold_no_copy_get_no_gpu_time_and_no_ranks(smol_shapes):
    plan = make_plan(smol_shapes, gpus=1, gpu_memory=1e-4)
    assert plan["data_parallel_ranks"] == 0 and "gpu_assumed" not in plan["time_s"]
    assert plan["time_s"]["cpu_this_machine"]["stage1"] > 0
    with pytest.raises(ParameterError) as e:
        make_plan(smol_shapes, gpus=1, gpu_memory=1e-4, ranks=4)
    assert e.value.parameter == "ranks"


def test_more_ranks_than_the_gpus_hold_are_refused(smol_shapes):
    with pytest.raises(ParameterError) as e:
        make_plan(smol_shapes, gpus=2, gpu_memory=1.0, ranks=3)
    assert e.value.parameter == "ranks"
    assert make_plan(smol_shapes, gpus=2, gpu_memory=1.0, ranks=2)["time_s"]["rows"]["ranks"] == 2


def test_model_and_config_together_are_refused(tmp_path):
    folder = folder_with(tmp_path, SMOL)
    with pytest.raises(ParameterError) as e:
        plan_study(str(folder), str(folder / "config.json"))
    assert e.value.parameter == "config"


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, flag", [
    (["--gpu-tflops", "-5", "--gpus", "1"], "--gpu-tflops"),
    (["--gpu-tflops", "0", "--gpus", "1"], "--gpu-tflops"),
    (["--ranks", "-2"], "--ranks"),
    (["--ranks", "1000"], "--ranks"),
    (["--gpu-memory", "80"], "--gpu-memory"),
    (["--gpu-memory", "nan", "--gpus", "1"], "--gpu-memory"),
    (["--gpu-memory", "inf", "--gpus", "1"], "--gpu-memory"),
    (["--tokens", "1000000000000"], "--tokens"),
    (["--tokens", "8193"], "--tokens"),
    (["--samples", "many"], "--samples"),
    (["--gpus", "10000000"], "--gpus"),
])
def test_the_cli_names_the_flag_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, flag):
    folder = folder_with(tmp_path, SMOL)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    assert main(["plan", "--model", str(folder), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lesion: error: {flag} ")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("content", [{**SMOL, "hidden_size": 0}, {**SMOL, "num_key_value_heads": 0}, "[1]", "null",
                                     "[" * 100_000 + "]" * 100_000, {**SMOL, "num_attention_heads": 7}])
def test_the_cli_refuses_a_bad_config_in_one_line(tmp_path, capsys, content):
    folder = folder_with(tmp_path, content)
    assert main(["plan", "--model", str(folder)]) == 2
    assert main(["plan", "--config", str(folder / "config.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("lesion: error: --model ") and err[1].startswith(
        "lesion: error: --config ")


def test_a_hub_id_missing_offline_is_one_parameter_error(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ParameterError) as e:
        read_config(model="no-such-org/no-such-model")
    assert e.value.parameter == "model"
