"""Mechanism probes: value ablations, frozen norms, outliers and their causal tests, and the
real model's critical neuron."""
import copy
import json
import math

import pytest
import torch

from lesion.masking.masks import hooked
from lesion.model.neurons import Neuron, discover_sites
from lesion.cli import main
from lesion.masking.masks import mask_neurons, set_neurons
from lesion.masking.ablation import baseline_nll, masked_nll, set_deltas
from lesion.errors import LesionError, ParameterError, ResultError
from lesion.model.loading import load_model
from lesion.mechanism.causal import CAUSAL_DELTA, frozen_norms, lesion_tokens
from lesion.mechanism.graph import following_norm, forward_order, residual_writes
from lesion.mechanism.run import mechanism
from lesion.mechanism.detect import super_weights
from lesion.masking.metrics import mean_nll, token_nll
from lesion.results.mechanism import MechanismReport
from lesion.method.study import Study
from lesion.masking.weight_lesions import ScalarWeight, weight_deltas, zeroed_weights
from lesion.model.weights import matrix

from conftest import TEXT, make_tiny, scan_tiny

OTHER = "A different sentence about rivers, mountains and the sea."


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
    assert (top.module, top.row, top.column) == ("model.layers.1.mlp.down_proj", 7, 11)


def test_mechanism_report(study):
    critical = [Neuron("model.layers.0.mlp.down_proj", 3)]
    result = mechanism(study, critical, other_text=OTHER)
    assert set(result.positions) == {"all positions", "position 0 only", "all but position 0"}
    assert set(result.ablations) == {"zero", "mean", "resample"}
    assert result.ablations["zero"] == pytest.approx(result.positions["all positions"])
    assert set(result.normalisation) == {"recomputed", "frozen: following norm only", "frozen: every norm"}
    assert result.following_norms == ("model.layers.1.input_layernorm",)
    profile = result.neurons[0]
    assert profile.neuron == str(critical[0]) and profile.feeding and profile.leaving
    assert 0 <= profile.argmax_position < study.input_ids.shape[1]
    assert profile.in_top_massive == (str(critical[0]) in {m.neuron for m in result.massive_activations})


def test_mechanism_cli(tiny_dir, tmp_path, capsys, refused):
    run = scan_tiny(tiny_dir, tmp_path / "run")
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run)]) == 0
    result = json.loads((run / "mechanism.json").read_text())
    size = len(json.loads((run / "critical.json").read_text())["neurons"])
    assert size > 12 and len(result["neurons"]) == result["neurons_tested"] == 12  # --max-neurons default
    assert result["critical_size"] == size and result["stopped"] == "complete"
    out = capsys.readouterr().out
    assert "among the model's outliers" in out and f"12 of {size} critical neurons tested" in out
    assert MechanismReport.load(run / "mechanism.json").to_dict() == MechanismReport.from_dict(result).to_dict()
    critical = json.loads((run / "critical.json").read_text())
    (run / "critical.json").write_text(json.dumps({**critical, "neurons": [], "n": 0, "reached": False}))
    (run / "fingerprints.json").unlink()  # as a scan without a set leaves it (else the folder is inconsistent)
    refused(["mechanism", "--model", tiny_dir, "--run", str(run)], ResultError)


# --- causal tests of the labels -------------------------------------------------------------

WEIGHT_LESIONS = {"llama": "model.layers.1.mlp.down_proj", "gpt2": "transformer.h.1.mlp.c_proj",
                  "opt": "model.decoder.layers.1.fc2", "gemma3_text": "model.layers.0.self_attn.o_proj"}


