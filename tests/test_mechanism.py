"""Mechanism probes: value ablations, frozen norms, outliers, and the real model's critical neuron."""
import json

import pytest
import torch

from lesion import Neuron, discover_sites, hooked
from lesion.cli import main
from lesion.hooks import mask_neurons, set_neurons
from lesion.loading import load_model
from lesion.mechanism import (
    following_norm,
    forward_order,
    frozen_norms,
    mechanism,
    super_weights,
)
from lesion.metrics import mean_nll
from lesion.pipeline import Study

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
OTHER = "A different sentence about rivers, mountains and the sea."


@pytest.fixture(scope="module")
def study(tiny_dir):
    return Study.create(load_model(tiny_dir), TEXT)


def test_set_neurons_to_zero_is_masking_for_every_layout(tiny, ids):
    index = discover_sites(tiny, "all")
    for site in index.sites[::3]:  # every layout: (B,T,C), (B*T,C) for OPT, (B,H,T,D) for Gemma's q_norm
        neuron = Neuron(site.name, site.width - 1)
        with mask_neurons(tiny, index, [neuron]):
            masked = mean_nll(tiny, ids)
        with set_neurons(tiny, index, {neuron: 0.0}):
            torch.testing.assert_close(mean_nll(tiny, ids), masked)
    assert all(not m._forward_hooks for m in tiny.modules())


def test_set_neurons_overwrites_only_that_channel(study):
    model, ids, index = study.lm.model, study.input_ids, study.index
    name = "model.layers.0.mlp.down_proj"
    values = torch.arange(float(ids.shape[1]))
    seen = {}
    with hooked(model, {name: lambda out: seen.__setitem__("clean", out.detach().clone())}):
        mean_nll(model, ids)
    with set_neurons(model, index, {Neuron(name, 4): values}, positions=slice(2, None)), \
            hooked(model, {name: lambda out: seen.__setitem__("out", out.detach().clone())}):
        mean_nll(model, ids)
    assert torch.equal(seen["out"][0, 2:, 4], values[2:])
    rest = torch.ones_like(seen["out"], dtype=torch.bool)
    rest[0, 2:, 4] = False
    assert torch.equal(seen["out"][rest], seen["clean"][rest])


def test_frozen_norms_without_a_lesion_change_nothing(tiny, ids):
    before = mean_nll(tiny, ids)
    with frozen_norms(tiny, ids):
        torch.testing.assert_close(mean_nll(tiny, ids), before)
    assert all(not m._forward_hooks for m in tiny.modules())


def test_frozen_norm_divides_by_the_clean_rms(study):
    model, ids, index = study.lm.model, study.input_ids, study.index
    norm = "model.layers.1.input_layernorm"
    seen = {}

    def record(key):
        return lambda m, i, o: seen.__setitem__(key, (i[0].detach().clone(), o.detach().clone()))

    with hooked(model, {norm: record("clean")}, raw=True):
        mean_nll(model, ids)
    # frozen_norms records its statistics on entry: enter it before the lesion.
    lesion = [Neuron("model.layers.0.mlp.down_proj", 3)]
    with frozen_norms(model, ids, [norm]), mask_neurons(model, index, lesion), \
            hooked(model, {norm: record("frozen")}, raw=True):
        mean_nll(model, ids)
    x_clean, x = seen["clean"][0].float(), seen["frozen"][0].float()
    assert not torch.equal(x, x_clean)  # the lesion reaches the norm's input
    module = model.get_submodule(norm)
    expected = x / (x_clean.pow(2).mean(-1, keepdim=True) + module.variance_epsilon).sqrt() * module.weight
    torch.testing.assert_close(seen["frozen"][1], expected, rtol=1e-4, atol=1e-4)


def test_following_norm_is_the_next_residual_norm_in_forward_order(study):
    model = study.lm.model
    order = forward_order(model, study.input_ids)
    assert following_norm(model, "model.layers.0.mlp.down_proj", order) == "model.layers.1.input_layernorm"
    assert following_norm(model, "model.layers.1.mlp.down_proj", order) == "model.norm"
    assert following_norm(model, "model.layers.0.self_attn.o_proj", order) == "model.layers.0.post_attention_layernorm"


def test_super_weight_is_found_when_planted(tiny_dir):
    lm = load_model(tiny_dir)
    with torch.no_grad():
        lm.model.get_submodule("model.layers.1.mlp.down_proj").weight[7, 11] = 50.0
    top = super_weights(lm.model, discover_sites(lm.model, "all"), top=1)[0]
    assert (top["module"], top["row"], top["column"]) == ("model.layers.1.mlp.down_proj", 7, 11)


def test_mechanism_report(study):
    critical = [Neuron("model.layers.0.mlp.down_proj", 3)]
    result = mechanism(study, critical, other_text=OTHER)
    assert set(result["positions"]) == {"all positions", "position 0 only", "all but position 0"}
    assert set(result["ablations"]) == {"zero", "mean", "resample"}
    assert result["ablations"]["zero"] == pytest.approx(result["positions"]["all positions"])
    assert set(result["normalisation"]) == {"recomputed", "frozen: following norm only", "frozen: every norm"}
    assert result["following_norms"] == ["model.layers.1.input_layernorm"]
    profile = result["neurons"][0]
    assert profile["neuron"] == str(critical[0]) and profile["feeding"] and profile["leaving"]
    assert 0 <= profile["argmax_position"] < study.input_ids.shape[1]
    assert profile["in_top_massive"] == (str(critical[0]) in {m["neuron"] for m in result["massive_activations"]})


def test_mechanism_cli(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run)]) == 0
    result = json.loads((run / "mechanism.json").read_text())
    assert len(result["neurons"]) == len(json.loads((run / "critical.json").read_text())["neurons"])
    assert "among the model's outliers" in capsys.readouterr().out
    critical = json.loads((run / "critical.json").read_text())
    (run / "critical.json").write_text(json.dumps({**critical, "neurons": [], "reached": False}))
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run)]) == 2
    assert "no critical set" in capsys.readouterr().err


@pytest.fixture(scope="module")
def smollm():
    return Study.create(load_model("smollm2-135m"))


def test_real_critical_neuron_is_a_massive_activation_at_the_first_token(smollm):
    neuron = Neuron("model.layers.11.mlp.down_proj", 507)
    result = mechanism(smollm, [neuron], other_text=OTHER)
    profile = result["neurons"][0]
    assert profile["massive"] and profile["argmax_position"] == 0 and profile["rank_by_max_abs"] == 1
    assert profile["super_weight_row"]
    # The collapse lives at the sink token: position 0 alone does it, the rest does not.
    assert result["positions"]["position 0 only"] > 4
    assert result["positions"]["all but position 0"] < 0.1
    assert result["normalisation"]["frozen: every norm"] < result["normalisation"]["recomputed"] - 2
