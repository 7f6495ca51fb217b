"""A model sharded and offloaded by accelerate (--device-map): same neurons, same fingerprints."""
import torch

from lesion.model.neurons import discover_sites
from lesion.model.loading import load_model
from lesion.method.study import Study
from lesion.replay.verify import fingerprints
from conftest import TEXT

# Layer 1 lives on disk: its modules hold meta tensors and accelerate loads them per forward.
OFFLOADED = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
             "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


def scan(lm):
    study = Study.create(lm, TEXT)
    ranking = study.rank(samples=4, progress=False, use_cache=False)
    return study, ranking, study.identify(ranking, epsilon=0.001, max_neurons=24, progress=False)


def test_offloaded_model_gives_the_same_neurons_and_fingerprints(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_CACHE", str(tmp_path))
    ref = load_model(tiny_dir)
    off = load_model(tiny_dir, device_map=OFFLOADED)
    assert off.model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert off.fingerprint() == ref.fingerprint()

    _, r_ref, c_ref = scan(ref)
    _, r_off, c_off = scan(off)
    assert r_off.neurons == r_ref.neurons
    torch.testing.assert_close(torch.tensor(r_off.scores), torch.tensor(r_ref.scores), rtol=1e-5, atol=1e-7)
    assert c_off.neurons == c_ref.neurons and c_off.reached == c_ref.reached
    torch.testing.assert_close(torch.tensor([s.delta for s in c_off.trajectory]),
                               torch.tensor([s.delta for s in c_ref.trajectory]), rtol=1e-4, atol=1e-6)
    assert any(n.module.startswith("model.layers.1.") for n in r_off.neurons[:50])  # offloaded sites ranked
    assert all(not m._forward_hooks for m in off.model.modules())

    neurons = [n for n in r_ref.neurons if n.module.startswith("model.layers.") and "down_proj" in n.module][:3]
    index = discover_sites(ref.model, "all")
    assert fingerprints(off.model, index, neurons) == fingerprints(ref.model, index, neurons)
