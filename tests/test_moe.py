"""Mixture-of-experts models: expert neurons are sites, and masking one is exact.

Every masked expert neuron is checked against the model transformers builds, untouched by lesion,
with the weights that produce that neuron zeroed by hand (an independent code path: transformers'
own grouped experts forward), and one case against a loop over experts written out here."""
from __future__ import annotations

import pytest
import torch

from conftest import MOE_FAMILIES, VOCAB, make_tiny_moe
from lesion.model import coverage, experts
from lesion.masking.ablation import masked_nll
from lesion.errors import ParameterError
from lesion.masking.masks import mask_neurons
from lesion.model.neurons import Neuron, discover_sites
from lesion.method.rankers import clean_activations, rank_by_noise

FAMILIES = sorted(MOE_FAMILIES)


@pytest.fixture
def ids():
    return torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def _moe(model) -> tuple[str, torch.nn.Module]:
    """Block 1's MoE module and its fused experts."""
    block = next(n for n in experts.instrument(model) if ".1." in n)
    module = model.get_submodule(block)
    return block, next(m for m in module.children() if experts.fused_kind(m) is not None)


def _zero(stock: torch.nn.Module, family: str, block: str, neuron: Neuron) -> None:
    """Zero, in a model lesion never touched, the weights that make ``neuron``'s activation 0."""
    moe = stock.get_submodule(block)
    ex = next(m for m in moe.children() if experts.fused_kind(m) is not None)
    transposed = getattr(ex, "is_transposed", family == "llama4_text")
    interleaved = not getattr(ex, "is_concatenated", True)
    bias = getattr(ex, "has_bias", False)
    size = ex.down_proj.shape[-1 if not transposed else 1]  # intermediate width
    gate_up, down = ex.gate_up_proj.data, ex.down_proj.data
    c = neuron.channel
    point = neuron.module.rpartition(".")[2]

    def zero_output(weight: torch.Tensor, bias_name: str, e: int, index) -> None:
        """Zero output channel(s) ``index`` of expert ``e``'s (E, out, in) weight ((E, in, out) transposed)."""
        if transposed:
            weight[e, :, index] = 0
        else:
            weight[e, index, :] = 0
        if bias:
            getattr(ex, bias_name).data[e, index] = 0

    def rows(e: int, index):  # output rows of the gate/up projection
        zero_output(gate_up, "gate_up_proj_bias", e, index)

    def down_out(e: int, channel):
        zero_output(down, "down_proj_bias", e, channel)
    if neuron.module == block:  # the block's output channel: every expert's and shared expert's
        for e in range(down.shape[0]):
            down_out(e, c)
        for name, p in moe.named_parameters():
            if "shared_expert" in name and "down_proj" in name:
                p.data[c] = 0
        return
    if point == "logits":
        router = stock.get_submodule(neuron.module.rpartition(".")[0])
        router.weight.data[c] = 0
        if getattr(router, "bias", None) is not None:
            router.bias.data[c] = 0
        return
    if point == "routing":
        down[c] = 0
        if bias:
            ex.down_proj_bias.data[c] = 0
        return
    e = int(neuron.module.split(".")[-2])
    if point == "down_proj":
        down_out(e, c)
    elif point == "act_fn":
        if transposed:
            down[e, c, :] = 0
        else:
            down[e, :, c] = 0
    elif point == "gate_proj":
        rows(e, 2 * c if interleaved else c)
    elif point == "up_proj":
        rows(e, 2 * c + 1 if interleaved else size + c)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_fused_family_has_expert_sites(family):
    model = make_tiny_moe(family)
    index = discover_sites(model, "all")
    kinds = {s.kind for s in index.sites}
    assert {"gate", "up", "act", "down", "moe", "router", "expert"} <= kinds
    block, ex = _moe(model)
    n = ex.down_proj.shape[0]
    assert all(f"{block}.experts.{e}.down_proj" in index.by_name for e in range(n))
    assert index.by_name[f"{block}.experts.routing"].width == n
    hidden = model.config.hidden_size
    assert index.by_name[f"{block}.experts.0.down_proj"].width == hidden
    assert index.by_name[block].width == hidden
    assert not coverage.measure(model, index).partial


