"""One function per figure: a result (a typed record, or a result file's dict) in, matplotlib
Figure out (never a model).

A figure's text is plain (:data:`PLAIN_TEXT`): a text or corpus name in a tick label
(``$\\undefinedcmd$.txt``, ``$5 and $6``) is never read as mathtext or LaTeX, which drew
``$5 and $6`` as math and made a report refuse its folder as malformed. Each figure is built
inside that setting (and drawn inside it by :func:`lesion.report.html.png_bytes`); the user's own
matplotlib settings are left as they are.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..runtime.display import printable  # noqa: E402

if TYPE_CHECKING:
    from ..results.analysis import ComponentsData, DistributionData, PhaseData, RobustnessData, SweepData
    from ..results import CriticalSet, NeuronSet, Ranking

COLORS = {"noise": "#c0392b", "random": "#7f8c8d", "activation": "#2980b9", "gradient": "#27ae60"}
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}  # a label is the string it is given

_Drawing = TypeVar("_Drawing", bound=Callable)


def _plain_text(draw: _Drawing) -> _Drawing:
    """``draw`` run with :data:`PLAIN_TEXT`: every Text it makes keeps it (matplotlib reads the
    setting when a Text is made)."""
    @functools.wraps(draw)
    def plain(*args, **kwargs):
        with plt.rc_context(PLAIN_TEXT):
            return draw(*args, **kwargs)
    return plain  # type: ignore[return-value]


def _finite(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else float("nan")


@_plain_text
def phase_curve(phase: PhaseData) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ns = [p.n for p in phase.curve]
    ax.plot(ns, [_finite(p.delta) for p in phase.curve], marker="o", color=COLORS["noise"])
    ax.axvline(phase.n_star, ls="--", color="k", lw=1, label=f"n* = {phase.n_star}")
    ax.axhline(phase.epsilon, ls=":", color="grey", lw=1, label="epsilon")
    ax.set(xlabel="n (top-n noise-ranked neurons masked)", ylabel="Delta = log10 PPL ratio",
           title="Phase transition")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # n counts neurons: no 2.5 tick
    ax.legend()
    fig.tight_layout()
    return fig


@_plain_text
def ranker_comparison(compare: dict) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rankers = sorted({r["ranker"] for r in compare["rows"]}, key=lambda r: list(COLORS).index(r) if r in COLORS else 9)
    for ranker in rankers:
        rows = [r for r in compare["rows"] if r["ranker"] == ranker]
        ax.errorbar([r["n"] for r in rows], [_finite(r["delta"]) for r in rows],
                    yerr=[_finite(r["delta_std"]) for r in rows], marker="o", capsize=3, label=printable(ranker),
                    color=COLORS.get(ranker), zorder=3 if ranker == "noise" else 2,
                    ls="--" if ranker == "activation" else "-")  # activation can overlay noise exactly
    ax.set_xscale("log")
    ax.set(xlabel="n (top-n masked)", ylabel="Delta = log10 PPL ratio", title="Noise ranking vs baselines")
    ax.legend()
    fig.tight_layout()
    return fig


@_plain_text
def layer_kind_heatmap(distribution: DistributionData, key: str) -> Figure:
    layers, kinds = list(distribution.layers), list(distribution.kinds)
    grid = [[0] * len(layers) for _ in kinds]
    for cell in distribution.top[key].cells:
        grid[kinds.index(cell.kind)][layers.index(cell.layer)] = cell.count
    fig, ax = plt.subplots(figsize=(max(6.4, 0.25 * len(layers) + 2), 0.4 * len(kinds) + 1.6))
    im = ax.imshow(grid, aspect="auto", cmap="Reds")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xticks(range(len(layers)), layers, fontsize=7)
    for cell in distribution.critical.cells:
        ax.plot(layers.index(cell.layer), kinds.index(cell.kind), marker="*", color="k", ms=12)
    ax.set(xlabel="layer", title=f"{key} neurons by layer and component (star: critical set)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


@_plain_text
def sweep_plot(sweep: SweepData) -> Figure:
    panels = [(v, label) for v, label in (("alpha", "alpha"), ("samples", "K (noise samples)"), ("seed", "seed"))
              if any(r.varied == v for r in sweep.rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (varied, label) in zip(axes[0], panels):
        # (x, n*, Jaccard to the reference) per point
        points = [(getattr(r, varied), r.n_star, r.jaccard_to_reference) for r in sweep.rows if r.varied == varied]
        line = "-"
        if varied == "seed" and sweep.reference is not None:  # seeds are labels, not a scale: the reference's
            points = [(sweep.reference.seed, sweep.reference.n_star, 1.0), *points]  # first, no lines between
        if varied == "seed":
            line = "none"
        xs = [str(x) for x, _, _ in points] if varied == "seed" else [x for x, _, _ in points]
        n_star, = ax.plot(xs, [n if n is not None else float("nan") for _, n, _ in points],
                          marker="o", linestyle=line)
        ax2 = ax.twinx()
        overlap, = ax2.plot(xs, [j if j is not None else float("nan") for _, _, j in points], marker="s",
                            color="grey", linestyle=line)
        ax2.set_ylim(0, 1.05)
        ax.set(xlabel=label, ylabel="n*")
        ax2.set_ylabel("Jaccard to reference set")
    fig.legend([n_star, overlap], ["n* (left axis)", "Jaccard to reference (right axis)"], loc="upper left",
               fontsize=8, frameon=False)
    fig.suptitle("Sensitivity of the critical set")
    fig.tight_layout()
    return fig


@_plain_text
def component_plot(components: ComponentsData) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for kind, rows in components.by_kind.items():
        ax.plot([r.n for r in rows], [_finite(r.delta) for r in rows], marker="o", label=kind)
    ax.set_xscale("log")
    ax.set(xlabel="top-n of one component kind masked", ylabel="Delta", title="Component ablation")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


@_plain_text
def overlap_heatmap(robustness: RobustnessData) -> Figure:
    names = [printable(name) for name in robustness.names]
    fig, ax = plt.subplots(figsize=(0.55 * len(names) + 2.5, 0.5 * len(names) + 1.5))
    im = ax.imshow([list(row) for row in robustness.jaccard], vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title("Critical-set overlap across texts (Jaccard)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def layer_and_kind(neuron: str) -> tuple[int, str]:
    """``model.layers.11.mlp.down_proj:507`` -> ``(11, "mlp.down_proj")``: read from the name alone,
    so the report needs no model. The kind keeps its parent (``attn.c_proj`` vs ``mlp.c_proj``)."""
    parts = neuron.rpartition(":")[0].split(".")
    at = next((i for i, part in enumerate(parts) if part.isdigit()), None)
    if at is None:
        return -1, ".".join(parts[-2:])
    return int(parts[at]), ".".join(parts[at + 1:])


@_plain_text
def ranking_map(ranking: Ranking, critical: NeuronSet, top: int = 100) -> Figure:
    """Layer x component counts of the ranking's top neurons, the critical set starred."""
    top_cells = [layer_and_kind(str(n)) for n in ranking.neurons[:top]]
    critical_cells = [layer_and_kind(str(n)) for n in critical.neurons]
    layers = sorted({layer for layer, _ in top_cells + critical_cells})
    kinds = sorted({kind for _, kind in top_cells + critical_cells})
    grid = [[0] * len(layers) for _ in kinds]
    for layer, kind in top_cells:
        grid[kinds.index(kind)][layers.index(layer)] += 1
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * len(layers) + 2.5), 0.4 * len(kinds) + 1.8))
    im = ax.imshow(grid, aspect="auto", cmap="Reds")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xticks(range(len(layers)), layers, fontsize=8)
    for layer, kind in set(critical_cells):
        ax.plot(layers.index(layer), kinds.index(kind), marker="*", color="k", ms=12)
    shown = min(top, len(ranking.neurons))
    ax.set(xlabel="layer (only layers holding one of them)",
           title=f"Top {shown} of {ranking.total_neurons} ranked neurons (star: critical set)")
    fig.colorbar(im, ax=ax, label="neurons")
    fig.tight_layout()
    return fig