@pytest.mark.parametrize("family", sorted(WEIGHT_LESIONS))
def test_zeroed_weight_hook_computes_the_model_with_that_weight_zeroed(family, ids):
    model, module = make_tiny(family), WEIGHT_LESIONS[family]
    with torch.no_grad():  # (out, in) view: GPT-2's Conv1D stores the transpose
        # Large enough to matter: a random 0.02 would change the losses by less than the tolerance.
        matrix(model.get_submodule(module))[3, 5:7] = torch.tensor([5.0, -4.0])
        edited = copy.deepcopy(model)
        matrix(edited.get_submodule(module))[3, 5] = 0
        expected = token_nll(edited, ids)
        matrix(edited.get_submodule(module))[3, 6] = 0
        expected_both = token_nll(edited, ids)
        clean = token_nll(model, ids)
        # Three batch rows, three lesions: none, one weight, two weights of the same row.
        with zeroed_weights(model, [[], [ScalarWeight(module, 3, 5)],
                                    [ScalarWeight(module, 3, 5), ScalarWeight(module, 3, 6)]]):
            rows = token_nll(model, ids.expand(3, -1))
    assert (expected - clean).abs().max() > 1e-2  # the weight matters, so the comparison means something
    torch.testing.assert_close(rows[1], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rows[2], expected_both[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(rows[0], clean[0])  # an empty row is untouched, bit for bit


def _state_bytes(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_weight_deltas_retry_in_halves_when_memory_runs_out(tiny_llama, ids, monkeypatch):
    module = "model.layers.1.mlp.down_proj"
    weights = [ScalarWeight(module, r, r + 1) for r in range(4)]
    clean = mean_nll(tiny_llama, ids).item()
    expected = weight_deltas(tiny_llama, ids, weights, clean, max_rows=1)
    real_forward, seen = tiny_llama.forward, []

    def small_memory(*args, **kwargs):
        seen.append(kwargs["input_ids"].shape[0])
        if seen[-1] > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_llama, "forward", small_memory)
    assert weight_deltas(tiny_llama, ids, weights, clean, max_rows=4) == pytest.approx(expected, abs=1e-6)
    assert seen == [4, 2, 1, 1, 2, 1, 1]
    assert all(not m._forward_hooks for m in tiny_llama.modules())


def test_weight_check_leaves_the_model_bit_identical_also_after_an_exception(tiny_llama, ids):
    module = "model.layers.1.mlp.down_proj"
    before, logits = _state_bytes(tiny_llama), tiny_llama(input_ids=ids).logits.detach()
    clean = mean_nll(tiny_llama, ids).item()
    weight_deltas(tiny_llama, ids, [ScalarWeight(module, 1, 2), ScalarWeight(module, 4, 8)], clean)
    with pytest.raises(RuntimeError, match="inside"), zeroed_weights(tiny_llama, [[ScalarWeight(module, 1, 2)]]):
        assert not torch.equal(tiny_llama(input_ids=ids).logits, logits)  # the lesion is live inside
        raise RuntimeError("inside")
    assert all(not m._forward_hooks for m in tiny_llama.modules())
    after = _state_bytes(tiny_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(tiny_llama(input_ids=ids).logits, logits)


def test_zeroed_weights_refuses_a_weight_that_does_not_exist(tiny_llama):
    with pytest.raises(LesionError, match="out of range"), \
            zeroed_weights(tiny_llama, [[ScalarWeight("model.layers.1.mlp.down_proj", 32, 0)]]):
        pass
    with pytest.raises(LesionError, match="no 2-D weight"), \
            zeroed_weights(tiny_llama, [[ScalarWeight("model.layers.1.input_layernorm", 0, 0)]]):
        pass


REPEATED = "a" * 24  # one character again and again: one token at every position
CAUSAL = ("model.layers.1.mlp.down_proj", 5, 9)
HARMLESS = ("model.layers.0.mlp.down_proj", 3, 7)


@pytest.fixture(scope="module")
def planted(tiny_dir):
    """A tiny Llama with two outlier weights, on a text of one repeated token:
    - a harmless one, the largest of all: W[3, 7] = 100 in layer 0's down_proj, whose input
      channel 7 is dead (its gate row is zero, so silu(0) * up = 0);
    - a causal one, W[5, 9] = 50 in layer 1's down_proj: channel 9 of the MLP is tuned to
      fire on the text, so the weight writes a massive value into residual channel 5, which
      the LM head reads as the repeated token. With it the model predicts the text almost
      perfectly; zeroing it leaves a random model (Delta about log10(128))."""
    lm = load_model(tiny_dir)
    model = lm.model
    study = Study.create(lm, REPEATED)
    token = int(study.input_ids[0, -1])
    mlp_in = {}
    with hooked(model, {"model.layers.1.mlp.gate_proj": lambda m, i, o: mlp_in.__setitem__("x", i[0][0])},
                raw=True):
        mean_nll(model, study.input_ids)
    x = mlp_in["x"].mean(dim=0)
    with torch.no_grad():
        layers = model.model.layers
        layers[0].mlp.gate_proj.weight[7] = 0
        layers[0].mlp.down_proj.weight[3, 7] = 100.0
        direction = 4 * x / x.pow(2).sum()  # gate and up of channel 9 read about 4 on this text
        layers[1].mlp.gate_proj.weight[9] = direction
        layers[1].mlp.up_proj.weight[9] = direction
        layers[1].mlp.down_proj.weight[5, 9] = 50.0
        model.lm_head.weight[token, 5] = 5.0
    return study


def test_mechanism_spent_budget_keeps_what_finished(study):
    critical = [Neuron("model.layers.0.mlp.down_proj", 3)]
    report = mechanism(study, critical, other_text=OTHER, time_budget=1e-9)
    assert report.stopped == "budget" and not report.finished
    assert report.massive_activations and report.super_weights  # the first step finished
    assert report.positions == {} and report.neurons == () and report.neurons_tested == 0
    for bad in ({"time_budget": -1}, {"max_neurons": -1}):
        with pytest.raises(ParameterError) as refused:
            mechanism(study, critical, other_text=OTHER, **bad)
        assert refused.value.parameter == next(iter(bad))


def test_mechanism_interrupted_keeps_what_finished(study, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("lesion.mechanism.run.lesion_tokens", interrupt)
    report = mechanism(study, [Neuron("model.layers.0.mlp.down_proj", 3)], other_text=OTHER)
    assert report.stopped == "interrupted"
    assert set(report.positions) == {"all positions", "position 0 only", "all but position 0"}
    assert report.normalisation == {} and report.neurons == ()
    assert all(not m._forward_hooks for m in study.lm.model.modules())


def test_mechanism_max_neurons_tests_the_first_ones_and_lesions_the_whole_set(study):
    critical = [Neuron("model.layers.0.mlp.down_proj", 3), Neuron("model.layers.1.mlp.gate_proj", 5)]
    report = mechanism(study, critical, other_text=OTHER, max_neurons=1)
    whole = mechanism(study, critical, other_text=OTHER)
    assert [n.neuron for n in report.neurons] == [str(critical[0])] and report.critical_size == 2
    assert report.positions == pytest.approx(whole.positions)
    assert report.neurons[0].alone.to_dict() == pytest.approx(whole.neurons[0].alone.to_dict())


def test_mechanism_cli_time_budget_writes_what_finished(tiny_dir, tmp_path, capsys):
    run = scan_tiny(tiny_dir, tmp_path / "run")
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run), "--time-budget", "1e-9"]) == 0
    result = json.loads((run / "mechanism.json").read_text())
    assert result["stopped"] == "budget" and result["neurons"] == [] and result["massive_activations"]
    assert "stopped by --time-budget" in capsys.readouterr().out
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run), "--time-budget", "-3"]) == 2
    assert "--time-budget must be a finite number of seconds > 0" in capsys.readouterr().err