@pytest.mark.parametrize("family", FAMILIES)
def test_the_instrumented_model_computes_the_same_function(family, ids):
    stock, model = make_tiny_moe(family), make_tiny_moe(family)
    discover_sites(model)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, stock(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_an_expert_neuron_equals_zeroing_its_weights(family, ids):
    model = make_tiny_moe(family)
    index = discover_sites(model, "all")
    block, _ = _moe(model)
    router = next((s.name for s in index.sites if s.kind == "router" and s.name.startswith(block)), None)
    cases = [Neuron(f"{block}.experts.1.down_proj", 3), Neuron(f"{block}.experts.2.act_fn", 5),
             Neuron(f"{block}.experts.0.gate_proj", 7), Neuron(f"{block}.experts.3.up_proj", 2),
             Neuron(f"{block}.experts.routing", 1), Neuron(block, 4)] + ([Neuron(router, 2)] if router else [])
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        for neuron in cases:
            stock = make_tiny_moe(family)
            _zero(stock, family, block, neuron)
            with mask_neurons(model, index, [neuron]):
                masked = model(input_ids=ids).logits
            torch.testing.assert_close(masked, stock(input_ids=ids).logits, atol=2e-5, rtol=2e-5,
                                       msg=lambda m, n=neuron: f"{n}: {m}")
            assert not torch.equal(masked, clean), f"masking {neuron} changed nothing"
    assert not any(t.hooked for t in model.modules() if isinstance(t, experts.Tap))


def test_an_expert_mask_changes_only_the_tokens_routed_to_it(ids):
    """Mixtral, by hand: the block's output under a mask on expert 2's down channel 3, against a
    loop over experts that zeroes that channel, and equal to the unmasked output off expert 2."""
    model = make_tiny_moe("mixtral")
    index = discover_sites(model)
    block, ex = _moe(model)
    moe = model.get_submodule(block)
    seen = {}

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, (args[0], output))
    with torch.no_grad():
        handle = moe.register_forward_hook(keep("clean"))
        model(input_ids=ids)
        handle.remove()
        with mask_neurons(model, index, [Neuron(f"{block}.experts.2.down_proj", 3)]):
            handle = moe.register_forward_hook(keep("masked"))
            model(input_ids=ids)
            handle.remove()
    x, clean = seen["clean"]
    masked = seen["masked"][1]
    x = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(x @ moe.gate.weight.T, dim=-1)
    top, chosen = probs.topk(2, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    expected = torch.zeros_like(x)
    for e in range(ex.num_experts):
        token, slot = torch.where(chosen == e)
        gate, up = (x[token] @ ex.gate_up_proj[e].T).chunk(2, dim=-1)
        y = (torch.nn.functional.silu(gate) * up) @ ex.down_proj[e].T
        if e == 2:
            y[:, 3] = 0
        expected.index_add_(0, token, y * top[token, slot, None])
    torch.testing.assert_close(masked.reshape(-1, x.shape[-1]), expected, atol=1e-6, rtol=1e-5)
    routed = (chosen == 2).any(dim=-1)
    assert routed.any() and (~routed).any()
    assert torch.equal(masked.reshape(-1, x.shape[-1])[~routed], clean.reshape(-1, x.shape[-1])[~routed])
    assert not torch.equal(masked.reshape(-1, x.shape[-1])[routed], clean.reshape(-1, x.shape[-1])[routed])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_of_sets_scores_each_set_as_alone_and_as_the_full_forward(family, ids):
    model = make_tiny_moe(family)
    index = discover_sites(model, "all")
    block, _ = _moe(model)
    sets = [[], [Neuron(f"{block}.experts.1.down_proj", 3)], [Neuron(f"{block}.experts.routing", 2)],
            [Neuron(block, 4), Neuron(f"{block}.experts.0.act_fn", 1)],
            [Neuron(block.replace(".1.", ".0."), 1)]]
    text = ids[:1]
    batched = masked_nll(model, text, index, sets, max_rows=8)
    alone = [masked_nll(model, text, index, [s], max_rows=1)[0] for s in sets]
    full = masked_nll(model, text, index, sets, max_rows=8, share_prefix=False)
    assert batched == pytest.approx(alone, abs=1e-5)
    assert batched == pytest.approx(full, abs=1e-5)


def test_stage1_reads_an_expert_neuron_as_zero_where_no_token_was_routed(ids):
    model = make_tiny_moe("mixtral")
    index = discover_sites(model)
    block, ex = _moe(model)
    clean = clean_activations(model, ids[:1], index)
    routed = {e: clean[f"{block}.experts.{e}.down_proj"].abs().sum(-1) > 0 for e in range(ex.num_experts)}
    per_token = torch.stack([routed[e] for e in range(ex.num_experts)]).sum(0)
    assert (per_token == 2).all()  # top-2: every token is in exactly two experts
    scores = rank_by_noise(model, ids[:1], index, samples=4, batch_size=2, progress=False)
    assert torch.isfinite(scores.values).all() and scores.values.numel() == index.total


def test_whole_experts_as_units():
    from lesion.model.architectures import unit_components
    model = make_tiny_moe("qwen3_moe")
    index = discover_sites(model, unit_components(None, "expert"))
    assert {s.kind for s in index.sites} == {"expert"}
    assert index.total == 2 * 4
    assert experts.unit_name("model.layers.1.mlp.experts.2") == "model.layers.1.mlp.experts.routing:2"
    with pytest.raises(ParameterError) as err:
        unit_components("down", "expert")
    assert err.value.parameter == "unit"


def test_expert_weights_are_fingerprinted():
    from lesion.model.weights import consumers, producers
    model = make_tiny_moe("gpt_oss")
    index = discover_sites(model, "all")
    block, ex = _moe(model)
    made = producers(model, Neuron(f"{block}.experts.1.down_proj", 3))
    assert len(made) == 1 and torch.equal(made[0].values, ex.down_proj[1][:, 3])
    read = consumers(model, index, Neuron(f"{block}.experts.1.act_fn", 5))
    assert len(read) == 1 and torch.equal(read[0].values, ex.down_proj[1][5])
    assert {s.name for s in producers(model, Neuron(f"{block}.experts.1.act_fn", 5))} == {
        f"{block}.experts[1].gate_up_proj:gate_proj[5,:]", f"{block}.experts[1].gate_up_proj:up_proj[5,:]"}


def test_a_model_whose_experts_lesion_cannot_see_is_refused():
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model("jetmoe", vocab_size=VOCAB, num_hidden_layers=2, hidden_size=32,
                                  num_attention_heads=4, num_key_value_heads=2, kv_channels=8,
                                  intermediate_size=16, num_local_experts=4, num_experts_per_tok=2)
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(ParameterError) as err:
        coverage.check(model)
    assert err.value.parameter == "partial_view"
    accepted = coverage.check(model, partial_view=True)
    assert accepted.partial and accepted.unseen.get("experts", 0) > 0


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory):
    from conftest import char_tokenizer
    path = tmp_path_factory.mktemp("tiny-moe") / "mixtral"
    make_tiny_moe("mixtral").save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return str(path)


