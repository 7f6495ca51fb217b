"""lesion compare: batched levels against one-at-a-time masking, random over seeds, bad input."""
import statistics

import pytest

from lesion.method.compare import compare_rankers, level_deltas
from lesion.masking.metrics import delta, mean_nll
from lesion.method.rankers import rank_by_random, ranking_from_scores
from lesion.method.stage2 import masked_nll
from lesion.results import Settings


def test_many_levels_in_chunked_batches_equal_one_mask_per_forward(study):
    # 40 levels > the 32 rows of one forward: the chunking must not mix up the rows.
    ranking = study.rank("activation", keep=200, progress=False)
    levels = list(range(1, 201, 5))
    clean = mean_nll(study.lm.model, study.input_ids).item()
    batched = level_deltas(study, ranking.neurons, levels, clean)
    for n, d in zip(levels[::7], batched[::7]):
        alone = masked_nll(study.lm.model, study.input_ids, study.index, [ranking.neurons[:n]])[0]
        assert d == pytest.approx(delta(alone, clean), abs=1e-5)


def test_random_is_mean_and_spread_over_consecutive_seeds(study):
    result = compare_rankers(study, ["random"], [3, 30], random_runs=3, seed=7, progress=False)
    clean = mean_nll(study.lm.model, study.input_ids).item()
    per_seed = []
    for seed in (7, 8, 9):
        scores = rank_by_random(study.lm.model, study.input_ids, study.index, seed=seed)
        neurons = ranking_from_scores(study.index, scores, "random", 30, "", Settings()).neurons
        per_seed.append(level_deltas(study, neurons, [3, 30], clean))
    for i, row in enumerate(result.rows):
        values = [run[i] for run in per_seed]
        assert row.runs == 3
        assert row.delta == pytest.approx(statistics.fmean(values), abs=1e-6)
        assert row.delta_std == pytest.approx(statistics.pstdev(values), abs=1e-6)


def test_levels_are_sorted_and_deduplicated(study):
    result = compare_rankers(study, ["activation"], [10, 1, 10], progress=False)
    assert result.levels == (1, 10) and len(result.rows) == 2


@pytest.mark.parametrize("flags, parameter", [
    (["--levels", "0,10"], "levels"),
    (["--levels", "1,ten"], "levels"),
    (["--rankers", "noise,bogus"], "rankers"),
    (["--rankers", ","], "rankers"),
    (["--random-runs", "0"], "random_runs"),
])
def test_compare_bad_input_is_one_line_and_exit_2(tiny_dir, tmp_path, refused, flags, parameter):
    refused(["compare", "--model", tiny_dir, "--out-dir", str(tmp_path), *flags], parameter)
    assert not (tmp_path / "compare.json").exists()


def test_compare_stopped_keeps_the_rankers_that_finished(study, tmp_path, monkeypatch):
    from lesion.method.compare import Comparison

    whole = compare_rankers(study, ["noise", "activation"], [1, 5], samples=4, progress=False)
    spent = compare_rankers(study, ["noise", "activation"], [1, 5], samples=4, progress=False, time_budget=1e-9)
    assert spent.stopped == "budget" and spent.rankers == ["noise"]
    assert spent.delta("noise", 5) == whole.delta("noise", 5) and "activation" not in spent.fallbacks
    path = spent.save(tmp_path / "compare.json")
    assert Comparison.load(path).to_dict() == spent.to_dict()
    real_rank = study.rank

    def rank(ranker, **options):
        if ranker == "activation":
            raise KeyboardInterrupt
        return real_rank(ranker, **options)
    monkeypatch.setattr(study, "rank", rank)
    stopped = compare_rankers(study, ["noise", "activation"], [1, 5], samples=4, progress=False)
    assert stopped.stopped == "interrupted" and stopped.rankers == ["noise"]
