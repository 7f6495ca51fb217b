"""Turn a run folder's JSON into ``report.html`` (figures embedded as base64 PNG, no external
reference) and ``report.md`` (figures beside it in ``figures/``). Every string on the page is
text in both (:func:`lesion.report.html.html_text`, :func:`lesion.report.html.md_text`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ResultError
from ..runtime.files import read_json, write_text
from ..results.filenames import (COMPARE, CRITICAL, EVAL, MECHANISM, MINIMAL_PREFIX, RANKING, REPORT_HTML, REPORT_MD,
                                 analysis_name)
from ..results import unsettled_note
from ..results.analysis import (ComponentsData, DistributionData, PhaseData, PrecisionData, PrecisionRow,
                                RobustnessData, SweepData, analysis_data)
from ..results.mechanism import MechanismReport
from ..results import CriticalSet, MinimalSets, Ranking
from ..replay.runfolder import RunFolder
from . import figures
from .html import fmt, html_image, html_table, html_text, md_table, md_text, png_bytes

CSS = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
       "font-size:14px}th{background:#f3f3f3}img{max-width:100%}code{background:#f5f5f5}")


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return read_json(path) if path.exists() else None


class Page:
    def __init__(self, folder: Path):
        self.folder, self.html, self.md = folder, [], []
        (folder / "figures").mkdir(exist_ok=True)

    def heading(self, text: str) -> None:
        self.html.append(f"<h2>{html_text(text)}</h2>")
        self.md.append(f"\n## {md_text(text)}\n")

    def para(self, text: str) -> None:
        self.html.append(f"<p>{html_text(text)}</p>")
        self.md.append(md_text(text) + "\n")

    def table(self, header: list[str], rows: list[list]) -> None:
        self.html.append(html_table(header, rows))
        self.md.append(md_table(header, rows))

    def figure(self, name: str, fig) -> None:
        png = png_bytes(fig)
        (self.folder / "figures" / f"{name}.png").write_bytes(png)
        self.html.append(html_image(name, png))
        self.md.append(f"![{name}](figures/{name}.png)\n")


def check_run_folder(folder: str | Path) -> Path:
    """The folder a report is made of, refused (:class:`ResultError`) when it is not a folder: checked
    before the report's outputs in it are (locking them would make the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultError(f"{str(folder)!r} is not a folder: pass the run folder a scan wrote")
    return folder


def build_report(folder: str | Path) -> tuple[Path, Path]:
    """Refuses, leaving no ``figures/`` behind, a folder whose results are corrupt, incomplete or do
    not belong together (:meth:`lesion.replay.runfolder.RunFolder.check`: another model's critical set
    beside the ranking, a critical neuron renamed)."""
    folder = check_run_folder(folder)
    RunFolder(folder).check()
    figures_dir = folder / "figures"
    fresh, built = not figures_dir.exists(), False
    try:
        paths = _build(folder)
        built = True
        return paths
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise ResultError(f"{folder} holds an incomplete or malformed result ({type(e).__name__}: {e}): "
                          "re-create it with lesion") from None
    finally:
        if fresh and not built:
            import shutil
            shutil.rmtree(figures_dir, ignore_errors=True)


