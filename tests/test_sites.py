import pytest

from lesion.errors import LesionError
from lesion.model.neurons import Neuron, discover_sites
from conftest import make_tiny


def test_every_family_has_sites_of_the_expected_kinds(tiny):
    index = discover_sites(tiny)
    kinds = {s.kind for s in index.sites}
    assert {"down", "act"} <= kinds or {"down"} <= kinds
    assert "ln" not in kinds  # block layer norms are opt-in
    assert index.total == sum(s.width for s in index.sites)
    assert all(s.layer in (0, 1) for s in index.sites)


def test_gemma3_per_head_norm_is_flattened():
    index = discover_sites(make_tiny("gemma3_text"))
    q_norm = index.by_name["model.layers.0.self_attn.q_norm"]
    assert q_norm.kind == "norm"
    assert q_norm.channel_shape == (4, 8) and q_norm.token_axis == 2 and q_norm.width == 32


def test_gpt2_conv1d_kinds():
    index = discover_sites(make_tiny("gpt2"))
    kinds = {s.name.split("h.0.")[-1]: s.kind for s in index.sites if ".h.0." in s.name}
    assert kinds == {"attn.c_attn": "qkv", "attn.c_proj": "o", "mlp.c_fc": "up", "mlp.act": "act",
                     "mlp.c_proj": "down"}


def test_dropout_aliases_are_not_neurons():
    index = discover_sites(make_tiny("phi3"))
    assert not any("dropout" in s.name for s in index.sites)


def test_flat_numbering_round_trips(tiny_llama):
    index = discover_sites(tiny_llama)
    flats = [0, 5, index.total - 1, int(index.offsets[3]) + 2]
    neurons = index.neurons(flats)
    assert [index.flat(n) for n in neurons] == flats
    assert neurons[1] == index.neuron(5)


def test_component_filter_and_errors(tiny_llama):
    index = discover_sites(tiny_llama, "down")
    assert {s.kind for s in index.sites} == {"down"}
    with pytest.raises(LesionError, match="unknown component"):
        discover_sites(tiny_llama, "downn")
    with pytest.raises(LesionError, match="channel out of range"):
        index.check([Neuron("model.layers.0.mlp.down_proj", 32)])
    with pytest.raises(LesionError, match="not a neuron site"):
        index.check([Neuron("model.layers.999.mlp.down_proj", 5)])


def test_neuron_parse_and_print():
    n = Neuron.parse("model.layers.11.mlp.down_proj:507")
    assert n == Neuron("model.layers.11.mlp.down_proj", 507) and str(n) == "model.layers.11.mlp.down_proj:507"
    with pytest.raises(LesionError):
        Neuron.parse("model.layers.11.mlp.down_proj")
