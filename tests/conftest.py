"""What the tests share: tiny random models of every family (built from configs in a fraction
of a second), a text for them, a Study on the saved tiny Llama, and a scan of it into a run folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 128
# The text the tests study: long enough for Stage 1 and Stage 2 (a token a character on the tiny models).
TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0,
              bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_key_value_heads=2),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_key_value_heads=2),
    "gemma3_text": dict(hidden_size=32, intermediate_size=64, num_key_value_heads=1, head_dim=8,
                        sliding_window=4),
    "phi3": dict(hidden_size=32, intermediate_size=64),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64),
    "opt": dict(hidden_size=32, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64),
}

# Mixture-of-experts families, 4 experts (top-2; Llama 4 routes top-1), fused 3-D experts in transformers 5.
MOE_FAMILIES = {
    "mixtral": dict(hidden_size=32, intermediate_size=16, num_key_value_heads=2, num_local_experts=4,
                    num_experts_per_tok=2),
    "qwen2_moe": dict(hidden_size=32, intermediate_size=16, moe_intermediate_size=16, num_key_value_heads=2,
                      shared_expert_intermediate_size=24, num_experts=4, num_experts_per_tok=2,
                      decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_moe": dict(hidden_size=32, intermediate_size=16, moe_intermediate_size=16, num_key_value_heads=2,
                      num_experts=4, num_experts_per_tok=2, head_dim=8, decoder_sparse_step=1, mlp_only_layers=[]),
    "olmoe": dict(hidden_size=32, intermediate_size=16, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2),
    "gpt_oss": dict(hidden_size=32, intermediate_size=16, num_key_value_heads=2, num_local_experts=4,
                    num_experts_per_tok=2, head_dim=8, layer_types=["sliding_attention", "full_attention"],
                    sliding_window=4),
    "granitemoe": dict(hidden_size=32, intermediate_size=16, num_key_value_heads=2, num_local_experts=4,
                       num_experts_per_tok=2),
    "deepseek_v3": dict(hidden_size=32, intermediate_size=16, moe_intermediate_size=16, num_key_value_heads=4,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                        first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=4, v_head_dim=8, head_dim=4),
    "llama4_text": dict(hidden_size=32, intermediate_size=16, intermediate_size_mlp=24, num_key_value_heads=2,
                        num_local_experts=4, num_experts_per_tok=1, head_dim=8, moe_layers=[0, 1],
                        interleave_moe_layer_step=1, no_rope_layers=[1, 1]),
}


def make_tiny_moe(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(family, **{**COMMON, **MOE_FAMILIES[family]})
    return AutoModelForCausalLM.from_config(config).eval()


def pytest_collection_modifyitems(config, items):
    """Tests marked `large` load the 1.5B model (minutes, 7-10 GB): only on `-m large` or LESION_LARGE=1."""
    for item in items:  # a real model is the heavy tier's; marks are read when pytest selects, after this hook
        if "real" in item.keywords or "large" in item.keywords:
            item.add_marker(pytest.mark.slow)
    if os.environ.get("LESION_LARGE") == "1" or "large" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a real 1.5B model: run with -m large or LESION_LARGE=1")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


# The dequantised real model is shared (building it takes a minute); everything else a run
# caches (Stage 1 scores, offload folders, task files) is private to each test.
REAL_MODELS = Path(os.environ.get("LESION_CACHE", Path.home() / ".cache" / "lesion")) / "models"


def isolated_cache(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    REAL_MODELS.mkdir(parents=True, exist_ok=True)  # on a fresh machine the first test fills it for all
    if not (folder / "models").exists():
        (folder / "models").symlink_to(REAL_MODELS, target_is_directory=True)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """For module- and session-scoped fixtures, which run before the per-test one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESION_CACHE", str(isolated_cache(tmp_path_factory.mktemp("lesion-cache"))))
        yield


@pytest.fixture(autouse=True)
def _test_cache(tmp_path_factory, monkeypatch):
    """No test reads a cache another test wrote: each gets its own LESION_CACHE."""
    monkeypatch.setenv("LESION_CACHE", str(isolated_cache(tmp_path_factory.mktemp("cache"))))


def make_tiny(family: str, seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(family, **{**COMMON, **FAMILIES[family]})
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    return model


@pytest.fixture(params=sorted(FAMILIES))
def tiny(request):
    return make_tiny(request.param)


@pytest.fixture
def tiny_llama():
    return make_tiny("llama")


@pytest.fixture
def ids():
    return torch.randint(3, VOCAB, (1, 16), generator=torch.Generator().manual_seed(0))


def char_tokenizer():
    """A character-level tokenizer over printable ASCII, so tiny models can go through the CLI."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = [chr(c) for c in range(32, 32 + VOCAB - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")


def save_tiny(path, family: str = "llama", seed: int = 0):
    model = make_tiny(family, seed)
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A saved tiny Llama with a tokenizer: a local folder `lesion --model` accepts."""
    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "llama"))


@pytest.fixture(scope="module")
def study(tiny_dir):
    """The tiny Llama loaded through lesion, on TEXT (one per test module: tests must not change it)."""
    from lesion.model.loading import load_model
    from lesion.method.study import Study
    return Study.create(load_model(tiny_dir), TEXT)


def scan_tiny(model_dir: str, out, *extra: str, text: str = TEXT, samples: int = 4, epsilon: float = 0.001) -> Path:
    """``lesion scan`` of a tiny model into the folder ``out``; a tiny epsilon so that the critical
    set is not empty. Returns the folder."""
    from lesion.cli import main

    code = main(["scan", "--model", model_dir, "--text", text, "--samples", str(samples), "--epsilon", str(epsilon),
                 "--quiet", "--out", str(out), *extra])
    assert code == 0, f"lesion scan exited {code}"
    return Path(out)


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory) -> Path:
    """A run folder of the tiny Llama (ranking.json, critical.json), one per test module."""
    return scan_tiny(tiny_dir, tmp_path_factory.mktemp("run"))


@pytest.fixture
def refused(capsys, monkeypatch):
    """``refused(argv, by)``: the CLI refuses ``argv`` with exit code 2 and one line, and what
    refused it is ``by``: a parameter name (a ParameterError on it, its line starting with its
    flag) or a class of lesion's error tree. Returns the error and the line."""
    import re

    import lesion.cli
    from lesion.errors import ParameterError

    def check(argv: list[str], by):
        shown, errors = lesion.cli.error_line, []
        monkeypatch.setattr(lesion.cli, "error_line", lambda error: errors.append(error) or shown(error))
        try:
            code = lesion.cli.main(argv)
        finally:
            monkeypatch.setattr(lesion.cli, "error_line", shown)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("lesion: error: "), (argv, err)
        assert "Traceback" not in err and len(errors) == 1, (argv, err)
        error = errors[0]
        if isinstance(by, str):
            assert isinstance(error, ParameterError) and error.parameter == by, (argv, type(error), str(error))
            assert lines[0].startswith(f"lesion: error: {lesion.cli.flag(by)} "), lines[0]
            assert not re.search(r"`[a-z][a-z0-9_]*`", lines[0]), lines[0]
        else:
            assert isinstance(error, by), (argv, type(error), str(error))
        return error, lines[0]
    return check
