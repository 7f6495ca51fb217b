"""lesion harden: exact on every supported family, refused in one line where it cannot be exact,
removes a planted single-channel heel, and writes a folder plain transformers loads."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import COMMON, FAMILIES, make_tiny
from lesion.errors import LesionError, ParameterError
from lesion.harden import SUPPORTED, harden_weights
from lesion.harden.rotations import METHODS, hadamard, randomized_hadamard, residual_rotation, spread
from lesion.harden.transform import Heads, _plane_rotation

ROTATABLE = sorted(f for f in FAMILIES if f in SUPPORTED)
REFUSED = sorted(f for f in FAMILIES if f not in SUPPORTED)
# float32 forward of a 2-layer model, weights transformed in float64 and rounded once: the
# hardened logits differ from the original's by rounding only (measured: about 2e-7).
LOGIT_TOLERANCE = 1e-5


def scrambled(family: str, tied: bool = False, **config) -> torch.nn.Module:
    """A tiny model whose norms are not ones and whose biases are not zero, so folding matters."""
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(family, **{**COMMON, **FAMILIES.get(family, {}), **config},
                               tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.5 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", ROTATABLE)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("heads", [False, True])
def test_hardened_logits_equal_original(family, method, heads, ids):
    model = scrambled(family)
    hardened = copy.deepcopy(model)
    harden_weights(hardened, method, seed=3, heads=heads, qk_angles="random")
    assert not torch.equal(hardened.model.embed_tokens.weight, model.model.embed_tokens.weight)
    torch.testing.assert_close(logits(hardened, ids), logits(model, ids), atol=LOGIT_TOLERANCE, rtol=0)
    norms = [p for n, p in hardened.named_parameters() if n.endswith("norm.weight") or "layernorm" in n]
    assert norms and all(bool((p == 1).all()) for p in norms)


def test_heads_rotate_values_and_queries(ids):
    plain, rotated = scrambled("llama"), scrambled("llama")
    harden_weights(plain, "rotate", seed=1)
    info = harden_weights(rotated, "rotate", seed=1, heads=True, qk_angles="random")
    attn_p, attn_r = plain.model.layers[0].self_attn, rotated.model.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
        assert not torch.allclose(getattr(attn_p, name).weight, getattr(attn_r, name).weight)
    assert info.heads.queries_keys_layers == 2
    torch.testing.assert_close(logits(rotated, ids), logits(plain, ids), atol=LOGIT_TOLERANCE, rtol=0)


def calibration_texts() -> dict[str, torch.Tensor]:
    """Token ids the fitted query/key angles are fitted on (a tiny model has no tokenizer)."""
    g = torch.Generator().manual_seed(7)
    return {f"t{i}": torch.randint(3, 64, (1, 12), generator=g) for i in range(2)}


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text"])
@pytest.mark.parametrize("qk_angles", ["fitted", "random"])
def test_head_rotations_keep_the_function(family, qk_angles, ids):
    """The per-head value/output rotations and the query/key plane rotations (shared by a key/value
    group) keep the logits within float32 rounding: with q/k biases (qwen2), and with Gemma 3's
    q_norm/k_norm, where only the planes its norms leave free turn and the stream is not rotated."""
    model = scrambled(family)
    if family == "gemma3_text":  # equal scales in each plane's two channels: the norm leaves the planes free
        with torch.no_grad():
            for layer in model.model.layers:
                for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                    half = norm.weight.shape[0] // 2
                    norm.weight[half:] = norm.weight[:half]
    hardened = copy.deepcopy(model)
    info = harden_weights(hardened, "rotate", seed=2, heads=True, qk_angles=qk_angles,
                          calibration=calibration_texts() if qk_angles == "fitted" else None)
    assert info.heads.qk_planes > 0 and info.heads.queries_keys_layers == 2
    assert info.residual is (family != "gemma3_text")
    attn, before = hardened.model.layers[0].self_attn, model.model.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
        assert not torch.allclose(getattr(attn, name).weight, getattr(before, name).weight)
    torch.testing.assert_close(logits(hardened, ids), logits(model, ids), atol=LOGIT_TOLERANCE, rtol=0)


def test_gemma3_text_needs_heads():
    with pytest.raises(LesionError):
        harden_weights(scrambled("gemma3_text"), "rotate", seed=0)


def test_fitted_angles_need_calibration():
    with pytest.raises(ParameterError) as e:
        harden_weights(scrambled("llama"), "rotate", seed=0, heads=True, qk_angles="fitted")
    assert e.value.parameter == "calibration"


def test_qwen3_qk_norm_kept_exact(ids):
    model = scrambled("qwen3", hidden_size=32, intermediate_size=64, num_key_value_heads=2, head_dim=8)
    hardened = copy.deepcopy(model)
    info = harden_weights(hardened, "hadamard", seed=0, heads=True, qk_angles="random")
    assert info.heads.queries_keys_layers == 0  # its per-channel q/k norm forbids the plane rotations
    torch.testing.assert_close(logits(hardened, ids), logits(model, ids), atol=LOGIT_TOLERANCE, rtol=0)


def test_tied_embeddings_are_untied_when_the_final_norm_needs_it(ids):
    model = scrambled("llama", tied=True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    hardened = copy.deepcopy(model)
    info = harden_weights(hardened, "rotate", seed=0)
    assert info.untied_embeddings and hardened.config.tie_word_embeddings is False
    assert hardened.lm_head.weight.data_ptr() != hardened.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(logits(hardened, ids), logits(model, ids), atol=LOGIT_TOLERANCE, rtol=0)


@pytest.mark.parametrize("family", REFUSED)
def test_refused_in_one_line(family):
    model = make_tiny(family)
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(LesionError) as e:
        harden_weights(model, "rotate", seed=0)
    message = str(e.value)
    assert "\n" not in message and family in message
    assert ("residual add" in message) if family.startswith("gemma") else ("mean" in message)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # refused before any change


@pytest.mark.parametrize("n", [8, 12, 576, 1536])
@pytest.mark.parametrize("method", METHODS)
def test_rotations_are_orthogonal_and_seeded(n, method):
    q = residual_rotation(n, method, seed=5)
    torch.testing.assert_close(q @ q.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(q, residual_rotation(n, method, seed=5))
    assert not torch.equal(q, residual_rotation(n, method, seed=6))


def test_hadamard_of_a_power_of_two_is_flat():
    q = randomized_hadamard(64, torch.Generator().manual_seed(0))
    assert torch.allclose(q.abs(), torch.full_like(q, 1 / 8))
    assert spread(q, 7).flatness == pytest.approx(1.0)


@pytest.mark.parametrize("n", [12, 28, 36, 576, 896, 1536])
def test_hadamard_of_a_model_width_is_flat(n):
    """Paley's construction times Sylvester's: every residual channel spread exactly evenly."""
    h = hadamard(n)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(h.abs(), torch.full_like(h, n ** -0.5), atol=1e-15, rtol=0)
    q = randomized_hadamard(n, torch.Generator().manual_seed(1))
    assert spread(q, n // 3).top_share == pytest.approx(1 / n)


def test_hadamard_falls_back_where_none_is_built():
    assert hadamard(6) is None and hadamard(18) is None  # no Hadamard of order 6; 18 = 2 x 9 is not a 4k
    q = randomized_hadamard(18, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q @ q.T, torch.eye(18, dtype=torch.float64), atol=1e-12, rtol=0)


def test_unknown_method_refused():
    with pytest.raises(ParameterError, match="^method must be one of") as raised:
        residual_rotation(8, "svd", 0)
    assert raised.value.parameter == "method"  # the CLI shows it as --method


def test_plane_rotation_commutes_with_rope():
    heads = Heads(n_heads=1, n_kv=1, head_dim=8, rotary_dim=8)
    r = _plane_rotation(heads, torch.tensor([0.3, 1.1, 2.0, -0.7], dtype=torch.float64))
    rope = _plane_rotation(heads, torch.tensor([0.9, 0.2, 0.05, 0.01], dtype=torch.float64))
    torch.testing.assert_close(r @ rope, rope @ r)
    torch.testing.assert_close(r @ r.T, torch.eye(8, dtype=torch.float64))


def planted_heel(model: torch.nn.Module, channel: int = 5, size: float = 200.0) -> None:
    """A massive residual channel written by one neuron, as in SmolLM2: embedding channel 9 is 1 for
    every token, so MLP neuron 3 of layer 0 (gate and up read channel 9) fires on every token, and
    down_proj writes it into residual channel 5 times ``size``."""
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 9] = 1.0
        mlp = model.model.layers[0].mlp
        for reader in (mlp.gate_proj, mlp.up_proj):
            reader.weight[3] = 0
            reader.weight[3, 9] = 5.0
        mlp.down_proj.weight[:, 3] = 0
        mlp.down_proj.weight[channel, 3] = size


@pytest.mark.parametrize("method", METHODS)
def test_planted_single_channel_heel_is_removed(method, ids):
    from lesion.masking.ablation import baseline_nll, masked_nll
    from lesion.harden.measure import residual_outliers
    from lesion.model.neurons import Neuron, discover_sites

    model = scrambled("llama", hidden_size=64)
    planted_heel(model)
    hardened = copy.deepcopy(model)
    harden_weights(hardened, method, seed=0)
    torch.testing.assert_close(logits(hardened, ids), logits(model, ids), atol=LOGIT_TOLERANCE, rtol=0)
    before, after = residual_outliers(model, ids), residual_outliers(hardened, ids)
    assert before.channel == 5 and before.max_ratio > 1e4
    assert after.max_ratio < 10  # spread over all 64 channels (measured: 3.7 rotate, 1.00 hadamard)
    heel = [Neuron("model.layers.0.mlp.down_proj", 5)]
    changes = []
    for m in (model, hardened):
        changes.append(abs(masked_nll(m, ids, discover_sites(m, "all"), [heel])[0] - baseline_nll(m, ids)))
    # measured: 0.157 before; 0.005 (rotate) and 0.010 (hadamard) after
    assert changes[1] < changes[0] / 10


def run_cli(*argv) -> int:
    from lesion.cli import main
    return main(["harden", "--quiet", *map(str, argv)])


@pytest.mark.slow
def test_cli_writes_a_folder_plain_transformers_loads(tiny_dir, tmp_path, ids):
    out = tmp_path / "hardened"
    assert run_cli("--model", tiny_dir, "--method", "hadamard", "--seed", "7", "--out", out) == 0
    original = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    hardened = AutoModelForCausalLM.from_pretrained(out).eval()  # no lesion code involved
    torch.testing.assert_close(logits(hardened, ids), logits(original, ids), atol=LOGIT_TOLERANCE, rtol=0)
    assert (out / "tokenizer.json").is_file() and list(out.glob("*.safetensors"))
    record = json.loads((out / "lesion-harden.json").read_text())
    assert record["rotation"]["method"] == "hadamard" and record["rotation"]["seed"] == 7
    assert len(record["source_fingerprint"]) == 32
    proof = record["proof"]["float32"]
    assert proof["max_ppl_rel_diff"] < 1e-4 and proof["generations_identical"]
    assert {"before", "after"} <= set(record["heel"]) and "bfloat16" in record["proof"]
    assert "| Delta masking" in (out / "harden.md").read_text()
    # the same seed gives the same weights bit for bit: a second run replaces the folder with its twin
    first = {n: p.clone() for n, p in hardened.named_parameters()}
    assert run_cli("--model", tiny_dir, "--method", "hadamard", "--seed", "7", "--out", out) == 0
    again = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(p, first[n]) for n, p in again.named_parameters())


def test_cli_refuses_in_one_line(tmp_path, capsys):
    from conftest import save_tiny
    gemma = save_tiny(tmp_path / "gemma", "gemma3_text")
    capsys.readouterr()  # the save's own progress bar is not the refusal
    assert run_cli("--model", gemma, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "residual add" in err and not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert run_cli("--out", tmp_path / "busy") == 2
    assert capsys.readouterr().err.count("\n") == 1 and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert run_cli("--out", tmp_path / "x", "--max-rows", "0") == 2


def test_cli_refuses_a_short_text_and_an_unknown_neuron_before_hardening(tiny_dir, tmp_path, capsys, monkeypatch):
    import lesion.harden.loaded as loaded
    monkeypatch.setattr(loaded, "harden_loaded", lambda *a, **k: pytest.fail("hardened despite a bad input"))
    assert run_cli("--model", tiny_dir, "--text", "hi", "--out", tmp_path / "a") == 2
    assert "needs more than 10" in capsys.readouterr().err
    assert run_cli("--model", tiny_dir, "--neuron", "model.layers.99.mlp.down_proj:1", "--out", tmp_path / "b") == 2
    assert "not a neuron site" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_report_masks_the_fixed_basis_heel_on_the_hardened_model(tiny_dir, tmp_path):
    """--report searches the MLP's intermediate neurons of the original and masks that set on the
    hardened model: no rotation moves those neurons, so its Delta is the same after."""
    out = tmp_path / "reported"
    assert run_cli("--model", tiny_dir, "--method", "hadamard", "--heads", "--report", "--max-rows", "30",
                   "--samples", "3", "--max-neurons", "20", "--out", out) == 0
    heel = json.loads((out / "lesion-harden.json").read_text())["heel"]
    before, after = heel["before"]["fixed_basis"], heel["after"]["fixed_basis"]
    assert before["all_neurons"] and all(".mlp." in n and ("act" in n or "gate" in n or "up" in n)
                                         for n in before["all_neurons"])
    assert after["same_set"] and after["n"] == len(before["all_neurons"])
    assert after["delta"] == pytest.approx(before["delta"], rel=1e-4, abs=1e-6)
    assert after["n"] == len(before["all_neurons"]) and after["same_set"]
    moved = heel["after"]["original_heel"]  # the original's heel, by name, in the rotated basis
    assert moved["same_set"] and moved["n"] == len(heel["before"]["search"]["all_neurons"]) >= 1
    assert math.isfinite(moved["delta"])
    report = (out / "harden.md").read_text()
    assert "which no rotation moves" in report and "the original's heel above, masked as one set" in report


def test_quiet_save_hides_transformers_bar_and_puts_it_back(tmp_path, monkeypatch):
    """--quiet: transformers' "Writing model shards" bar is off while saving, and on again after."""
    from transformers.utils import logging as hf_logging

    from lesion.harden.folder import _save_model
    model, seen = scrambled("llama"), []
    monkeypatch.setattr(type(model), "save_pretrained",
                        lambda self, *a, **k: seen.append(hf_logging.is_progress_bar_enabled()))
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        _save_model(model, tmp_path, progress=False)
        _save_model(model, tmp_path, progress=True)
        assert seen == [False, True] and hf_logging.is_progress_bar_enabled()
    finally:
        if not was:
            hf_logging.disable_progress_bar()


