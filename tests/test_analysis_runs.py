"""Components, robustness and precision on a saved tiny model; bad analysis input."""
import json

import pytest

from lesion.analysis import TEXTS, component_ablation, precision, robustness
from lesion.cli import main
from lesion.errors import LesionError, ParameterError
from lesion.texts.corpora import sample_passages
from lesion.model.loading import load_model
from lesion.method.study import Study
from lesion.texts.text import encode

TEXT = "The old lighthouse keeper climbed the stairs every evening to light the lamp."


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return load_model(tiny_dir)


def test_component_ablation_masks_only_the_named_kind(lm):
    study = Study.create(lm, TEXT)
    result = component_ablation(study, ["down", "up"], [1, 10, 10_000], samples=4, progress=False)
    widths = {k: sum(s.width for s in study.index.sites if s.kind == k) for k in ("down", "up")}
    for kind, rows in result.by_kind.items():
        # Levels wider than the kind are dropped, not silently filled from other kinds.
        assert [r.n for r in rows] == [n for n in (1, 10, 10_000) if n <= widths[kind]]
    with pytest.raises(ParameterError, match="^kinds names nope, of which this model has no sites"):
        component_ablation(study, ["down", "nope"], [1], samples=4, progress=False)


def test_robustness_overlap_table(lm):
    texts = {"a": TEXT, "b": TEXT, "c": TEXTS["french"]}
    result = robustness(lm, texts, epsilon=0.001, samples=4, progress=False)
    assert result.names == ("a", "b", "c")
    assert all(result.jaccard[i][i] == 1.0 for i in range(3))
    assert result.jaccard[0][1] == 1.0  # the same text finds the same set
    assert result.jaccard == tuple(zip(*result.jaccard))  # symmetric
    assert result.texts["a"].tokens == encode(lm.tokenizer, TEXT).shape[1]


def test_shipped_texts_span_lengths(lm):
    lengths = {name: encode(lm.tokenizer, text).shape[1] for name, text in TEXTS.items()}
    assert min(lengths.values()) > 10 and lengths["long"] > 150


def test_precision_rows_and_float32_re_evaluation(tiny_dir):
    result = precision(tiny_dir, TEXT, ["float32", "bfloat16"], epsilon=0.001, samples=4, progress=False)
    assert [r.dtype for r in result.rows] == ["float32", "bfloat16"]
    f32 = result.rows[0]
    assert f32.reached  # and its set re-evaluated in float32 gives its own Delta back
    assert f32.delta_in_float32 == pytest.approx(f32.delta, abs=1e-5)
    assert all(r.delta_in_float32 is not None for r in result.rows if r.neurons)


@pytest.mark.parametrize("flags, parameter", [
    (["sweep", "--alphas", "1,x"], "alphas"),
    (["sweep", "--alphas", "0,5"], "alphas"),
    (["sweep", "--seed-grid", "43,x"], "seed_grid"),
    (["sweep", "--alphas", "", "--sample-grid", " ", "--seed-grid", ""], "alphas"),
    (["sweep", "--sample-grid", "0"], "sample_grid"),
    (["sweep", "--seed-grid", "-1"], "seed_grid"),
    (["sweep", "--seed-grid", str(2 ** 63)], "seed_grid"),
    (["components", "--kinds", "nope", "--samples", "2"], "kinds"),
])
def test_analyze_bad_input_is_one_line_and_exit_2(tiny_dir, tmp_path, refused, flags, parameter):
    name, *rest = flags
    refused(["analyze", name, "--model", tiny_dir, "--text", TEXT, "--quiet", "--out-dir", str(tmp_path), *rest],
            parameter)
    assert not list(tmp_path.iterdir())


def test_passages_are_running_text_drawn_reproducibly():
    docs = ["Title\n\n" + " ".join(f"Sentence {i} of article {a} says a little more." for i in range(20))
            + "\n\n| a table | row |\n\nFile:x.png\nFile:y.png " + "z" * 200 for a in range(5)]
    first = sample_passages(docs, 7, seed=3, chars=120)
    assert first == sample_passages(docs, 7, seed=3, chars=120) != sample_passages(docs, 7, seed=4, chars=120)
    for passage in first:
        assert passage.startswith("Sentence") and passage.endswith(".") and 120 <= len(passage) < 200
    # five documents, seven passages: every document is used before any is used twice
    assert len({p.split("article ")[1][0] for p in first[:5]}) == 5
    with pytest.raises(LesionError, match="running text"):
        sample_passages(["| only a table |"], 3)


def test_robustness_cli_on_corpus_passages(tiny_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(f"Line {i} of doc {d} is plain prose here."
                                                           for i in range(12)) * 2}) + "\n" for d in range(3)))
    assert main(["analyze", "robustness", "--model", tiny_dir, "--passages", "4", "--corpus", str(corpus),
                 "--samples", "3", "--epsilon", "0.001", "--out-dir", str(tmp_path), "--quiet"]) == 0
    result = json.loads((tmp_path / "analysis-robustness.json").read_text())
    assert result["names"] == [f"{corpus}#{i}" for i in range(4)]
    assert all(t["tokens"] > 10 for t in result["texts"].values())
    assert "most common (of 4 texts)" in capsys.readouterr().out
    assert main(["analyze", "robustness", "--model", tiny_dir, "--passages", "-1", "--out-dir", str(tmp_path)]) == 2


def test_a_seed_only_sweep_gives_one_row_per_seed_and_a_one_panel_figure(tiny_dir, tmp_path):
    from lesion.report.figures import sweep_plot
    from lesion.results.analysis import AnalysisResult
    out = str(tmp_path)
    assert main(["analyze", "sweep", "--model", tiny_dir, "--text", TEXT, "--quiet", "--out-dir", out,
                 "--alphas", "", "--sample-grid", "", "--seed-grid", "1,2", "--samples", "4",
                 "--epsilon", "0.001", "--stage2", "gallop"]) == 0
    result = AnalysisResult.load(tmp_path / "analysis-sweep.json")
    sweep = result.data
    assert result.settings.stage2 == "gallop"
    assert [(r.varied, r.seed, r.samples) for r in sweep.rows] == [("seed", 1, 4), ("seed", 2, 4)]
    assert sweep.reference.seed == 42
    assert len(sweep_plot(sweep).axes) == 2  # one panel and its twin axis


@pytest.mark.slow
def test_robustness_into_a_run_folder_takes_the_runs_model(tiny_dir, tmp_path):
    """Without --model, robustness studies the run folder's model (not the default one), so the
    result written next to the run is of the run's model."""
    from conftest import scan_tiny
    run = scan_tiny(tiny_dir, tmp_path / "run")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(f"Line {i} of doc {d} is plain prose here."
                                                           for i in range(12)) * 2}) + "\n" for d in range(3)))
    assert main(["analyze", "robustness", "--passages", "2", "--corpus", str(corpus), "--samples", "3",
                 "--epsilon", "0.001", "--out-dir", str(run), "--quiet"]) == 0
    ranking = json.loads((run / "ranking.json").read_text())
    result = json.loads((run / "analysis-robustness.json").read_text())
    assert result["settings"]["model"] == ranking["settings"]["model"]
