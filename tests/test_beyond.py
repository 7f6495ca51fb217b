"""Minimal sets, the mechanism probes and the tamper check."""
import json
import shutil

import pytest
import torch

from lesion import Neuron, discover_sites, hooked
from lesion.cli import main
from lesion.hooks import mask_neurons, set_neurons
from lesion.loading import load_model
from lesion.mechanism import frozen_norms, mechanism, super_weights
from lesion.metrics import delta, mean_nll
from lesion.minimal import exhaustive_minimum, minimal_sets, prune
from lesion.pipeline import Study
from lesion.search import masked_nll
from lesion.verify import fingerprints, verify

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def study(tiny_dir):
    return Study.create(load_model(tiny_dir), TEXT)


def test_exhaustive_minimum_agrees_with_brute_force(study):
    from itertools import combinations
    pool = study.index.neurons(range(0, 400, 50))  # 8 neurons of various modules
    clean = mean_nll(study.lm.model, study.input_ids).item()
    all_sets = [list(c) for s in range(1, 4) for c in combinations(pool, s)]
    deltas = [delta(v, clean) for v in masked_nll(study.lm.model, study.input_ids, study.index, all_sets)]
    epsilon = sorted(deltas)[-5]  # a threshold a few sets reach
    smallest = min(len(s) for s, d in zip(all_sets, deltas) if d >= epsilon)
    found, found_delta, rows = exhaustive_minimum(study, pool, epsilon, clean, max_size=3, progress=False)
    assert len(found) == smallest and found_delta >= epsilon
    assert rows <= len(all_sets)


def test_pruned_set_is_irreducible(study):
    clean = mean_nll(study.lm.model, study.input_ids).item()
    greedy = study.index.neurons(range(0, 600, 40))
    full = delta(masked_nll(study.lm.model, study.input_ids, study.index, [greedy])[0], clean)
    epsilon = full * 0.8
    kept, kept_delta, _ = prune(study, greedy, epsilon, clean)
    assert set(kept) <= set(greedy) and kept_delta >= epsilon
    for i in range(len(kept)):  # no single neuron can go
        rest = kept[:i] + kept[i + 1:]
        if rest:
            assert delta(masked_nll(study.lm.model, study.input_ids, study.index, [rest])[0], clean) < epsilon
    result = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), max_size=2, progress=False)
    assert len(result.irreducible) == len(kept)


def test_set_neurons_overwrites_only_that_channel(study):
    model, ids, index = study.lm.model, study.input_ids, study.index
    name = "model.layers.0.mlp.down_proj"
    values = torch.arange(float(ids.shape[1]))
    seen = {}
    with set_neurons(model, index, {Neuron(name, 4): values}):
        with hooked(model, {name: lambda out: seen.__setitem__("out", out.detach().clone())}):
            mean_nll(model, ids)
    assert torch.equal(seen["out"][0, :, 4], values)
    with set_neurons(model, index, {Neuron(name, 4): 0.0}):
        zero = mean_nll(model, ids)
    with mask_neurons(model, index, [Neuron(name, 4)]):
        assert torch.equal(zero, mean_nll(model, ids))


def test_frozen_norms_without_a_lesion_change_nothing(study):
    model, ids = study.lm.model, study.input_ids
    before = mean_nll(model, ids)
    with frozen_norms(model, ids):
        torch.testing.assert_close(mean_nll(model, ids), before)
    assert all(not m._forward_hooks for m in model.modules())


def test_super_weight_is_found_when_planted(tiny_dir, tmp_path):
    lm = load_model(tiny_dir)
    with torch.no_grad():
        lm.model.get_submodule("model.layers.1.mlp.down_proj").weight[7, 11] = 50.0
    top = super_weights(lm.model, discover_sites(lm.model, "all"), top=1)[0]
    assert (top["module"], top["row"], top["column"]) == ("model.layers.1.mlp.down_proj", 7, 11)


def test_mechanism_report_shape(study):
    critical = [Neuron("model.layers.0.mlp.down_proj", 3)]
    result = mechanism(study, critical, other_text="A different sentence about rivers, mountains and the sea.")
    assert set(result["positions"]) == {"all positions", "position 0 only", "all but position 0"}
    assert set(result["ablations"]) == {"zero", "mean", "resample"}
    assert result["ablations"]["zero"] == pytest.approx(result["positions"]["all positions"])
    assert result["neurons"][0]["neuron"] == str(critical[0]) and result["neurons"][0]["feeding"]


def _tamper(src, dst, fn):
    shutil.copytree(src, dst)
    lm = load_model(str(dst))
    with torch.no_grad():
        fn(lm.model)
    lm.model.save_pretrained(dst)
    return str(dst)


def test_verify_tells_intact_zeroed_scaled_altered(tiny_dir, tmp_path):
    lm = load_model(tiny_dir)
    index = discover_sites(lm.model, "all")
    neuron = Neuron("model.layers.0.mlp.down_proj", 5)
    reference = fingerprints(lm.model, index, [neuron], "float32")
    assert all(c.status == "intact" for c in verify(lm.model, index, reference))
    row = lambda m: m.get_submodule(neuron.module).weight[5]  # noqa: E731
    for change, status in [(lambda m: row(m).zero_(), "zeroed"), (lambda m: row(m).mul_(0.5), "scaled"),
                           (lambda m: row(m).add_(0.01), "altered")]:
        copy = load_model(tiny_dir)
        with torch.no_grad():
            change(copy.model)
        checks = verify(copy.model, index, reference)
        assert [c.status for c in checks if c.slice.endswith("weight[5,:]")] == [status]
        assert all(c.status == "intact" for c in checks if not c.slice.endswith("weight[5,:]"))


def test_verify_cli_exit_codes_on_saved_models(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    critical = json.loads((run / "critical.json").read_text())
    first = Neuron.parse(critical["neurons"][0])
    assert main(["verify", "--model", tiny_dir, "--against", str(run / "critical.json")]) == 0
    tampered = _tamper(tiny_dir, tmp_path / "tampered",
                       lambda m: m.get_submodule(first.module).weight[first.channel].mul_(3.0))
    assert main(["verify", "--model", tampered, "--against", str(run / "critical.json"),
                 "--out", str(tmp_path / "v.json")]) == 3
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "scaled" in out
    assert json.loads((tmp_path / "v.json").read_text())["intact"] is False
    assert main(["verify", "--model", tiny_dir, "--against", str(tmp_path / "nowhere" / "critical.json")]) == 2


def test_minimal_and_mechanism_cli(tiny_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    assert main(["minimal", "--model", tiny_dir, "--run", str(run), "--pool", "6", "--quiet"]) == 0
    result = json.loads((run / "minimal-eps0.001.json").read_text())
    assert len(result["irreducible"]) <= len(result["greedy"])
    assert result["optimum"] is None or len(result["optimum"]) <= len(result["irreducible"])
    assert main(["mechanism", "--model", tiny_dir, "--run", str(run)]) == 0
    assert "normalisation" in json.loads((run / "mechanism.json").read_text())