@_plain_text
def stage2_trajectory(critical: CriticalSet) -> Figure:
    """Delta against n as Stage 2 grew the set; n = 0 is the unmasked model (Delta 0 by definition)."""
    points = [(0, 0.0)] + [(t.n, _finite(t.delta)) for t in critical.trajectory]
    epsilon = critical.settings.epsilon_or_default
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([n for n, _ in points], [d for _, d in points], marker="o", color=COLORS["noise"])
    ax.axhline(epsilon, ls=":", color="grey", lw=1, label=f"epsilon = {epsilon}")
    if critical.reached:
        ax.axvline(critical.n, ls="--", color="k", lw=1, label=f"n* = {critical.n}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="n (top-n ranked neurons masked)", ylabel="Delta = log10 PPL ratio",
           title="Stage 2: greedy masking until Delta >= epsilon")
    ax.legend()
    fig.tight_layout()
    return fig


@_plain_text
def score_distribution(ranking: Ranking, critical: NeuronSet | None = None) -> Figure:
    """Scores of the kept top of the ranking by rank, log-log: how far the first few stand out."""
    scores = [_finite(s) for s in ranking.scores]
    ranks = range(1, len(scores) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(ranks, scores, color="#555", lw=1)
    where = {n: i for i, n in enumerate(ranking.neurons)}
    marked = [where[n] for n in (critical.neurons if critical is not None else ()) if n in where]
    ax.scatter([i + 1 for i in marked], [scores[i] for i in marked], marker="*", s=120, color=COLORS["noise"],
               zorder=3, label="critical set")
    ax.set_xscale("log")
    ax.set_yscale("log")
    median = sorted(scores)[len(scores) // 2] if scores else float("nan")
    stands_out = f": the top is {scores[0] / median:,.0f}x the median" if median > 0 else ""
    ax.set(xlabel=f"rank (top {len(scores)} of {ranking.total_neurons} kept)", ylabel=f"{ranking.ranker} score",
           title=f"Score by rank{stands_out}")
    if marked:
        ax.legend()
    fig.tight_layout()
    return fig