def test_planted_super_weight_label_follows_the_causal_test(planted):
    critical = Neuron(CAUSAL[0], CAUSAL[1])
    result = mechanism(planted, [critical], other_text=OTHER)
    by_place = {(w.module, w.row, w.column): w for w in result.super_weights}
    causal, harmless = by_place[CAUSAL], by_place[HARMLESS]
    assert harmless.ratio_to_median > causal.ratio_to_median  # magnitude ranks the harmless one first
    assert result.super_weights[0] is harmless
    assert harmless.delta_zeroed == pytest.approx(0, abs=1e-6) and not harmless.causal
    assert causal.delta_zeroed >= CAUSAL_DELTA and causal.causal
    profile = result.neurons[0]
    assert profile.largest_weight.column == CAUSAL[2] and profile.largest_weight.causal
    assert profile.carrying_weight.column == CAUSAL[2]
    assert profile.carrying_weight.delta_zeroed == causal.delta_zeroed
    assert any(label.startswith("super weight: W[5, 9]") and label.endswith(", causal")
               for label in profile.labels)


def test_position_zero_check_zeroes_only_the_first_token(planted):
    """The planted neuron is massive at every position of the repeated text: zeroing it
    everywhere collapses the model, zeroing it at position 0 alone costs one token's worth."""
    model, ids = planted.lm.model, planted.input_ids
    neuron = Neuron(CAUSAL[0], CAUSAL[1])
    result = mechanism(planted, [neuron], other_text=OTHER)
    alone = result.neurons[0].alone
    clean = baseline_nll(model, ids)
    with mask_neurons(model, planted.index, [neuron], positions=slice(0, 1)):
        expected = (mean_nll(model, ids).item() - clean) / math.log(10)
    assert alone.position0 == pytest.approx(expected, abs=1e-6)
    assert alone.zero >= CAUSAL_DELTA > 5 * alone.position0
    # The table of massive activations carries the same test.
    index = discover_sites(model, "all")
    top = [Neuron.parse(m.neuron) for m in result.massive_activations]
    expected = set_deltas(model, ids, index, [[n] for n in top], clean, ablation="position0")
    assert [m.delta_position0 for m in result.massive_activations] == pytest.approx(expected, abs=1e-6)


