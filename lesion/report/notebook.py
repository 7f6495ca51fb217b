"""How results look in a Jupyter notebook: the views ``_repr_html_`` of the result types finds.

The same tables and figures as the report (lesion/report), drawn from the result object alone.
Importing this module registers the views (:mod:`lesion.results.views`); the ``lesion`` package does
so in a notebook. It takes the report's figures on first use, so that registering is cheap.
"""
from __future__ import annotations

from ..results.views import register_html_view
from .html import html_text

SHOWN = 20  # rows of neurons in a notebook cell; the object holds them all


def _neuron_rows(neurons, *extra_columns) -> list[list]:
    from .html import fmt
    return [[i, str(n), *(fmt(c[i - 1]) for c in extra_columns)] for i, n in enumerate(neurons[:SHOWN], 1)]


def ranking_html(ranking) -> str:
    """Top of a :class:`~lesion.results.Ranking` and its scores by rank."""
    from . import figures
    from .html import html_image, html_table, png_bytes
    positions = ranking.positions or [""] * len(ranking.neurons)
    rows = [[*row, positions[row[0] - 1]] for row in _neuron_rows(ranking.neurons, ranking.scores)]
    head = (f"<p><b>Ranking</b> of {ranking.total_neurons} neurons of {html_text(ranking.model)} by the "
            f"{html_text(ranking.ranker)} ranker: top {min(SHOWN, len(ranking.neurons))} of the "
            f"{len(ranking.neurons)} kept</p>")
    figure = figures.score_distribution(ranking)
    return head + html_table(["rank", "neuron", "score", "position"], rows) + html_image("scores", png_bytes(figure))


def critical_html(critical) -> str:
    """A :class:`~lesion.results.CriticalSet`: verdict, neurons and the Stage 2 trajectory."""
    from . import figures
    from .html import fmt, html_image, html_table, png_bytes
    epsilon = critical.settings.epsilon_or_default
    verdict = (f"{len(critical.neurons)} neuron(s) reach Delta >= {epsilon}" if critical.reached
               else f"Delta >= {epsilon} not reached")
    head = (f"<p><b>Critical set</b> of {html_text(critical.model)}: {verdict}; perplexity "
            f"{fmt(critical.baseline_ppl)} -> {fmt(critical.masked_ppl)}, Delta {fmt(critical.delta)}</p>")
    rows = _neuron_rows(critical.neurons)
    if len(critical.neurons) > SHOWN:
        rows.append(["...", f"{len(critical.neurons) - SHOWN} more"])
    figure = figures.stage2_trajectory(critical)
    return head + html_table(["#", "neuron"], rows) + html_image("trajectory", png_bytes(figure))


def heel_html(heel) -> str:
    """A :class:`~lesion.results.Heel`: verdict, each neuron (layer, kind, Delta alone), the Delta on
    each text, and the certificate."""
    from .html import fmt, html_table
    epsilon = heel.settings.epsilon_or_default
    verdict = (f"{len(heel.neurons)} neuron(s) reach Delta >= {epsilon:g}" if heel.reached
               else f"Delta >= {epsilon:g} not reached ({heel.stopped}); the best set evaluated")
    head = (f"<p><b>Heel</b> of {html_text(heel.model)}: {verdict}; Delta {fmt(heel.delta)}, perplexity "
            f"{fmt(heel.baseline_ppl)} -> {fmt(heel.masked_ppl)}; {heel.rows} masked rows, {fmt(heel.seconds)} s</p>")
    profiles = {p.neuron: p for p in heel.profile}
    rows = []
    for i, neuron in enumerate(heel.neurons[:SHOWN], 1):
        p = profiles.get(str(neuron))
        rows.append([i, str(neuron), "" if p is None else p.layer, "" if p is None else p.kind,
                     "-" if p is None or p.alone is None else fmt(p.alone)])
    if len(heel.neurons) > SHOWN:
        rows.append(["...", f"{len(heel.neurons) - SHOWN} more", "", "", ""])
    texts = [[t.name or f"text{i}", "" if t.tokens is None else t.tokens, fmt(t.baseline_ppl),
              "-" if t.masked_ppl is None else fmt(t.masked_ppl), fmt(t.delta)]
             for i, t in enumerate(heel.texts, 1)]
    cert = heel.certificate
    sizes = ", ".join(f"size {k}: {fmt(v)}" for k, v in (cert.best_delta_by_size or {}).items())
    certificate = (f"<p><b>Certificate</b>: {'certified' if cert.certified else 'not certified'}"
                   f"{'' if cert.note is None else '; ' + html_text(cert.note)}"
                   f"{'' if not sizes else '; best Delta by size: ' + sizes}</p>")
    return (head + html_table(["#", "neuron", "layer", "kind", "Delta alone"], rows)
            + html_table(["text", "tokens", "baseline PPL", "masked PPL", "Delta"], texts) + certificate)


register_html_view("Ranking", ranking_html)
register_html_view("CriticalSet", critical_html)
from . import notebook_views as notebook_payloads  # noqa: E402,F401  (the mechanism, hardening and analysis views)
register_html_view("Heel", heel_html)
