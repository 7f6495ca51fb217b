"""Experts kept as a list of modules (transformers 4's layout, models people write themselves): their
neurons are sites named as on fused experts, masking one is exact, and a block whose experts get rows
lesion cannot trace back to tokens is refused with one line.

The list models here are built from a tiny transformers 5 Mixtral, each expert's weights copied out of
the fused ones, so the same neuron can be masked on both layouts and compared."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import VOCAB, make_tiny_moe
from lesion.model import coverage, experts
from lesion.errors import LesionError
from lesion.masking.masks import mask_neurons
from lesion.model.neurons import Neuron, discover_sites
from lesion.method.rankers import rank_by_noise


class Expert(torch.nn.Module):
    """transformers 4's Mixtral expert: w2(act(w1 x) * w3 x)."""

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor):
        super().__init__()
        self.w1 = torch.nn.Linear(gate.shape[1], gate.shape[0], bias=False)
        self.w3 = torch.nn.Linear(up.shape[1], up.shape[0], bias=False)
        self.w2 = torch.nn.Linear(down.shape[1], down.shape[0], bias=False)
        self.act_fn = torch.nn.SiLU()
        with torch.no_grad():
            self.w1.weight.copy_(gate)
            self.w3.weight.copy_(up)
            self.w2.weight.copy_(down)

    def forward(self, x):
        return self.w2(self.act_fn(self.w1(x)) * self.w3(x))


