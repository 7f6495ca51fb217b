"""Stage 1: the fast streamed noise ranker against a slow per-element reference."""
import pytest
import torch

from lesion.model.neurons import discover_sites
from lesion.method.rankers import rank_by_noise
from lesion.method.rankers import noise_generator
from conftest import make_tiny


def slow_noise_scores(model, ids, index, alpha, samples, seed):
    """Obviously correct: one sample at a time, every (site, position, channel) by hand."""
    outputs = {}
    hooks = [model.get_submodule(s.name).register_forward_hook(
        lambda m, i, o, name=s.name: outputs.__setitem__(name, o.detach().clone())) for s in index.sites]
    try:
        with torch.no_grad():
            embeds = model.get_input_embeddings()(ids).float()
            model(inputs_embeds=embeds)
            clean = {s.name: s.channels(outputs[s.name])[0] for s in index.sites}
            gen = noise_generator(seed)
            T = ids.shape[1]
            sums = {s.name: [[0.0] * s.width for _ in range(T)] for s in index.sites}
            for _ in range(samples):
                noise = torch.randn(embeds.shape[1:], generator=gen)
                model(inputs_embeds=embeds + alpha * noise)
                for s in index.sites:
                    noisy = s.channels(outputs[s.name])[0]
                    for t in range(T):
                        for c in range(s.width):
                            sums[s.name][t][c] += abs(float(clean[s.name][t, c]) - float(noisy[t, c]))
    finally:
        for h in hooks:
            h.remove()
    scores = []
    for s in index.sites:
        scores += [max(sums[s.name][t][c] / samples for t in range(T)) for c in range(s.width)]
    return torch.tensor(scores)


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gemma3_text", "opt"])
def test_fast_stage1_ranks_exactly_as_the_slow_reference(family):
    model = make_tiny(family)
    ids = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(1))
    index = discover_sites(model, "down,act,o,norm" if family == "gemma3_text" else "down,act,o")
    fast = rank_by_noise(model, ids, index, alpha=0.5, samples=7, batch_size=3, seed=3, progress=False)
    slow = slow_noise_scores(model, ids, index, alpha=0.5, samples=7, seed=3)
    torch.testing.assert_close(fast.values, slow, rtol=1e-4, atol=1e-5)
    fast_order = torch.sort(fast.values, descending=True, stable=True).indices
    slow_order = torch.sort(slow, descending=True, stable=True).indices
    gaps = slow[slow_order].diff().abs()
    distinct = torch.cat([gaps > 1e-4, torch.tensor([True])])  # near-ties may legitimately swap
    assert torch.equal(fast_order[distinct], slow_order[distinct])


def test_same_seed_same_scores_any_batch_size(tiny_llama, ids):
    index = discover_sites(tiny_llama)
    a = rank_by_noise(tiny_llama, ids, index, samples=10, batch_size=4, seed=7, progress=False)
    b = rank_by_noise(tiny_llama, ids, index, samples=10, batch_size=4, seed=7, progress=False)
    c = rank_by_noise(tiny_llama, ids, index, samples=10, batch_size=10, seed=7, progress=False)
    d = rank_by_noise(tiny_llama, ids, index, samples=10, batch_size=4, seed=8, progress=False)
    assert torch.equal(a.values, b.values) and torch.equal(a.positions, b.positions)
    torch.testing.assert_close(a.values, c.values, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a.values, d.values)


def test_mean_reduction_and_relative_alpha(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down")
    mx = rank_by_noise(tiny_llama, ids, index, samples=4, seed=0, progress=False)
    mean = rank_by_noise(tiny_llama, ids, index, samples=4, seed=0, reduce="mean", progress=False)
    assert mean.positions is None and (mean.values <= mx.values + 1e-6).all()
    rms = tiny_llama.get_input_embeddings()(ids).pow(2).mean().sqrt().item()
    rel = rank_by_noise(tiny_llama, ids, index, samples=4, seed=0, alpha=1.0, alpha_relative=True,
                        progress=False)
    absolute = rank_by_noise(tiny_llama, ids, index, samples=4, seed=0, alpha=rms, progress=False)
    torch.testing.assert_close(rel.values, absolute.values)


def test_out_of_memory_batches_are_retried_in_halves(tiny_llama, ids, monkeypatch):
    index = discover_sites(tiny_llama)
    expected = rank_by_noise(tiny_llama, ids, index, samples=8, batch_size=2, seed=1, progress=False)
    body = tiny_llama.base_model
    real_forward = body.forward
    seen = []

    def small_memory(*args, **kwargs):
        batch = kwargs["inputs_embeds"].shape[0]
        seen.append(batch)
        if batch > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(body, "forward", small_memory)
    got = rank_by_noise(tiny_llama, ids, index, samples=8, batch_size=8, seed=1, progress=False)
    assert seen == [1, 8, 4, 2, 2, 4, 2, 2]  # the clean pass, then halving on "OOM"
    torch.testing.assert_close(got.values, expected.values, rtol=1e-5, atol=1e-6)


def _three_buffer_accumulate(index, clean, pending, with_squares=False):
    """The accumulation hook as it was before it ran in one buffer: .float(), subtract, abs, square."""
    def add(out, site):
        ref = clean[site.name]
        change = (site.channels(out, ref.shape[0]).float() - ref).abs()
        pending[site.name] = (change.sum(dim=0), change.square().sum(dim=0) if with_squares else None)
    return {s.name: (lambda out, s=s: add(out, s)) for s in index.sites}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_buffer_hook_gives_the_three_buffer_bits(dtype, ids, monkeypatch):
    import lesion.method.rankers as stage1
    model = make_tiny("llama", dtype=dtype)
    index = discover_sites(model)
    options = dict(alpha=0.5, batch_size=3, seed=3, progress=False, max_samples=20)
    now = [rank_by_noise(model, ids, index, samples=samples, **options) for samples in (7, "auto")]
    monkeypatch.setattr(stage1, "_accumulate", _three_buffer_accumulate)
    before = [rank_by_noise(model, ids, index, samples=samples, **options) for samples in (7, "auto")]
    for a, b in zip(now, before):
        assert torch.equal(a.values, b.values) and torch.equal(a.positions, b.positions)
    assert now[1].adaptive == before[1].adaptive


def test_a_float64_model_is_scored_in_float32_as_before(ids, monkeypatch):
    import lesion.method.rankers as stage1
    model = make_tiny("llama", dtype=torch.float64)
    index = discover_sites(model, "down,act")
    now = rank_by_noise(model, ids, index, samples=4, batch_size=2, seed=1, progress=False)
    monkeypatch.setattr(stage1, "_accumulate", _three_buffer_accumulate)
    before = rank_by_noise(model, ids, index, samples=4, batch_size=2, seed=1, progress=False)
    assert now.values.dtype == torch.float32 and torch.equal(now.values, before.values)


def test_batch_buffers_keep_one_batch_size():
    from lesion.method.rankers import BatchBuffers
    like = torch.zeros(1)
    buffers = BatchBuffers()
    first = buffers.get(torch.Size([8, 5, 4]), like)
    assert buffers.get(torch.Size([8, 5, 4]), like) is first  # reused across batches
    other = buffers.get(torch.Size([8, 5, 6]), like)
    assert len(buffers.by_shape) == 2 and other is not first
    half = buffers.get(torch.Size([4, 5, 4]), like)  # a halved batch after out of memory drops the full ones
    assert [k[0] for k in buffers.by_shape] == [(4, 5, 4)] and half.shape == (4, 5, 4)
    assert buffers.get(torch.Size([4, 5, 4]), like.double()).dtype == torch.float64  # one per dtype
