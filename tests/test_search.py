"""Stage 2: greedy search stops at the first crossing, reports when it never crosses."""
import math

import pytest
import torch

from lesion.errors import LesionError, ParameterError
from lesion.model.neurons import Neuron, discover_sites
from lesion.method.stage2 import find_critical_set
from lesion.masking.metrics import delta, mean_nll, perplexity
from lesion.masking.masks import mask_neurons


def test_first_crossing_and_trajectory_match_direct_masking(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down")
    candidates = index.neurons(range(0, 64, 2))
    clean = mean_nll(tiny_llama, ids).item()
    # Direct: Delta of each top-n, one forward each.
    direct = []
    for n in range(1, len(candidates) + 1):
        with mask_neurons(tiny_llama, index, candidates[:n]):
            direct.append(delta(mean_nll(tiny_llama, ids).item(), clean))
    epsilon = 0.9 * max(direct)
    assert epsilon > 0
    first = next(n for n, d in enumerate(direct, 1) if d >= epsilon)
    result = find_critical_set(tiny_llama, ids, index, candidates, epsilon=epsilon, progress=False)
    assert result.reached and len(result.neurons) == first
    assert result.neurons == tuple(candidates[:first])
    assert [s.n for s in result.trajectory] == list(range(1, first + 1))
    for step in result.trajectory:
        assert step.delta == pytest.approx(direct[step.n - 1], abs=1e-5)
    assert result.baseline_ppl == pytest.approx(perplexity(clean))


def test_threshold_never_reached_keeps_the_trajectory(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down")
    result = find_critical_set(tiny_llama, ids, index, index.neurons(range(10)), epsilon=50, step=3,
                               progress=False)
    assert not result.reached and result.neurons == ()
    assert [s.n for s in result.trajectory] == [3, 6, 9, 10]
    assert result.delta == max(s.delta for s in result.trajectory)


def test_bad_search_input(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down")
    with pytest.raises(LesionError, match="ranking is empty"):
        find_critical_set(tiny_llama, ids, index, [], progress=False)
    with pytest.raises(LesionError, match="epsilon"):
        find_critical_set(tiny_llama, ids, index, index.neurons([0]), epsilon=0, progress=False)
    with pytest.raises(LesionError, match="not a neuron site"):
        find_critical_set(tiny_llama, ids, index, [Neuron("model.layers.9.mlp.down_proj", 0)],
                          progress=False)


def test_non_finite_baseline_is_refused(tiny_llama, ids):
    index = discover_sites(tiny_llama, "down")
    with torch.no_grad():
        tiny_llama.lm_head.weight[0, 0] = math.nan
    with pytest.raises(LesionError, match="non-finite"):
        find_critical_set(tiny_llama, ids, index, index.neurons([0]), progress=False)


def test_delta_of_nan_and_inf_is_a_collapse():
    assert delta(math.nan, 1.0) == math.inf and delta(math.inf, 1.0) == math.inf
    assert perplexity(800.0) == math.inf and math.isnan(perplexity(math.nan))


def planted(monkeypatch, deltas):
    """Stage 2 on a planted trajectory: Delta(top-n) = deltas[n - 1], whatever the model does."""
    import lesion.method.stage2 as search
    ln10 = math.log(10)
    monkeypatch.setattr(search, "baseline_nll", lambda *a, **k: 0.0)
    monkeypatch.setattr(search, "masked_nll",
                        lambda model, ids, index, sets, **k: [deltas[len(s) - 1] * ln10 for s in sets])


@pytest.mark.parametrize("first", [1, 2, 3, 37, 64, 65, 200])
def test_gallop_finds_the_linear_first_crossing_on_a_monotone_trajectory(tiny_llama, ids, monkeypatch, first):
    index = discover_sites(tiny_llama)
    candidates = index.neurons(range(200))
    planted(monkeypatch, [n / first for n in range(1, 201)])  # crosses 1 first at n = first
    linear = find_critical_set(tiny_llama, ids, index, candidates, progress=False)
    gallop = find_critical_set(tiny_llama, ids, index, candidates, stage2="gallop", progress=False)
    assert len(linear.neurons) == first and gallop.neurons == linear.neurons
    assert gallop.delta == linear.delta
    assert not gallop.settings.gallop["delta_fell_at_gallop_points"]
    assert not gallop.settings.gallop["delta_fell_inside_bracket"]
    low, high = gallop.settings.gallop["bracket"]
    assert low < first <= high
    if first >= 37:
        assert gallop.forward_rows < linear.forward_rows


def test_gallop_says_when_delta_fell_and_it_may_have_missed_a_crossing(tiny_llama, ids, monkeypatch):
    index = discover_sites(tiny_llama)
    candidates = index.neurons(range(100))
    deltas = [0.1, 0.8, 2.0, 0.5] + [0.5 + n / 100 for n in range(5, 101)]  # 3 crosses, then Delta falls
    planted(monkeypatch, deltas)
    linear = find_critical_set(tiny_llama, ids, index, candidates, progress=False)
    gallop = find_critical_set(tiny_llama, ids, index, candidates, stage2="gallop", progress=False)
    assert len(linear.neurons) == 3
    assert len(gallop.neurons) == 50  # the gallop points 1, 2, 4 miss n = 3; 64 crosses; 50 is first inside
    assert gallop.settings.gallop["bracket"] == [32, 64]
    assert gallop.settings.gallop["delta_fell_at_gallop_points"]  # Delta(4) < Delta(2): it says so
    assert not gallop.settings.gallop["delta_fell_inside_bracket"]
    with pytest.raises(ParameterError, match="stage2 must be one of linear, gallop") as raised:
        find_critical_set(tiny_llama, ids, index, candidates, stage2="binary", progress=False)
    assert raised.value.parameter == "stage2"
    for bad in ({"epsilon": float("nan")}, {"epsilon": 0}, {"step": 0}, {"max_neurons": 0}):
        with pytest.raises(ParameterError, match=f"{next(iter(bad))} must be") as raised:
            find_critical_set(tiny_llama, ids, index, candidates, progress=False, **bad)
        assert raised.value.parameter == next(iter(bad))
