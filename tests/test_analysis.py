"""compare, the analyses and the report, on a saved tiny model through the library and the CLI."""
import base64
import json
import re

import pytest

from lesion.analysis import distribution, jaccard, phase_transition
from lesion.cli import main
from lesion.errors import ParameterError, ResultError
from lesion.method.compare import compare_rankers
from lesion.method.stage2 import masked_nll
from lesion.masking.metrics import delta, mean_nll
from conftest import TEXT


def test_compare_levels_match_direct_masking(study):
    result = compare_rankers(study, ["noise", "random"], [1, 5, 20], random_runs=3, samples=4, progress=False)
    clean = mean_nll(study.lm.model, study.input_ids).item()
    ranking = study.rank("noise", samples=4, keep=20, progress=False)
    for n in (1, 5, 20):
        nll = masked_nll(study.lm.model, study.input_ids, study.index, [ranking.neurons[:n]])[0]
        assert result.delta("noise", n) == pytest.approx(delta(nll, clean), abs=1e-6)
    random_rows = [r for r in result.rows if r.ranker == "random"]
    assert all(r.runs == 3 for r in random_rows)
    # The fall-backs are exactly the levels whose Delta is below the previous level's.
    for ranker in ("noise", "random"):
        ds = [result.delta(ranker, n) for n in (1, 5, 20)]
        assert result.fallbacks[ranker] == [n for n, a, b in zip((5, 20), ds, ds[1:]) if b < a]


def test_distribution_counts(study):
    ranking = study.rank("noise", samples=4, keep=50, progress=False)
    d = distribution(study.index, ranking.neurons, ranking.neurons[:3], [10, 50])
    assert sum(c.count for c in d.top["top50"].cells) == 50
    assert sum(d.critical.by_kind.values()) == 3


def test_phase_curve_starts_at_zero_and_reports_alone_effects(study):
    ranking = study.rank("noise", samples=4, keep=30, progress=False)
    phase = phase_transition(study, ranking.neurons, ranking.neurons[:2], max_n=6)
    assert [p.n for p in phase.curve] == list(range(7)) and phase.curve[0].delta == 0
    assert len(phase.alone) == 2


def test_jaccard():
    assert jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3) and jaccard([], []) == 1.0


@pytest.mark.slow
def test_cli_compare_analyze_report_is_self_contained(tiny_dir, tmp_path):
    out = str(tmp_path)
    common = ["--model", tiny_dir, "--text", TEXT, "--quiet"]
    assert main(["scan", *common, "--samples", "4", "--epsilon", "0.001", "--out", out, "--report"]) == 0
    assert "<h2>Critical set</h2>" in (tmp_path / "report.html").read_text()
    assert main(["compare", *common, "--samples", "4", "--levels", "1,5,20", "--random-runs", "2",
                 "--out-dir", out]) == 0
    for name in ("distribution", "phase"):
        assert main(["analyze", name, "--model", tiny_dir, "--quiet", "--out-dir", out, "--top-k", "10,100"]) == 0
    assert main(["analyze", "components", *common, "--samples", "4", "--levels", "1,10", "--out-dir", out]) == 0
    assert main(["analyze", "sweep", *common, "--alphas", "1,5", "--sample-grid", "2,4", "--samples", "4",
                 "--seed-grid", "0,7", "--epsilon", "0.001", "--out-dir", out]) == 0
    assert main(["report", out]) == 0
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'<img alt="(\w+)" src="([^"]+)"', page)
    assert {name for name, _ in images} == {"trajectory", "ranking_map", "scores",  # from the scan alone
                                            "phase", "compare", "distribution", "components", "sweep"}
    for _, src in images:  # every figure is embedded and is a real PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(http|//|file:)', page)
    md = (tmp_path / "report.md").read_text()
    assert "## Noise ranking vs baselines" in md and (tmp_path / "figures" / "compare.png").is_file()
    sweep = json.loads((tmp_path / "analysis-sweep.json").read_text())
    assert [r["varied"] for r in sweep["rows"]] == ["alpha", "alpha", "samples", "samples", "seed", "seed"]
    assert [r["seed"] for r in sweep["rows"]] == [42, 42, 42, 42, 0, 7]
    assert sweep["reference"]["seed"] == 42 and "| seed |" in md


def test_analyze_without_a_scan_says_what_to_run(tiny_dir, tmp_path, capsys, refused):
    refused(["analyze", "phase", "--model", tiny_dir, "--out-dir", str(tmp_path)], ResultError)
    assert main(["report", str(tmp_path)]) == 2


def test_run_analysis_is_the_library_call_behind_the_command(study, tmp_path):
    from lesion.analysis import REGISTRY, AnalysisInputs, run_analysis
    from lesion.results.analysis import AnalysisResult

    ranking = study.rank("noise", samples=4, keep=50, progress=False)
    critical = study.identify(ranking, epsilon=0.001)
    result = run_analysis("distribution", AnalysisInputs(study=study, ranking=ranking, critical=critical),
                          top_k=[10])
    assert isinstance(result, AnalysisResult) and result.analysis == "distribution"
    assert result.data.critical == distribution(study.index, ranking.neurons, critical.neurons, [10]).critical
    path = result.save(tmp_path / "analysis-distribution.json")
    saved = json.loads(path.read_text())
    assert saved["analysis"] == "distribution" and "critical" in saved and "settings" in saved
    assert AnalysisResult.load(path).to_dict() == result.to_dict()
    assert set(REGISTRY) == {"distribution", "phase", "components", "sweep", "robustness", "precision"}
    with pytest.raises(ParameterError) as refused:
        run_analysis("nope", AnalysisInputs())
    assert refused.value.parameter == "name"


def test_sweep_and_robustness_stopped_keep_the_scans_that_finished(study):
    from lesion.analysis import robustness, sensitivity_sweep

    sweep = sensitivity_sweep(study, [3], [4], [], ref_alpha=5, ref_samples=4, epsilon=0.001, progress=False,
                              time_budget=1e-9)
    assert sweep.stopped == "budget" and sweep.reference.samples == 4 and sweep.rows == ()
    texts = {"a": TEXT, "b": TEXT + " Again."}
    found = robustness(study.lm, texts, epsilon=0.001, samples=4, progress=False, time_budget=1e-9)
    assert found.stopped == "budget" and found.names == ("a",)


def test_analyze_time_budget_only_where_it_bounds_something(tiny_dir, tmp_path, capsys, refused):
    refused(["analyze", "phase", "--model", tiny_dir, "--out-dir", str(tmp_path), "--time-budget", "5"], "time_budget")
    refused(["analyze", "sweep", "--model", tiny_dir, "--out-dir", str(tmp_path), "--time-budget", "-1"],
            "time_budget")
