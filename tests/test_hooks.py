"""Masking hooks: exact zeros where asked, nothing elsewhere, and nothing left behind."""
import pytest
import torch

from lesion.masking.masks import hooked, mask_neurons
from lesion.model.neurons import Neuron, discover_sites
from lesion.method.stage2 import masked_nll
from lesion.masking.metrics import mean_nll


def no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.clone()


def test_mask_changes_output_and_restores_it_bit_for_bit(tiny, ids):
    index = discover_sites(tiny)
    before = logits(tiny, ids)
    down = next(s for s in index.sites if s.kind in ("down", "o"))
    with mask_neurons(tiny, index, [Neuron(down.name, 0), Neuron(down.name, 3)]):
        inside = logits(tiny, ids)
    after = logits(tiny, ids)
    assert not torch.equal(before, inside)
    assert torch.equal(before, after)
    assert no_hooks(tiny)


def test_hooks_removed_after_an_exception_and_ctrl_c(tiny_llama, ids):
    index = discover_sites(tiny_llama)
    before = logits(tiny_llama, ids)
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with mask_neurons(tiny_llama, index, [Neuron("model.layers.1.mlp.down_proj", 1)]):
                logits(tiny_llama, ids)
                raise error
        assert no_hooks(tiny_llama)
        assert torch.equal(before, logits(tiny_llama, ids))


def test_masked_channel_is_exactly_zero_everywhere_else_untouched(tiny_llama, ids):
    index = discover_sites(tiny_llama)
    name = "model.layers.0.mlp.down_proj"
    seen = {}
    record = {name: lambda out: seen.__setitem__("out", out.detach().clone())}
    with hooked(tiny_llama, record):  # registered first, so it sees the unmasked output
        logits(tiny_llama, ids)
    clean = seen["out"]
    with mask_neurons(tiny_llama, index, [Neuron(name, 5)]):
        with hooked(tiny_llama, record):  # registered after the mask: sees the masked output
            logits(tiny_llama, ids)
    masked = seen["out"]
    assert (masked[..., 5] == 0).all()
    keep = torch.ones(masked.shape[-1], dtype=torch.bool)
    keep[5] = False
    assert torch.equal(masked[..., keep], clean[..., keep])


def test_position_restricted_mask_zeroes_only_those_positions(tiny_llama, ids):
    index = discover_sites(tiny_llama)
    name = "model.layers.0.mlp.down_proj"
    seen = {}
    with mask_neurons(tiny_llama, index, [Neuron(name, 2)], positions=slice(0, 1)):
        with hooked(tiny_llama, {name: lambda out: seen.__setitem__("out", out.detach().clone())}):
            logits(tiny_llama, ids)
    assert (seen["out"][:, 0, 2] == 0).all() and (seen["out"][:, 1:, 2] != 0).all()


def test_batched_multi_mask_equals_one_mask_at_a_time(tiny, ids):
    index = discover_sites(tiny)
    sites = index.sites
    sets = [[], [Neuron(sites[0].name, 1)], [Neuron(sites[-1].name, 0), Neuron(sites[1].name, 2)]]
    batched = masked_nll(tiny, ids, index, sets)
    for s, value in zip(sets, batched):
        with mask_neurons(tiny, index, s):
            alone = mean_nll(tiny, ids).item()
        assert value == pytest.approx(alone, rel=1e-5, abs=1e-6)
    assert batched[0] == pytest.approx(mean_nll(tiny, ids).item(), rel=1e-6)
    assert no_hooks(tiny)