def test_residual_write_of_each_kind(study):
    model, ids = study.lm.model, study.input_ids
    index = discover_sites(model, "all")
    order = forward_order(model, ids)
    down, gate, q = (Neuron("model.layers.0.mlp.down_proj", 3), Neuron("model.layers.0.mlp.gate_proj", 10),
                     Neuron("model.layers.1.self_attn.q_proj", 4))
    writes = residual_writes(model, ids, index, [down, gate, q], order)
    assert writes[0].neuron == str(down) and writes[0].how == "its own output"
    # A gate neuron writes through its block's down_proj, mostly where that column's |w| is largest.
    w_down = model.get_submodule("model.layers.0.mlp.down_proj").weight
    assert writes[1].writer == "model.layers.0.mlp.down_proj"
    assert writes[1].channel == int(w_down[:, gate.channel].abs().argmax())
    assert writes[2].writer == "model.layers.1.self_attn.o_proj"
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text", "gpt2", "opt"])
def test_frozen_norms_give_finite_losses_on_tiny_models(family, ids):
    model = make_tiny(family)
    index = discover_sites(model, "all")
    clean = mean_nll(model, ids).item()
    # Residual writes of the first blocks: lesions that move the following norms' statistics.
    neurons = [Neuron(s.name, 0) for s in index.sites if s.kind in ("down", "o")][:4]
    with frozen_norms(model, ids):
        result = lesion_tokens(model, ids, index, neurons, clean)
    assert result.nonfinite_tokens == 0 and result.first_nonfinite_module is None
    assert math.isfinite(result.delta) and result.delta == pytest.approx(result.delta_finite_tokens)
    assert result.tokens == ids.shape[1] - 1


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_frozen_norms_score_each_batch_row_as_if_alone(family, ids):
    """The clean statistic, recorded on one row, is shared by every row of a batched scoring."""
    model = make_tiny(family)
    index = discover_sites(model, "all")
    sets = [[], [Neuron(index.sites[0].name, 1)], [Neuron(s.name, 2) for s in index.sites[-3:]]]
    with frozen_norms(model, ids):
        together = masked_nll(model, ids, index, sets)
        alone = [masked_nll(model, ids, index, [s])[0] for s in sets]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(together)) == 3  # the lesions differ, so the rows do


