"""Greedy continuations, masked and not, and `lesion generate`."""
import pytest
from test_eval import scan_to

from lesion.masking.masks import hooked
from lesion.model.neurons import Neuron, discover_sites
from lesion.cli import main
from lesion.replay.generation import generate, generate_masked, repeated_share
from lesion.model.loading import load_model


@pytest.fixture(scope="module")
def critical(tiny_dir, tmp_path_factory):
    return scan_to(tiny_dir, tmp_path_factory.mktemp("scan"), 0.001)


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return load_model(tiny_dir)


def test_generation_is_greedy_and_masked_at_every_step(lm):
    assert generate(lm.model, lm.tokenizer, "The sky is", 8) == generate(lm.model, lm.tokenizer, "The sky is", 8)
    index = discover_sites(lm.model, "all")
    # Zeroing the whole norm zeroes the input of q_proj (no bias): its output shows the mask.
    neurons = [Neuron("model.layers.0.input_layernorm", c) for c in range(lm.model.config.hidden_size)]
    q_zero = []
    with hooked(lm.model, {"model.layers.0.self_attn.q_proj": lambda out: q_zero.append(bool((out == 0).all()))}):
        generate_masked(lm.model, lm.tokenizer, index, neurons, "The sky is", 6)
        masked_steps = len(q_zero)
        generate(lm.model, lm.tokenizer, "The sky is", 6)
    assert masked_steps == 6 and all(q_zero[:6]) and not any(q_zero[6:])  # prompt + 5 cached steps
    assert all(not m._forward_hooks for m in lm.model.modules())


def test_repeated_share(lm):
    assert repeated_share(lm.tokenizer, "") == 0.0
    once = lm.tokenizer("abc", add_special_tokens=False).input_ids
    assert repeated_share(lm.tokenizer, "abc") == 1 - len(set(once)) / len(once)
    assert repeated_share(lm.tokenizer, "abc" * 10) > repeated_share(lm.tokenizer, "abc")


def test_generate_cli_prints_both_columns(tiny_dir, capsys, critical):
    assert main(["generate", "--model", tiny_dir, "--neurons", critical, "--prompt", "Once upon",
                 "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "Once upon" in out and "masked" in out and out.count("repeated tokens") == 2