def test_the_commands_read_expert_neurons(tiny_moe_dir, tmp_path):
    """scan names expert neurons, mask and verify read them back, --unit expert masks whole experts."""
    import json

    from conftest import scan_tiny
    from lesion.cli import main
    run = scan_tiny(tiny_moe_dir, tmp_path / "run")
    ranking = json.loads((run / "ranking.json").read_text())
    assert any(".experts." in n for n in ranking["neurons"])
    critical = json.loads((run / "critical.json").read_text())
    assert critical["neurons"]
    assert main(["verify", "--against", str(run / "critical.json"), "--model", tiny_moe_dir, "--quiet"]) == 0
    assert main(["mask", "--model", tiny_moe_dir, "--quiet", "model.layers.1.mlp.experts.2.down_proj:3",
                 "model.layers.1.mlp.gate.logits:1"]) == 0
    assert main(["mask", "--model", tiny_moe_dir, "--quiet", "--unit", "expert", "model.layers.1.mlp.experts.2"]) == 0
    assert main(["mask", "--model", tiny_moe_dir, "--quiet", "model.layers.1.mlp.experts.9.down_proj:3"]) == 2
    units = scan_tiny(tiny_moe_dir, tmp_path / "units", "--unit", "expert")
    assert all(".experts.routing:" in n for n in json.loads((units / "ranking.json").read_text())["neurons"])


@pytest.mark.slow
def test_ranks_give_one_process_answer_on_an_moe_model(tiny_moe_dir, tmp_path):
    import json

    from test_distributed import SCAN, torchrun
    one = tmp_path / "one"
    from lesion.cli import main
    assert main([*SCAN, "--model", tiny_moe_dir, "--out", str(one)]) == 0
    done = torchrun(2, *SCAN, "--model", tiny_moe_dir, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-2000:]
    ref, got = (json.loads((f / "ranking.json").read_text()) for f in (one, tmp_path / "two"))
    assert got["neurons"][:50] == ref["neurons"][:50]
    assert got["scores"] == pytest.approx(ref["scores"], rel=1e-5, abs=0)
    assert [json.loads((f / "critical.json").read_text())["neurons"] for f in (one, tmp_path / "two")][0] == \
        json.loads((tmp_path / "two" / "critical.json").read_text())["neurons"]


