"""The workflows the CLI merely invokes, called from the library: the one scorer registry, texts
from a corpus, the search over a {name: text} mapping, minimal at a new epsilon, mask and
generate from a recorded result, and the top-level verbs."""
import pytest
import torch

import lesion
from lesion.errors import LesionError, ParameterError
from lesion.results.filenames import CRITICAL, RANKING, minimal_name
from lesion.heel import SearchPlan, search_heel, search_with_transfer
from lesion.heel.minimal import minimal_at, minimal_sets
from lesion.masking.metrics import delta
from lesion.replay.runfolder import RunFolder
from lesion.method.scorers import RANKERS, SCORERS, SIGNALS, check_ranker, check_signals
from conftest import TEXT


def test_one_registry_scores_for_stage1_and_the_search():
    assert RANKERS == ("noise", "activation", "gradient", "random")
    assert SIGNALS == ("noise", "activation", "massive", "superweight", "attribution")
    assert {n for n in SCORERS if SCORERS[n].ranker and SCORERS[n].signal} == {"noise", "activation"}
    assert all(callable(s.fn) for s in SCORERS.values())
    assert check_ranker("gradient") == "gradient"
    with pytest.raises(ParameterError) as e:
        check_ranker("massive")  # a signal, not a ranker
    assert e.value.parameter == "ranker"
    with pytest.raises(ParameterError) as e:
        check_ranker("bogus", "rankers")
    assert e.value.parameter == "rankers"
    assert check_signals("noise, ,activation,noise") == ["noise", "activation"]
    for bad in ("", "gradient", ["noize"]):
        with pytest.raises(ParameterError) as e:
            check_signals(bad)
        assert e.value.parameter == "signals"


def test_each_signal_scores_every_neuron_through_the_registry(study):
    from lesion.heel.signals import signal_scores
    from lesion.method.rankers import clean_activations, rank_by_activation
    model, ids, index = study.lm.model, study.input_ids, study.index
    acts = clean_activations(model, ids, index)
    for name in SIGNALS:
        scores = signal_scores(name, model, ids, index, cached=lambda n: torch.ones(index.total), acts=lambda: acts)
        assert scores.shape == (index.total,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert torch.equal(signal_scores("activation", model, ids, index),
                       rank_by_activation(model, ids, index).values.float())
    with pytest.raises(LesionError):
        signal_scores("noise", model, ids, index)  # the costly signal comes through the caller's cache


def test_corpus_passages_are_named_and_seeded(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(" ".join(f"Sentence {j} of paragraph {i} is running text." for j in range(8))
                                  for i in range(6)))
    first = lesion.corpus_passages(str(corpus), 3, seed=1)
    assert list(first) == [f"{corpus}#{i}" for i in range(3)] and all(first.values())
    assert first == lesion.corpus_passages(str(corpus), 3, seed=1)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ParameterError) as e:
            lesion.corpus_passages(str(corpus), bad)
        assert e.value.parameter == "passages"


def test_named_texts():
    from lesion.analysis import TEXTS
    from lesion.texts.named import named_texts
    assert named_texts(["news", " wikipedia", "news"]) == {"news": TEXTS["news"], "wikipedia": TEXTS["wikipedia"]}
    for bad in ([], [" "], ["news", "klingon"]):
        with pytest.raises(ParameterError) as e:
            named_texts(bad)
        assert e.value.parameter == "texts"


def test_search_over_a_mapping_names_its_texts(study):
    texts = {"fox": TEXT, "other": TEXT[::-1]}
    plan = SearchPlan(epsilon=0.001, max_rows=60)
    options = dict(signals=("activation", "massive"), progress=False)
    by_mapping = search_heel(study.lm, texts, plan, **options)
    by_list = search_heel(study.lm, list(texts.values()), plan, names=list(texts), **options)
    assert [t.name for t in by_mapping.texts] == ["fox", "other"]
    assert by_mapping.neurons == by_list.neurons and by_mapping.delta == by_list.delta
    with pytest.raises(ParameterError) as e:
        search_heel(study.lm, texts, plan, names=["a", "b"], **options)
    assert e.value.parameter == "names"
    with pytest.raises(ParameterError) as e:
        search_heel(study.lm, TEXT, plan, **options)
    assert e.value.parameter == "texts"
    with pytest.raises(ParameterError) as e:
        search_heel(study.lm, [TEXT], plan, signals=("noize",))
    assert e.value.parameter == "signals"
    with pytest.raises(ParameterError) as e:
        search_with_transfer(study.lm, {"fox": TEXT}, plan=plan, **options)
    assert e.value.parameter == "texts"


def test_the_prefix_strategy_adds_the_noise_signal(study):
    plan = SearchPlan(epsilon=0.001, strategy="prefix", max_rows=30)
    heel = search_heel(study.lm, [TEXT], plan, signals=("activation",), noise_options={"samples": 2},
                       progress=False, use_cache=False)
    assert list(heel.settings.signals) == ["activation", "noise"]


@pytest.fixture(scope="module")
def run(run_dir):
    folder = RunFolder(run_dir)
    return folder, folder.ranking(), folder.critical()


