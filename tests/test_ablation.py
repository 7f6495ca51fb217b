"""Scoring neuron sets: the shared-prefix forward against the full forward."""
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lesion.model.neurons import Neuron, discover_sites
from lesion.masking.ablation import masked_nll
from conftest import COMMON, FAMILIES

SHARING = ["llama", "qwen2", "gemma3_text", "phi3"]


def four_layers(family):
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **{**COMMON, **FAMILIES[family], "num_hidden_layers": 4,
                                                 "initializer_range": 0.3})  # large weights: masks matter
    return AutoModelForCausalLM.from_config(config).eval()


def no_forward_overrides(model):
    return all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("family", SHARING)
@pytest.mark.parametrize("ablation", ["zero", "mean", "position0"])
def test_shared_prefix_scores_as_the_full_forward(family, ablation, ids):
    model = four_layers(family)
    index = discover_sites(model)
    site = {(s.layer, s.kind): s for s in index.sites}

    def whole(layer, kind):  # every channel of a site: a change far above float noise
        return [Neuron(site[layer, kind].name, c) for c in range(site[layer, kind].width)]

    sets = [whole(2, "down"),                           # starts at block 2
            whole(3, "down") + whole(2, "o"),
            [],                                         # the unmasked model
            whole(1, "o")]                              # starts at block 1
    full = masked_nll(model, ids, index, sets, ablation=ablation, share_prefix=False)
    for rows in (1, 2, 4):  # one batch's lowest block differs with the batch
        shared = masked_nll(model, ids, index, sets, ablation=ablation, max_rows=rows)
        torch.testing.assert_close(torch.tensor(shared), torch.tensor(full), rtol=0, atol=1e-5)
    assert all(abs(full[i] - full[2]) > 1e-3 for i in (0, 1, 3))  # each mask matters: the test can fail
    assert no_forward_overrides(model)


def test_shared_prefix_skips_the_blocks_below(ids):
    model = four_layers("llama")
    index = discover_sites(model)
    ran = []  # the block of every MLP that computed: a replayed block runs none of its modules
    handles = [block.mlp.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i, block in enumerate(model.model.layers)]
    try:
        masked_nll(model, ids, index, [[Neuron("model.layers.3.mlp.down_proj", c)] for c in range(3)])
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1, 2, 3]  # blocks 0-2 once for the shared prefix, block 3 once for the batch


def test_blocks_are_restored_after_an_error(ids):
    model = four_layers("llama")
    index = discover_sites(model)
    neuron = Neuron("model.layers.2.mlp.down_proj", 0)
    expected = masked_nll(model, ids, index, [[neuron]], share_prefix=False)

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    handle = model.model.layers[3].register_forward_hook(boom)  # fails while blocks 0-1 replay
    with pytest.raises(RuntimeError, match="boom"):
        masked_nll(model, ids, index, [[neuron]])
    handle.remove()
    assert no_forward_overrides(model)
    assert masked_nll(model, ids, index, [[neuron]]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "opt", "gpt_neox"])
def test_other_families_run_the_full_forward(family, ids):
    from conftest import make_tiny
    model = make_tiny(family)
    index = discover_sites(model)
    site = max(index.sites, key=lambda s: s.layer)
    sets = [[Neuron(site.name, 0)], [Neuron(site.name, 1)]]
    assert masked_nll(model, ids, index, sets) == masked_nll(model, ids, index, sets, share_prefix=False)