def test_report_says_what_a_surviving_fixed_basis_heel_means():
    from dataclasses import replace

    from lesion.harden.report import verdict
    from lesion.results.harden import HeelComparison, HeelProfile, Outliers, SameSet, SetSummary, Where

    where = Where(modules={"gate_proj": 2}, layers={"1": 2})
    found = SetSummary(n=2, reached=True, delta=1.2678, neurons=("a:1", "a:2"), where=where, all_neurons=("a:1", "a:2"))
    fixed = SameSet(n=2, same_set=True, delta=1.27, reached=True, neurons=found.neurons, where=where, rows=1)
    outliers = Outliers(layers=(), max_ratio=1.0, layer=0, channel=0)
    heel = HeelComparison(text_sha256="0" * 64, before=HeelProfile(outliers, (), fixed_basis=found),
                          after=HeelProfile(outliers, (), fixed_basis=fixed), budget=None)
    assert "at most 2 neurons in any basis" in verdict(heel)[0]
    assert verdict(replace(heel, after=HeelProfile(outliers, (), fixed_basis=replace(fixed, reached=False)))) == []
    assert verdict(replace(heel, before=HeelProfile(outliers, ()), after=HeelProfile(outliers, ()))) == []


@pytest.mark.parametrize("family", ROTATABLE)
def test_cast_copy_equals_the_folder_loaded_in_bfloat16(family, ids, tmp_path):
    """The bfloat16 proof's copy is built without a second float32 model; it must compute exactly
    what the hardened folder loaded in bfloat16 computes (rotary buffers stay float32, as a load
    keeps them; deepcopy-then-cast would round them to bfloat16)."""
    from lesion.harden.proof import cast_copy
    model = scrambled(family)
    harden_weights(model, "hadamard", seed=0, heads=True, qk_angles="random")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    low = cast_copy(model, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert torch.equal(logits(low, ids), logits(loaded, ids))