@pytest.fixture(scope="module")
def small(study):
    """A ranking that puts 5 neurons of various modules first, the Delta of each of its prefixes, and the
    critical set at the first positive one (a random model's Deltas are tiny and of either sign; these
    neurons together are known to raise it): sets of a few neurons prune quickly."""
    from lesion.masking.ablation import baseline_nll, masked_nll
    from lesion.method.rankers import Scores, ranking_from_scores
    values = torch.zeros(study.index.total)
    values[list(range(0, 300, 60))] = torch.arange(5, 0, -1, dtype=torch.float32)
    ranking = ranking_from_scores(study.index, Scores(values), "random", 5, study.lm.name, study.settings())
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    prefixes = [list(ranking.neurons[:n]) for n in range(1, 6)]
    deltas = [delta(v, clean) for v in masked_nll(study.lm.model, study.input_ids, study.index, prefixes)]
    first = next(d for d in deltas if d > 0)
    critical = study.identify(ranking, epsilon=first * 0.999, progress=False)
    assert critical.reached
    return ranking, deltas, critical


def test_minimal_at_the_recorded_epsilon_starts_from_the_critical_set(study, small):
    ranking, _, critical = small
    result = minimal_at(study, ranking, critical=critical, pool=6, progress=False)
    assert result.greedy == tuple(map(str, critical.neurons))
    assert result.settings.epsilon == critical.settings.epsilon


def test_minimal_at_a_new_epsilon_identifies_again(study, small):
    ranking, deltas, critical = small
    epsilon = max(deltas) * 0.999  # the first crossing is within the top 5
    assert epsilon != critical.settings.epsilon
    found = study.identify(ranking, epsilon=epsilon, progress=False)
    assert found.reached and len(found.neurons) <= 5
    result = minimal_at(study, ranking, epsilon, critical=critical, pool=6, progress=False)
    expected = minimal_sets(study, ranking.neurons, found.neurons, epsilon=epsilon, pool=6, progress=False)
    assert result.greedy == tuple(map(str, found.neurons))
    assert (result.irreducible, result.optimum, result.optimum_delta) == \
        (expected.irreducible, expected.optimum, expected.optimum_delta)
    assert minimal_at(study, ranking, epsilon, pool=6, progress=False).greedy == result.greedy  # no critical


@pytest.mark.parametrize("epsilon", [1e9, None, float("nan"), 0.0, -1.0])
def test_minimal_at_refuses_an_epsilon(study, small, epsilon):
    ranking = small[0]
    with pytest.raises(ParameterError) as e:
        minimal_at(study, ranking, epsilon, pool=4, progress=False)
    assert e.value.parameter == "epsilon"


def test_masked_perplexity_of_given_neurons(study):
    from lesion.masking.ablation import baseline_nll, masked_nll
    neurons = study.index.neurons([3, 70])
    masking = lesion.masked_perplexity(study.lm, [str(n) for n in neurons], text=TEXT)
    clean = baseline_nll(study.lm.model, study.input_ids, study.lm.dtype)
    masked = masked_nll(study.lm.model, study.input_ids, study.index, [neurons])[0]
    (row,) = masking.rows
    assert masking.size == 2 and masking.ablation == "zero" and masking.notes == ()
    assert row.delta == pytest.approx(delta(masked, clean), abs=1e-6) and row.recorded_delta is None
    assert [name for name, _, _ in row.alone] == [str(n) for n in neurons]
    with pytest.raises(LesionError):
        lesion.masked_perplexity(study.lm)  # nothing to mask
    with pytest.raises(LesionError):
        lesion.masked_perplexity(study.lm, neurons, ablation="gentle")


def test_masked_perplexity_reproduces_a_recorded_result(study, run):
    folder, _, critical = run
    masking = lesion.masked_perplexity(study.lm, result=folder.file(CRITICAL), alone=False)  # a large set
    (row,) = masking.rows
    assert row.alone == () and row.reproduced and masking.size == len(critical.neurons) and masking.notes == ()
    overridden = lesion.masked_perplexity(study.lm, result=critical, ablation="mean", alone=False)
    assert overridden.ablation == "mean" and len(overridden.notes) == 1
    assert overridden.rows[0].recorded_delta is None


def test_compare_continuations(study, run):
    from lesion.replay.generation import generate_masked
    folder, _, critical = run
    found = lesion.compare_continuations(study.lm, folder.file(CRITICAL), "The fox", max_new_tokens=3)
    (row,) = found.rows
    assert found.size == len(critical.neurons) and found.ablation == "zero" and found.notes == ()
    assert row.masked == generate_masked(study.lm.model, study.lm.tokenizer, study.index, critical.neurons,
                                         "The fox", 3)
    assert lesion.compare_continuations(study.lm, critical, ["The fox"], max_new_tokens=3,
                                        ablation="mean").notes
    for parameter, options in (("max_new_tokens", dict(max_new_tokens=0)), ("prompts", dict(prompts=[" "]))):
        with pytest.raises(ParameterError) as e:
            lesion.compare_continuations(study.lm, critical, **{"prompts": "Hi", **options})
        assert e.value.parameter == parameter


def test_the_verbs_at_the_top_level():
    from lesion.evaluation import EvalPlan, evaluate
    assert lesion.evaluate is evaluate and lesion.EvalPlan is EvalPlan
    assert lesion.minimal_at is minimal_at
    for name in ("harden_model", "corpus_passages", "masked_perplexity", "compare_continuations"):
        assert name in lesion.__all__ and getattr(lesion, name).__doc__


def test_one_owner_of_result_file_names(tmp_path):
    import lesion.results.scan as scan
    import lesion.replay.runfolder as runfolder
    assert (scan.RANKING, scan.CRITICAL) == (runfolder.RANKING, runfolder.CRITICAL) == (RANKING, CRITICAL)
    assert runfolder.minimal_name(2.0) == minimal_name(2.0) == "minimal-eps2.json"
