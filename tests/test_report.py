"""The report: every section a run folder's JSON calls for, self-contained, with non-finite values."""
import base64
import io
import re

import pytest
from PIL import Image

from lesion.analysis import robustness
from lesion.cli import main
from lesion.model.loading import load_model
from lesion.report import build_report
from lesion.runtime.files import write_json
from conftest import scan_tiny

TEXT = "Every morning the baker opened the shop before the first tram came down the street."


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    out = scan_tiny(tiny_dir, tmp_path_factory.mktemp("run"), text=TEXT)
    # A collapse to a non-finite perplexity is stored as "inf": the report must draw it, not crash.
    rows = [{"ranker": r, "n": n, "delta": d, "delta_std": s, "ppl": 1.0, "runs": k}
            for r, k, ds in (("noise", 1, [float("inf"), 3.0]), ("random", 5, [0.01, 0.2]))
            for n, d, s in zip((1, 10), ds, (0.0, 0.1))]
    write_json(out / "compare.json", {"model": "tiny", "baseline_ppl": 80.0, "levels": [1, 10], "rows": rows,
                                      "fallbacks": {"noise": [10], "random": []}})
    write_json(out / "analysis-robustness.json",
               robustness(load_model(tiny_dir), {"one": TEXT, "two": TEXT[:60]}, epsilon=0.001, samples=4,
                          progress=False))
    write_json(out / "analysis-precision.json", {"epsilon": 1.0, "rows": [
        {"dtype": "float16", "reached": False, "n_star": None, "neurons": [],
         "error": "the unmasked model's perplexity is non-finite in float16: use --dtype float32"}]})
    return out


def test_report_sections_and_embedded_pngs(run_dir):
    html_path, md_path = build_report(run_dir)
    page = html_path.read_text(encoding="utf-8")
    for heading in ("Critical set", "Noise ranking vs baselines", "Robustness across texts", "Precision"):
        assert f"<h2>{heading}</h2>" in page and f"## {heading}" in md_path.read_text(encoding="utf-8")
    images = dict(re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([^"]+)"', page))
    assert set(images) == {"trajectory", "ranking_map", "scores", "compare", "robustness"}
    assert page.count("<img") == len(images)
    for name, data in images.items():
        png = Image.open(io.BytesIO(base64.b64decode(data)))
        png.verify()
        assert png.format == "PNG" and (run_dir / "figures" / f"{name}.png").is_file()
    assert not re.search(r'(src|href)=["\'](?!data:)', page)  # nothing outside the file
    assert "inf" in page and "non-finite in float16" in page
    assert "10" in page.split("Delta falls back at")[1].split("</table>")[0]


def test_report_escapes_text_from_the_run(run_dir):
    write_json(run_dir / "analysis-precision.json", {"epsilon": 1.0, "rows": [
        {"dtype": "float16", "reached": False, "n_star": None, "neurons": [], "error": "<script>x</script>"}]})
    page = build_report(run_dir)[0].read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page


def _browser_or_skip():
    """CI installs Chromium (.ci/run) and must run these; a developer without it skips them."""
    import os
    from lesion.errors import LesionError
    from lesion.report.browser import find_browser
    try:
        find_browser()
    except LesionError:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium for the render check: .ci/run installs it")
        pytest.skip("no Chromium on PATH (apt-get install chromium)")


def test_report_renders_in_headless_chromium(run_dir, tmp_path, capsys):
    _browser_or_skip()
    shot = tmp_path / "shot.png"
    assert main(["report", str(run_dir), "--screenshot", str(shot)]) == 0
    assert "none broken" in capsys.readouterr().out
    from lesion.report import check_render
    check = check_render(run_dir / "report.html")
    assert check.ok and check.images == 5 and check.sections >= 5
    png = Image.open(shot)
    assert png.size[0] == 1100 and png.size[1] == check.height > 800  # the whole page, not one screen


def test_render_check_catches_a_broken_figure(run_dir, tmp_path, capsys):
    _browser_or_skip()
    build_report(run_dir)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    broken = re.sub(r'(<img alt="robustness" src="data:image/png;base64,)[^"]+', r"\1AAAA", page)
    (tmp_path / "report.html").write_text(broken, encoding="utf-8")
    from lesion.report import check_render
    check = check_render(tmp_path / "report.html")
    assert not check.ok and check.broken == ("robustness",) and check.images == 5


def test_scan_figures_are_drawn_from_the_scan_files_alone(run_dir):
    from lesion.report import figures
    from lesion.results import CriticalSet, Ranking

    ranking = Ranking.load(run_dir / "ranking.json")
    critical = CriticalSet.load(run_dir / "critical.json")
    heat = figures.ranking_map(ranking, critical, top=7)
    assert heat.axes[0].images[0].get_array().sum() == 7  # every top neuron in one cell
    stars = [line for line in heat.axes[0].lines if line.get_marker() == "*"]
    assert len(stars) == len({figures.layer_and_kind(str(n)) for n in critical.neurons})
    trajectory = figures.stage2_trajectory(critical)
    xs = trajectory.axes[0].lines[0].get_xdata()
    assert list(xs) == [0] + [t.n for t in critical.trajectory]
    scores = figures.score_distribution(ranking, critical)
    assert len(scores.axes[0].lines[0].get_xdata()) == len(ranking.scores)


@pytest.mark.parametrize("name, expected", [
    ("model.layers.11.mlp.down_proj:507", (11, "mlp.down_proj")),
    ("transformer.h.3.attn.c_proj:2", (3, "attn.c_proj")),
    ("transformer.h.3.mlp.c_proj:2", (3, "mlp.c_proj")),
])
def test_layer_and_kind_from_the_name(name, expected):
    from lesion.report.figures import layer_and_kind
    assert layer_and_kind(name) == expected


def test_n_axes_have_integer_ticks():
    from lesion.report import figures
    from lesion.results import CriticalSet, Settings, Step

    def ticks(fig):
        fig.canvas.draw()
        return [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]

    from lesion.results.analysis import PhaseData

    phase = PhaseData(baseline_ppl=1.0, n_star=3, epsilon=1.0, alone=(), joint_delta=2.0, sum_of_alone=0.0,
                      curve=tuple(Step(n=n, ppl=1.0, delta=d) for n, d in ((1, 0.1), (2, 0.4), (3, 2.0))))
    trajectory = tuple(Step(n, 1.0, d) for n, d in ((1, 0.1), (2, 0.3), (3, 1.5)))
    critical = CriticalSet("m", tuple(range(3)), 1.0, 1.0, 1.5, True, trajectory, 4, Settings.of(epsilon=1.0))
    for fig in (figures.phase_curve(phase), figures.stage2_trajectory(critical)):
        assert ticks(fig) and all(float(t).is_integer() for t in ticks(fig))
