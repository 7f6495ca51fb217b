"""Tamper check: fingerprints of the weights around each critical neuron."""
import json
import shutil

import torch

from lesion.model.neurons import Neuron, discover_sites
from lesion.cli import main
from lesion.errors import InconsistentRun, ResultError
from lesion.model.loading import load_model
from lesion.replay.verify import fingerprints, verify
from lesion.model.weights import consumers, producers
from conftest import TEXT


def test_fingerprints_cover_producer_row_and_next_block_readers(tiny_dir):
    lm = load_model(tiny_dir)
    index = discover_sites(lm.model, "all")
    names = [s.name for s in producers(lm.model, Neuron("model.layers.0.mlp.down_proj", 5)) +
             consumers(lm.model, index, Neuron("model.layers.0.mlp.down_proj", 5))]
    assert "model.layers.0.mlp.down_proj.weight[5,:]" in names
    for reader in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
        assert f"model.layers.1.{reader}.weight[:,5]" in names
    assert "model.layers.1.input_layernorm.weight[5]" in names
    last = [s.name for s in consumers(lm.model, index, Neuron("model.layers.1.mlp.down_proj", 5))]
    assert "model.norm.weight[5]" in last and "lm_head.weight[:,5]" in last


def test_verify_tells_intact_zeroed_scaled_altered(tiny_dir):
    lm = load_model(tiny_dir)
    index = discover_sites(lm.model, "all")
    neuron = Neuron("model.layers.0.mlp.down_proj", 5)
    reference = fingerprints(lm.model, index, [neuron], "float32")
    assert all(c.status == "intact" for c in verify(lm.model, index, reference))
    row = lambda m: m.get_submodule(neuron.module).weight[5]
    column = lambda m: m.get_submodule("model.layers.1.mlp.up_proj").weight[:, 5]
    for change, target, status in [(lambda m: row(m).zero_(), "down_proj.weight[5,:]", "zeroed"),
                                   (lambda m: row(m).mul_(0.5), "down_proj.weight[5,:]", "scaled"),
                                   (lambda m: row(m)[3].add_(0.01), "down_proj.weight[5,:]", "altered"),
                                   (lambda m: column(m).mul_(-2.0), "up_proj.weight[:,5]", "scaled")]:
        copy = load_model(tiny_dir)
        with torch.no_grad():
            change(copy.model)
        checks = verify(copy.model, index, reference)
        assert [c.status for c in checks if c.slice.endswith(target)] == [status]
        assert all(c.status == "intact" for c in checks if not c.slice.endswith(target))


def _tamper(src, dst, fn):
    shutil.copytree(src, dst)
    lm = load_model(str(dst))
    with torch.no_grad():
        fn(lm.model)
    lm.model.save_pretrained(dst)
    return str(dst)


def test_verify_cli_exit_codes_on_saved_models(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    critical = json.loads((run / "critical.json").read_text())
    assert set(json.loads((run / "fingerprints.json").read_text())["neurons"]) == set(critical["neurons"])
    first = Neuron.parse(critical["neurons"][0])
    assert main(["verify", "--model", tiny_dir, "--against", str(run / "critical.json")]) == 0
    assert "intact" in capsys.readouterr().out
    tampered = _tamper(tiny_dir, tmp_path / "tampered",
                       lambda m: m.get_submodule(first.module).weight[first.channel].mul_(3.0))
    assert main(["verify", "--model", tampered, "--against", str(run / "critical.json"),
                 "--out", str(tmp_path / "v.json")]) == 3
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "scaled" in out
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["intact"] is False and any(c["status"] == "scaled" for c in report["checks"])
    zeroed = _tamper(tiny_dir, tmp_path / "zeroed", lambda m: m.get_submodule(first.module).weight.zero_())
    assert main(["verify", "--model", zeroed, "--against", str(run / "critical.json")]) == 3
    assert "zeroed" in capsys.readouterr().out


def test_verify_refuses_to_check_nothing(tiny_dir, tmp_path, refused):
    """verify must never say "intact" without having compared anything: exit 2 instead."""
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    against = str(run / "critical.json")
    reference = json.loads((run / "fingerprints.json").read_text())
    one_neuron = dict(list(reference["neurons"].items())[:1])
    other_neuron = {"model.layers.0.mlp.down_proj:0" if "model.layers.0.mlp.down_proj:0" not in reference["neurons"]
                    else "model.layers.0.mlp.down_proj:1": next(iter(reference["neurons"].values()))}
    cases = {
        "missing critical.json": ([str(tmp_path / "nowhere" / "critical.json")], {}, ResultError),
        "empty fingerprints": ([against], {"dtype": "float32", "neurons": {}}, ResultError),
        "no neurons key": ([against], {"dtype": "float32"}, ResultError),
        "neuron without slices": ([against], {"dtype": "float32", "neurons": {k: [] for k in reference["neurons"]}},
                                  ResultError),
        "other neurons": ([against], {"dtype": "float32", "neurons": other_neuron}, InconsistentRun),
        "dtype": ([against, "--dtype", "float32"], {**reference, "dtype": "bfloat16"}, "dtype"),
    }
    if len(reference["neurons"]) > 1:
        cases["fewer neurons"] = ([against], {"dtype": "float32", "neurons": one_neuron}, InconsistentRun)
    for name, (target, fingerprints_json, refused_by) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(fingerprints_json))
        refused(["verify", "--model", tiny_dir, "--against", *target, "--fingerprints", str(path),
                 "--out", str(tmp_path / "v.json")], refused_by)
        assert not (tmp_path / "v.json").exists()
    (run / "fingerprints.json").unlink()
    refused(["verify", "--model", tiny_dir, "--against", against], ResultError)


def test_verify_says_when_the_whole_model_differs_though_the_slices_match(tiny_dir, tmp_path, capsys):
    """The old verify said "intact" and nothing else when only weights outside the slices changed."""
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["verify", "--model", tiny_dir, "--against", str(run / "critical.json")]) == 0
    assert "whole model" not in capsys.readouterr().out
    elsewhere = _tamper(tiny_dir, tmp_path / "elsewhere",
                        lambda m: m.get_input_embeddings().weight[5, 0].add_(1.0))
    assert main(["verify", "--model", elsewhere, "--against", str(run / "critical.json"),
                 "--out", str(tmp_path / "v.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "intact" in out and "whole model's fingerprint" in out and "outside the checked slices" in out
    assert json.loads((tmp_path / "v.json").read_text())["whole_model_matches"] is False


def test_verify_refuses_a_hand_edited_critical_set(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    critical = json.loads((run / "critical.json").read_text())
    for edit, message in (({"n": len(critical["neurons"]) + 4}, "n is"), ({"delta": 99}, "delta is 99"),
                          ({"baseline_ppl": -5}, "baseline_ppl is -5")):
        (run / "critical.json").write_text(json.dumps({**critical, **edit}))
        capsys.readouterr()
        assert main(["verify", "--model", tiny_dir, "--against", str(run / "critical.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "contradicts itself" in err and "\n" not in err