@pytest.mark.real
def test_the_upcycled_default_model_collapses_on_its_expert_neurons():
    """The default model upcycled into 4 experts (top-2): Stage 1 + Stage 2 with no hint name expert
    neurons of layer 11's channel 507, and zeroing the weights that write them in a copy lesion never
    touched collapses it as the mask did."""
    from lesion import Study, load_model
    from lesion.masking.ablation import baseline_nll
    from lesion.model.loading import LoadedModel
    from lesion.tools.upcycle import upcycle
    dense = load_model(progress=False)
    moe = upcycle(dense.model)
    lm = LoadedModel(moe, dense.tokenizer, "smollm2-135m-upcycled", "float32", coverage=coverage.check(moe))
    assert not lm.coverage.partial
    study = Study.create(lm)
    critical = study.identify(study.rank(samples=10, progress=False, use_cache=False), progress=False)
    assert 1 <= len(critical.neurons) <= 2 and critical.delta >= 1
    assert all(n.module.startswith("model.layers.11.mlp") and n.channel == 507 for n in critical.neurons)
    stock = upcycle(dense.model)  # the same seed: the same weights, never instrumented
    clean = baseline_nll(stock, study.input_ids)
    for n in critical.neurons:
        if ".experts." in n.module:
            stock.get_submodule(n.module.rsplit(".", 2)[0]).down_proj.data[int(n.module.split(".")[-2]), 507] = 0
        else:
            stock.get_submodule(n.module + ".experts").down_proj.data[:, 507] = 0
    by_hand = (baseline_nll(stock, study.input_ids) - clean) / torch.log(torch.tensor(10.0)).item()
    assert by_hand == pytest.approx(critical.delta, abs=1e-3)


def test_a_deep_copy_runs_on_its_own_weights(ids):
    import copy
    model = make_tiny_moe("mixtral")
    index = discover_sites(model, "all")
    block, ex = _moe(model)
    twin = copy.deepcopy(model)
    _, twin_experts = _moe(twin)
    twin_experts.down_proj.data.zero_()
    with torch.no_grad():
        assert not torch.equal(model(input_ids=ids).logits, twin(input_ids=ids).logits)
        with mask_neurons(twin, index, [Neuron(f"{block}.experts.routing", 1)]):
            twin(input_ids=ids)
        assert not any(t.hooked for t in model.modules() if isinstance(t, experts.Tap))


def test_experts_written_by_hand_as_a_list_of_modules_are_seen_and_masked_exactly(ids):
    """A block whose experts are a ModuleList of ModuleDicts, routed by argmax and written back by
    index assignment (no transformers code at all): its expert neurons are sites, and masking one
    equals zeroing its weight row (more layouts in test_expert_list.py)."""
    import copy
    model = make_tiny_moe("mixtral")

    class ListExperts(torch.nn.Module):
        def __init__(self, hidden: int, width: int, n: int):
            super().__init__()
            self.experts = torch.nn.ModuleList(torch.nn.ModuleDict(
                {"w1": torch.nn.Linear(hidden, width, bias=False), "w2": torch.nn.Linear(width, hidden, bias=False)})
                for _ in range(n))
            self.gate = torch.nn.Linear(hidden, n, bias=False)

        def forward(self, x):
            flat = x.reshape(-1, x.shape[-1])
            chosen = self.gate(flat).argmax(-1)
            out = torch.zeros_like(flat)
            for e, expert in enumerate(self.experts):
                rows = torch.where(chosen == e)[0]
                out[rows] = expert["w2"](torch.relu(expert["w1"](flat[rows])))
            return out.reshape(x.shape)
    model.model.layers[1].mlp = ListExperts(model.config.hidden_size, 16, 4)
    stock = copy.deepcopy(model)
    index = discover_sites(model, "all")
    assert {f"model.layers.1.mlp.experts.{e}.w2" for e in range(4)} <= set(index.by_name)
    assert not coverage.check(model).partial
    with torch.no_grad():
        stock.model.layers[1].mlp.experts[3]["w2"].weight[6] = 0
        reference = stock(input_ids=ids, use_cache=False).logits
        with mask_neurons(model, index, [Neuron("model.layers.1.mlp.experts.3.w2", 6)]):
            masked = model(input_ids=ids, use_cache=False).logits
        assert not torch.allclose(masked, model(input_ids=ids, use_cache=False).logits, atol=1e-6)
    assert torch.allclose(masked, reference, atol=2e-5)


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss", "llama4_text"])
@pytest.mark.parametrize("samples", [6, "auto"])
def test_stage1_from_routed_rows_equals_the_dense_accumulation(family, samples, ids, monkeypatch):
    """Expert neurons accumulate |A_clean - A_noisy| from their routed rows alone (the others add
    |A_clean|): the same scores as over the dense tensor with zeros, within float32 rounding."""
    import lesion.method.rankers as stage1
    model = make_tiny_moe(family)
    index = discover_sites(model)
    options = dict(samples=samples, max_samples=20, batch_size=4, progress=False)
    routed = rank_by_noise(model, ids[:1], index, **options)
    monkeypatch.setattr(stage1.experts, "reads_routed", lambda model, name: False)
    dense = rank_by_noise(model, ids[:1], index, **options)
    torch.testing.assert_close(routed.values, dense.values, rtol=1e-5, atol=1e-6)
    assert torch.equal(routed.positions, dense.positions)
    if samples == "auto":
        assert routed.adaptive["samples_used"] == dense.adaptive["samples_used"]
