"""Irreducible and optimal critical sets: prune and the exhaustive search."""
import json
from itertools import combinations

import pytest

from lesion.cli import main
from lesion.masking.metrics import delta, mean_nll
from lesion.heel.minimal import exhaustive_minimum, minimal_sets, prune
from lesion.method.stage2 import masked_nll
from conftest import scan_tiny


def _delta(study, neurons, clean):
    return delta(masked_nll(study.lm.model, study.input_ids, study.index, [neurons])[0], clean)


def test_exhaustive_minimum_agrees_with_brute_force(study):
    pool = study.index.neurons(range(0, 400, 50))  # 8 neurons of various modules
    clean = mean_nll(study.lm.model, study.input_ids).item()
    all_sets = [list(c) for s in range(1, 4) for c in combinations(pool, s)]
    deltas = [delta(v, clean) for v in masked_nll(study.lm.model, study.input_ids, study.index, all_sets)]
    epsilon = sorted(deltas)[-5]  # a threshold a few sets reach
    smallest = min(len(s) for s, d in zip(all_sets, deltas) if d >= epsilon)
    found, found_delta, rows, forwards = exhaustive_minimum(study, pool, epsilon, clean, max_size=3,
                                                            batch=16, progress=False)
    assert len(found) == smallest and found_delta >= epsilon
    assert found_delta == pytest.approx(_delta(study, found, clean), abs=1e-5)
    # Early stop: nothing of a larger size was evaluated; at most 16 sets per forward, one
    # batch per size at least.
    assert rows <= sum(len(list(combinations(pool, s))) for s in range(1, smallest + 1))
    assert max(smallest, -(-rows // 16)) <= forwards < rows


def test_exhaustive_minimum_without_a_hit_tries_every_subset(study):
    pool = study.index.neurons(range(0, 60, 10))
    clean = mean_nll(study.lm.model, study.input_ids).item()
    found, found_delta, rows, _ = exhaustive_minimum(study, pool, float("inf"), clean, max_size=2, progress=False)
    assert found is None and found_delta is None and rows == 6 + 15


def test_pruned_set_is_irreducible(study):
    clean = mean_nll(study.lm.model, study.input_ids).item()
    greedy = study.index.neurons(range(0, 600, 40))
    epsilon = _delta(study, greedy, clean) * 0.8
    kept, kept_delta, rows = prune(study, greedy, epsilon)
    assert set(kept) <= set(greedy) and kept_delta >= epsilon and rows >= 1
    for i in range(len(kept)):  # no single neuron can go
        rest = kept[:i] + kept[i + 1:]
        if rest:
            assert _delta(study, rest, clean) < epsilon
    result = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), max_size=2, progress=False)
    assert len(result.irreducible) == len(kept)
    assert result.optimum is None or len(result.optimum) <= 2


def test_optimum_certifies_the_irreducible_size(study):
    """With the irreducible set inside the pool, the default search goes up to its size, so an
    optimum always exists and is no larger."""
    clean = mean_nll(study.lm.model, study.input_ids).item()
    greedy = study.index.neurons(range(0, 300, 60))
    epsilon = _delta(study, greedy, clean) * 0.9
    result = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), progress=False)
    assert result.optimum is not None and len(result.optimum) <= len(result.irreducible) == result.max_size
    assert result.greedy_is_optimal == (len(result.optimum) == len(result.greedy))
    assert result.search_forwards >= 1 and result.search_rows >= len(greedy)


@pytest.mark.slow
def test_minimal_cli(tiny_dir, tmp_path, capsys):
    run = scan_tiny(tiny_dir, tmp_path / "run")
    assert main(["minimal", "--model", tiny_dir, "--run", str(run), "--pool", "6", "--quiet"]) == 0
    result = json.loads((run / "minimal-eps0.001.json").read_text())
    assert len(result["irreducible"]) <= len(result["greedy"])
    assert result["optimum"] is None or len(result["optimum"]) <= len(result["irreducible"])
    assert result["settings"]["epsilon"] == 0.001
    capsys.readouterr()
    for bad, fix in ((["--pool", "40"], "--pool must be 1..30"), (["--pool", "6", "--max-size", "9"], "--max-size"),
                     (["--epsilon", "1000"], "--epsilon 1000 is not reached")):
        assert main(["minimal", "--model", tiny_dir, "--run", str(run), "--quiet", *bad]) == 2
        assert fix in capsys.readouterr().err


def test_minimal_stopped_by_its_row_budget_keeps_what_finished(study, tmp_path):
    from lesion.heel.minimal import MinimalSets

    clean = mean_nll(study.lm.model, study.input_ids).item()
    greedy = study.index.neurons(range(0, 300, 60))
    epsilon = _delta(study, greedy, clean) * 0.9
    whole = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), progress=False)
    # Enough rows to prune, not to search: the irreducible set is kept, the optimum is not certified.
    stopped = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), progress=False,
                           max_rows=whole.prune_rows)
    assert stopped.stopped == "budget" and stopped.irreducible == whole.irreducible
    assert stopped.search_rows == 0 and stopped.optimum is None and stopped.greedy_is_optimal is None
    spent = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), progress=False, time_budget=1e-9)
    assert spent.stopped == "budget" and spent.greedy == whole.greedy
    path = stopped.save(tmp_path / "minimal.json")
    assert MinimalSets.load(path).to_dict() == stopped.to_dict()
    with pytest.raises(Exception, match="max_rows"):
        minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), progress=False, max_rows=0)


def test_minimal_interrupted_keeps_the_pruned_set(study, monkeypatch):
    from lesion.heel import minimal

    clean = mean_nll(study.lm.model, study.input_ids).item()
    greedy = study.index.neurons(range(0, 300, 60))
    epsilon = _delta(study, greedy, clean) * 0.9

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(minimal, "_deltas", interrupt)  # the exhaustive search's forwards
    result = minimal_sets(study, greedy, greedy, epsilon=epsilon, pool=len(greedy), progress=False)
    assert result.stopped == "interrupted" and len(result.irreducible) <= len(result.greedy)
    assert result.optimum is None and result.searched_size == 0