def test_frozen_norms_refuse_another_text_length(tiny_llama, ids):
    with frozen_norms(tiny_llama, ids), pytest.raises(LesionError, match="frozen on a text"):
        mean_nll(tiny_llama, ids[:, :-1])
    assert all(not m._forward_hooks for m in tiny_llama.modules())


def test_lesion_tokens_counts_non_finite_losses(tiny_llama, ids):
    """A lesion that writes inf is counted token by token, and the first module to emit it named."""
    index = discover_sites(tiny_llama, "all")
    module = "model.layers.1.mlp.down_proj"
    clean = mean_nll(tiny_llama, ids).item()
    # inf at position 5 of the last block: no attention after it, so only that position's loss.
    with hooked(tiny_llama, {module: lambda out: out.index_fill(1, torch.tensor([5]), float("inf"))}):
        result = lesion_tokens(tiny_llama, ids, index, [], clean)
    assert result.delta == math.inf and result.first_nonfinite_module == module
    assert result.nonfinite_tokens == 1 and result.tokens == ids.shape[1] - 1
    assert math.isfinite(result.delta_finite_tokens)


@pytest.fixture(scope="module")
def smollm():
    return Study.create(load_model("smollm2-135m"))


@pytest.mark.real
def test_real_critical_neuron_is_a_massive_activation_at_the_first_token(smollm):
    neuron = Neuron("model.layers.11.mlp.down_proj", 507)
    result = mechanism(smollm, [neuron], other_text=OTHER)
    profile = result.neurons[0]
    assert profile.massive and profile.argmax_position == 0 and profile.rank_by_max_abs == 1
    assert profile.super_weight_row
    # The collapse lives at the sink token: position 0 alone does it, the rest does not.
    assert result.positions["position 0 only"] > 4
    assert result.positions["all but position 0"] < 0.1
    assert result.normalisation["frozen: every norm"] < result.normalisation["recomputed"] - 2


@pytest.mark.real
def test_real_frozen_norms_overflow_is_counted_and_located(smollm):
    """With every norm frozen, masking the two writers of the sink channel 507 moves the
    massive activation to a later token whose clean RMS is small: nothing renormalises it,
    each gated MLP about squares it, and float32 overflows (a real overflow of the
    counterfactual, not a broken hook). The report says so instead of a bare inf."""
    model, ids = smollm.lm.model, smollm.input_ids
    index = discover_sites(model, "all")
    clean = baseline_nll(model, ids)
    pair = [Neuron("model.layers.11.mlp.down_proj", 507), Neuron("model.layers.2.mlp.down_proj", 507)]
    recomputed = lesion_tokens(model, ids, index, pair, clean)
    with frozen_norms(model, ids):
        frozen = lesion_tokens(model, ids, index, pair, clean)
    assert recomputed.nonfinite_tokens == 0 and recomputed.delta > 1
    assert frozen.delta == math.inf and frozen.nonfinite_tokens == frozen.tokens
    assert frozen.delta_finite_tokens is None
    assert frozen.first_nonfinite_module.endswith("input_layernorm")  # x^2 overflows its statistic
    growth = frozen.largest_finite_abs_output_by_layer
    assert max(growth) > 1e20 > 1e4 > max(recomputed.largest_finite_abs_output_by_layer)


def test_zeroed_weight_works_on_an_offloaded_module(tiny_dir):
    """Layer 1 on disk holds meta tensors: the weight is read from accelerate's map, never written."""
    from test_offload import OFFLOADED
    ref, off = load_model(tiny_dir), load_model(tiny_dir, device_map=OFFLOADED)
    weight = ScalarWeight("model.layers.1.mlp.down_proj", 3, 5)
    assert off.model.get_submodule(weight.module).weight.device.type == "meta"
    ids = Study.create(ref, TEXT).input_ids
    clean = mean_nll(ref.model, ids).item()
    expected = weight_deltas(ref.model, ids, [weight], clean)
    assert weight_deltas(off.model, ids, [weight], clean) == pytest.approx(expected, abs=1e-6)
    assert expected[0] != 0
