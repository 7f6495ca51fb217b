"""Baseline rankers: magnitudes, gradients, random over the same neurons."""
import torch

from lesion.model.neurons import discover_sites
from lesion.method.scorers import RANKERS
from lesion.method.rankers import rank_by_activation, rank_by_gradient, rank_by_random, ranking_from_scores
from lesion.results import Settings


def test_activation_ranker_is_max_abs_activation(tiny, ids):
    index = discover_sites(tiny)
    site = index.sites[-1]
    seen = {}
    h = tiny.get_submodule(site.name).register_forward_hook(lambda m, i, o: seen.__setitem__("o", o.detach()))
    with torch.no_grad():
        tiny(input_ids=ids)
    h.remove()
    expected = site.channels(seen["o"], ids.shape[1])[0].abs().max(dim=0).values
    scores = rank_by_activation(tiny, ids, index)
    start = int(index.offsets[len(index.sites) - 1])
    torch.testing.assert_close(scores.values[start:], expected)


def test_gradient_ranker_matches_retain_grad_backward(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down,act")
    scores = rank_by_gradient(tiny_llama, ids, index, reduce="mean")
    assert all(p.grad is None for p in tiny_llama.parameters())  # the model is left untouched
    acts = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            acts[name] = output
        return hook

    hooks = [tiny_llama.get_submodule(s.name).register_forward_hook(keep(s.name)) for s in index.sites]
    out = tiny_llama(input_ids=ids, labels=ids)
    out.loss.backward()
    for h in hooks:
        h.remove()
    tiny_llama.zero_grad(set_to_none=True)
    expected = torch.cat([acts[s.name].grad[0].abs().mean(dim=0) for s in index.sites])
    torch.testing.assert_close(scores.values, expected, rtol=1e-4, atol=1e-7)
    assert all(not m._forward_hooks for m in tiny_llama.modules())


def test_random_ranker_covers_the_same_neurons(tiny_llama, ids):
    index = discover_sites(tiny_llama)
    a, b, c = (rank_by_random(tiny_llama, ids, index, seed=s) for s in (1, 1, 2))
    assert a.values.shape == (index.total,) and torch.equal(a.values, b.values)
    assert not torch.equal(a.values, c.values)
    ranking = ranking_from_scores(index, a, "random", index.total, "tiny", Settings())
    assert sorted(map(str, ranking.neurons)) == sorted(map(str, index.neurons(range(index.total))))


def test_registry_has_all_four():
    assert set(RANKERS) == {"noise", "activation", "gradient", "random"}