class ListBlock(torch.nn.Module):
    """A sparse MoE block with a Linear router and a ModuleList of experts, routing as Mixtral does,
    in one of three codings: ``where`` (transformers 4: a loop over experts gathering with
    torch.where and index_add_), ``sorted`` (DeepSeek's remote code: tokens sorted by expert, then
    sliced), ``scaled`` (each expert's rows scaled by their routing weight before it: not traceable)."""

    def __init__(self, fused_block: torch.nn.Module, layout: str):
        super().__init__()
        fused = next(m for m in fused_block.children() if experts.fused_kind(m) is not None)
        n, hidden = fused.down_proj.shape[0], fused.down_proj.shape[1]
        self.top_k, self.layout = fused_block.top_k, layout
        self.gate = torch.nn.Linear(hidden, n, bias=False)
        with torch.no_grad():
            self.gate.weight.copy_(fused_block.gate.weight)
        mats = [experts._expert_matrices(fused, e) for e in range(n)]
        self.experts = torch.nn.ModuleList(Expert(m["gate_proj"][1], m["up_proj"][1], m["down_proj"][1])
                                           for m in mats)

    def forward(self, hidden_states):
        batch, tokens, width = hidden_states.shape
        x = hidden_states.view(-1, width)
        probs = F.softmax(self.gate(x).float(), dim=-1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        if self.layout == "sorted":
            flat = chosen.view(-1)
            order = flat.argsort(stable=True)
            gathered = x[order // self.top_k]
            counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
            outs, start = [], 0
            for e, count in enumerate(counts):
                if count:
                    outs.append(self.experts[e](gathered[start:start + count]))
                start += count
            done = torch.cat(outs) * weights.view(-1)[order].unsqueeze(-1)
            out.index_add_(0, order // self.top_k, done)
            return out.view(batch, tokens, width)
        mask = F.one_hot(chosen, len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            slot, top_x = torch.where(mask[e])
            if top_x.numel() == 0:
                continue
            rows = x[None, top_x].reshape(-1, width)
            if self.layout == "scaled":
                y = expert(rows * weights[top_x, slot, None])
            else:
                y = expert(rows) * weights[top_x, slot, None]
            out.index_add_(0, top_x, y)
        return out.view(batch, tokens, width)


def list_model(layout: str = "where") -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the fused tiny Mixtral, the same model with every MoE block as a list of experts)."""
    fused = make_tiny_moe("mixtral")
    listed = copy.deepcopy(fused)
    for layer, fused_layer in zip(listed.model.layers, fused.model.layers):
        layer.mlp = ListBlock(fused_layer.mlp, layout)
    return fused, listed.eval()


@pytest.fixture
def ids():
    return torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("layout", ["where", "sorted"])
def test_list_layout_sites_are_named_as_on_fused_experts(layout, ids):
    fused, listed = list_model(layout)
    assert torch.allclose(_logits(fused, ids), _logits(listed, ids), atol=1e-5)
    index = discover_sites(listed, "all")
    kinds = {s.name: s.kind for s in index.sites}
    for e in range(4):
        assert kinds[f"model.layers.1.mlp.experts.{e}.w1"] == "gate"
        assert kinds[f"model.layers.1.mlp.experts.{e}.w3"] == "up"
        assert kinds[f"model.layers.1.mlp.experts.{e}.act_fn"] == "act"
        assert kinds[f"model.layers.1.mlp.experts.{e}.w2"] == "down"
    assert kinds["model.layers.1.mlp.gate.logits"] == "router"
    assert kinds["model.layers.1.mlp"] == "moe"
    assert index.by_name["model.layers.0.mlp.experts.3.w2"].width == 32
    seen = coverage.check(listed)
    assert not seen.partial and not any(seen.unseen.get(p, 0) for p in coverage.MUST_SEE)


def _zeroed(listed, neuron: Neuron):
    """The list model, never instrumented, with the weights that make ``neuron`` 0 zeroed by hand."""
    stock = copy.deepcopy(listed)
    module, c = neuron.module, neuron.channel
    with torch.no_grad():
        if module.endswith((".w1", ".act_fn")):  # silu(0) = 0, so the product is 0 as well
            stock.get_submodule(module.rpartition(".")[0] + ".w1").weight[c] = 0
        elif module.endswith((".w2", ".w3")):
            stock.get_submodule(module).weight[c] = 0
        elif module.endswith(".gate.logits"):
            stock.get_submodule(module.rpartition(".")[0]).weight[c] = 0
        else:
            raise AssertionError(module)
    return stock


NEURONS = ["model.layers.1.mlp.experts.2.w2:5", "model.layers.0.mlp.experts.1.w2:7",
           "model.layers.1.mlp.experts.0.w1:3", "model.layers.1.mlp.experts.3.w3:9",
           "model.layers.1.mlp.experts.1.act_fn:11", "model.layers.0.mlp.gate.logits:2"]


@pytest.mark.parametrize("layout", ["where", "sorted"])
@pytest.mark.parametrize("text", NEURONS)
def test_masking_a_list_expert_neuron_equals_zeroing_its_weights(layout, text, ids):
    fused, listed = list_model(layout)
    reference = _logits(_zeroed(listed, Neuron.parse(text)), ids)
    index = discover_sites(listed, "all")
    with mask_neurons(listed, index, [Neuron.parse(text)]):
        masked = _logits(listed, ids)
    assert torch.allclose(masked, reference, atol=2e-5)
    assert not torch.allclose(masked, _logits(listed, ids), atol=1e-6)  # the mask did something, and is gone
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in listed.modules()
                   if not isinstance(m, type(listed.model.layers[0].mlp)))


def test_list_and_fused_layouts_give_the_same_masked_model(ids):
    """The same expert neuron masked on the fused experts (lesion's own forward) and on the list."""
    fused, listed = list_model("where")
    pairs = [("experts.2.down_proj:5", "experts.2.w2:5"), ("experts.0.gate_proj:3", "experts.0.w1:3"),
             ("experts.3.up_proj:9", "experts.3.w3:9")]
    fi, li = discover_sites(fused, "all"), discover_sites(listed, "all")
    for f, lst in pairs:
        with mask_neurons(fused, fi, [Neuron.parse(f"model.layers.1.mlp.{f}")]):
            a = _logits(fused, ids)
        with mask_neurons(listed, li, [Neuron.parse(f"model.layers.1.mlp.{lst}")]):
            b = _logits(listed, ids)
        assert torch.allclose(a, b, atol=2e-5), (f, lst)


def test_batched_masks_on_list_experts_equal_each_alone(ids):
    _, listed = list_model("sorted")
    index = discover_sites(listed, "all")
    sets = [[Neuron.parse(NEURONS[0])], [Neuron.parse(NEURONS[2]), Neuron.parse(NEURONS[5])], []]
    batch = ids[:1].expand(len(sets), -1)
    with mask_neurons(listed, index, sets):
        together = _logits(listed, batch)
    for row, neurons in enumerate(sets):
        with mask_neurons(listed, index, neurons):
            alone = _logits(listed, ids[:1])
        assert torch.allclose(together[row], alone[0], atol=1e-5)


def test_stage1_reads_list_experts_as_it_reads_fused_ones(ids):
    """Noise scores of expert down, gate and up neurons: the same on both layouts (0 where not routed)."""
    fused, listed = list_model("where")
    fi, li = discover_sites(fused, "gate,up,down"), discover_sites(listed, "gate,up,down")
    options = dict(samples=4, batch_size=2, progress=False, seed=3)
    a = rank_by_noise(fused, ids[:1], fi, **options)
    b = rank_by_noise(listed, ids[:1], li, **options)
    rename = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
    for site in fi.sites:
        if ".experts." not in site.name:
            continue
        point = site.name.rpartition(".")[2]
        other = site.name.rpartition(".")[0] + "." + rename[point]
        start, other_start = fi.flat(Neuron(site.name, 0)), li.flat(Neuron(other, 0))
        assert torch.allclose(a.values[start:start + site.width], b.values[other_start:other_start + site.width],
                              rtol=1e-4, atol=1e-5), site.name


def test_experts_fed_rows_not_taken_from_the_input_are_refused():
    _, listed = list_model("scaled")
    with pytest.raises(LesionError) as err:
        discover_sites(listed, "all")
    assert "\n" not in str(err.value)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in listed.modules()
                   if not isinstance(m, ListBlock))


def test_a_deep_copy_of_a_list_model_runs_on_its_own_experts(ids):
    _, listed = list_model("where")
    index = discover_sites(listed, "all")
    twin = copy.deepcopy(listed)
    with torch.no_grad():
        twin.model.layers[1].mlp.experts[2].w2.weight[5] = 0
    neuron = [Neuron.parse(NEURONS[0])]
    with mask_neurons(listed, index, neuron):
        a = _logits(listed, ids)
    assert torch.allclose(a, _logits(twin, ids), atol=2e-5)
    with mask_neurons(twin, index, neuron):
        assert torch.allclose(_logits(twin, ids), a, atol=2e-5)