def _build(folder: Path) -> tuple[Path, Path]:
    if not (folder / CRITICAL).is_file():
        raise ResultError(f"{folder} has no {CRITICAL}: write a scan into it first (`lesion scan`)")
    critical = CriticalSet.load(folder / CRITICAL)
    page = Page(folder)
    _summary(page, critical, Ranking.load(folder / RANKING) if (folder / RANKING).is_file() else None)
    sections = [(analysis_name("phase"), _phase), (COMPARE, _compare),
                (analysis_name("distribution"), _distribution), (analysis_name("components"), _components),
                (analysis_name("sweep"), _sweep), (analysis_name("robustness"), _robustness),
                (analysis_name("precision"), _precision), (MECHANISM, _mechanism), (EVAL, _eval)]
    for name, render in sections:
        data = _load(folder, name)
        if data is not None:
            render(page, _typed(name, data))
    for path in sorted(folder.glob(f"{MINIMAL_PREFIX}*.json")):
        _minimal(page, MinimalSets.load(path))
    title = f"lesion report: {critical.model}"
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html_text(title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{html_text(title)}</h1>{''.join(page.html)}</body></html>")
    md = f"# {md_text(title)}\n" + "\n".join(page.md)
    return write_text(folder / REPORT_HTML, doc), write_text(folder / REPORT_MD, md)


def _summary(page: Page, critical: CriticalSet, ranking: Ranking | None) -> None:
    s = critical.settings
    page.heading("Critical set")
    verdict = (f"{critical.n} neuron(s) reach Delta >= {s.epsilon}" if critical.reached
               else f"threshold Delta >= {s.epsilon} not reached within {s.max_neurons} neurons")
    page.para(f"{verdict}: perplexity {fmt(critical.baseline_ppl)} -> {fmt(critical.masked_ppl)}, "
              f"Delta {fmt(critical.delta)}. Text of {s.tokens} tokens; ranker {s.ranker}, "
              f"alpha {s.alpha}{' (relative)' if s.alpha_relative else ''}, K {s.samples}, "
              f"seed {s.seed}, dtype {s.dtype}.")
    note = unsettled_note(s)
    if note:
        page.para(f"Note: {note}.")
    page.table(["#", "neuron"], [[i, str(n)] for i, n in enumerate(critical.neurons, 1)])
    if ranking:
        page.para(f"Top of the ranking ({ranking.total_neurons} neurons scored):")
        positions = ranking.positions or [""] * len(ranking.neurons)
        page.table(["rank", "neuron", "score", "position"],
                   [[i + 1, str(n), fmt(sc), p] for i, (n, sc, p) in
                    enumerate(zip(ranking.neurons[:10], ranking.scores[:10], positions[:10]))])
    page.figure("trajectory", figures.stage2_trajectory(critical))
    page.table(["n", "perplexity", "Delta"], [[t.n, fmt(t.ppl), fmt(t.delta)] for t in critical.trajectory[-10:]])
    if ranking:
        page.heading("The ranking")
        page.figure("ranking_map", figures.ranking_map(ranking, critical))
        page.figure("scores", figures.score_distribution(ranking, critical))


def _typed(name: str, data: dict):
    """A section's file read as its result's records (the analyses' figures, the mechanism report);
    the other files as they are."""
    if name.startswith("analysis-"):
        return analysis_data(name[len("analysis-"):-len(".json")], data)
    if name == "mechanism.json":
        return MechanismReport.from_dict(data)
    return data


def _phase(page: Page, phase: PhaseData) -> None:
    page.heading("Phase transition")
    page.figure("phase", figures.phase_curve(phase))
    page.para(f"Joint Delta of the critical set {fmt(phase.joint_delta)}; sum of the neurons' effects alone "
              f"{fmt(phase.sum_of_alone)}.")
    page.table(["neuron", "Delta alone"], [[a.neuron, fmt(a.delta)] for a in phase.alone])


def _compare(page: Page, compare: dict) -> None:
    page.heading("Noise ranking vs baselines")
    page.figure("compare", figures.ranker_comparison(compare))
    rankers = list(dict.fromkeys(r["ranker"] for r in compare["rows"]))
    rows = []
    for ranker in rankers:
        cells = [fmt(r["delta"]) + (f" ± {fmt(r['delta_std'])}" if r["runs"] > 1 else "")
                 for r in compare["rows"] if r["ranker"] == ranker]
        rows.append([ranker, *cells, ",".join(map(str, compare["fallbacks"][ranker])) or "-"])
    page.table(["ranker", *(f"n={n}" for n in compare["levels"]), "Delta falls back at"], rows)


def _distribution(page: Page, dist: DistributionData) -> None:
    page.heading("Where they sit")
    key = next((k for k in ("top100", "top1000", "top10") if k in dist.top), None)
    if key:
        page.figure("distribution", figures.layer_kind_heatmap(dist, key))
    sets = {"critical": dist.critical, **dist.top}
    page.table(["set", "by component kind", "by layer"],
               [[k, json.dumps(v.by_kind), json.dumps(v.by_layer)] for k, v in sets.items()])


def _components(page: Page, comp: ComponentsData) -> None:
    page.heading("Component ablation")
    page.figure("components", figures.component_plot(comp))


def _sweep(page: Page, sweep: SweepData) -> None:
    page.heading("Sensitivity to alpha, K and the noise seed")
    page.figure("sweep", figures.sweep_plot(sweep))
    page.table(["varied", "alpha", "K", "seed", "n*", "Delta", "Jaccard to reference"],
               [[r.varied, r.alpha, r.samples, r.seed, r.n_star, fmt(r.delta),
                 fmt(r.jaccard_to_reference if r.jaccard_to_reference is not None else "")] for r in sweep.rows])


def _robustness(page: Page, rob: RobustnessData) -> None:
    page.heading("Robustness across texts")
    page.figure("robustness", figures.overlap_heatmap(rob))
    page.table(["text", "tokens", "n*", "Delta", "neurons"],
               [[k, v.tokens, v.n_star, fmt(v.delta), ", ".join(v.neurons[:4])] for k, v in rob.texts.items()])


def _precision(page: Page, prec: PrecisionData) -> None:
    page.heading("Precision")
    rows = []
    for r in prec.rows:
        if isinstance(r, PrecisionRow):
            float32 = "" if r.delta_in_float32 is None else r.delta_in_float32
            rows.append([r.dtype, r.n_star, fmt(r.baseline_ppl), fmt(r.masked_ppl), fmt(r.delta), fmt(float32),
                         r.error or ""])
        else:
            rows.append([r.dtype, r.n_star, fmt(""), fmt(""), fmt(""), fmt(""), r.error or ""])
    page.table(["dtype", "n*", "baseline PPL", "masked PPL", "Delta", "Delta of that set in float32", "note"], rows)


# Each analysis' section, by its name (also what a notebook cell of an AnalysisResult shows).
ANALYSIS_SECTIONS = {"phase": _phase, "distribution": _distribution, "components": _components, "sweep": _sweep,
                     "robustness": _robustness, "precision": _precision}


def _mechanism(page: Page, mech: MechanismReport) -> None:
    page.heading("Mechanism")
    page.table(["neuron", "max |a|", "at position", "x module median", "rank by |a|", "massive", "super-weight row"],
               [[n.neuron, fmt(n.max_abs), n.argmax_position, fmt(n.ratio_to_median), n.rank_by_max_abs, n.massive,
                 n.super_weight_row] for n in mech.neurons])
    rows = [[f"{group}: {label}", fmt(v)] for group, deltas in (("positions", mech.positions),
                                                                ("ablations", mech.ablations))
            for label, v in deltas.items()]
    rows += [[f"norm statistics {label}", fmt(v)] for label, v in mech.normalisation.items()]
    page.table(["lesion of the critical set", "Delta"], rows)
    page.para(f"Criteria: massive = {mech.criteria.massive}; super weight = {mech.criteria.super_weight}.")


def _minimal(page: Page, m: MinimalSets) -> None:
    page.heading(f"Minimal sets (epsilon {m.settings.epsilon})")
    optimum = "none within the pool" if m.optimum is None else len(m.optimum)
    page.table(["greedy", "irreducible", f"optimum in top {m.pool}", "forward rows (prune + search)"],
               [[len(m.greedy), len(m.irreducible), optimum, m.prune_rows + m.search_rows]])


def _eval(page: Page, ev: dict) -> None:
    page.heading("Evaluation")
    if "perplexity" in ev:
        page.table(["corpus", "masked", "tokens", "perplexity", "log10 ratio", "non-finite tokens"],
                   [[r["corpus"], r["level"], r["tokens"], fmt(r["ppl"]), fmt(r["log10_ratio"]),
                     r["nonfinite_tokens"]] for r in ev["perplexity"]])
    for level, tasks in ev.get("tasks", {}).items():
        page.table([f"task ({level} masked)", "metric", "value"],
                   [[t, m, fmt(v)] for t, metrics in tasks.items() for m, v in metrics.items()])
    if "humaneval" in ev:
        from ..evaluation.humaneval import outcome_summary
        # The checker's outcomes show a collapse even where pass@1 is 0 both ways.
        page.table(["HumanEval, masked", "passed", "pass@1", "checker outcomes"],
                   [[level, f"{h['passed']}/{h['problems']}", fmt(h["pass@1"]), outcome_summary(h["outcomes"].values())]
                    for level, h in ev["humaneval"].items()])
    if "ifbench" in ev:
        page.table(["IFBench, masked", "prompts", "prompt strict", "prompt loose", "instruction strict",
                    "instruction loose", "unchecked instructions"],
                   [[level, r["prompts"], fmt(r["prompt_strict"]), fmt(r["prompt_loose"]), fmt(r["instruction_strict"]),
                     fmt(r["instruction_loose"]), f"{r['unchecked_instructions']}/{r['instructions']}"]
                    for level, r in ev["ifbench"].items()])
