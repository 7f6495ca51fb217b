"""Notebook views of the mechanism report, the hardening record and the analyses: the same
tables as ``report.html`` and ``harden.md``, drawn from the typed result alone.

Registered by :mod:`lesion.report.notebook` (which imports this module); the report's figures are
taken on first use, so that registering stays cheap.
"""
from __future__ import annotations

from ..results.views import register_html_view
from .html import html_text

SHOWN = 20  # rows of neurons in a notebook cell; the object holds them all


def _head(text: str) -> str:
    return f"<p>{text}</p>"


def mechanism_html(report) -> str:
    """A :class:`~lesion.results.MechanismReport`: the neurons tested, the set's lesions, coverage."""
    from .html import fmt, html_table
    coverage = (f"{report.neurons_tested} of {report.critical_size} critical neurons tested one by one; "
                f"stopped: {html_text(str(report.stopped))}")
    neurons = html_table(["neuron", "max |a|", "at position", "x module median", "massive", "super-weight row",
                          "Delta alone", "Delta at position 0"],
                         [[n.neuron, fmt(n.max_abs), n.argmax_position, fmt(n.ratio_to_median), n.massive,
                           n.super_weight_row, fmt(n.alone.zero), fmt(n.alone.position0)]
                          for n in report.neurons[:SHOWN]])
    lesions = [[f"position: {label}", fmt(v)] for label, v in report.positions.items()]
    lesions += [[f"ablation: {label}", fmt(v)] for label, v in report.ablations.items()]
    lesions += [[f"norm statistics {label}", fmt(v)] for label, v in report.normalisation.items()]
    labels = "".join(f"<li><code>{html_text(n.neuron)}</code>: {html_text(label)}</li>"
                     for n in report.neurons[:SHOWN] for label in n.labels)
    return (_head(f"<b>Mechanism</b> of the critical set: {coverage}") + neurons
            + html_table(["lesion of the critical set", "Delta"], lesions)
            + (f"<ul>{labels}</ul>" if labels else ""))


def harden_html(record) -> str:
    """A :class:`~lesion.results.HardenRecord`: the rotation, the proof and the heel before and after."""
    from ..harden.report import markdown
    return f"<b>HardenRecord</b><pre>{html_text(markdown(record), newlines=True)}</pre>"


def analysis_html(result) -> str:
    """A :class:`~lesion.results.analysis.AnalysisResult`: its figure and table, as in ``report.html``."""
    from . import render
    from .html import html_image, png_bytes

    class _Cell:  # collects what a report section draws, for one notebook cell
        def __init__(self):
            self.html: list[str] = []

        def heading(self, text):
            self.html.append(f"<h4>{html_text(text)}</h4>")

        def para(self, text):
            self.html.append(f"<p>{html_text(text)}</p>")

        def table(self, header, rows):
            from .html import html_table
            self.html.append(html_table(header, rows))

        def figure(self, name, fig):
            self.html.append(html_image(name, png_bytes(fig)))

    section = render.ANALYSIS_SECTIONS.get(result.analysis)
    if section is None:
        return f"<b>{html_text(result.analysis)}</b>"
    cell = _Cell()
    section(cell, result.data)
    model = "" if result.model is None else f" of {html_text(result.model)}"
    return _head(f"<b>Analysis</b> {html_text(result.analysis)}{model}") + "".join(cell.html)


register_html_view("MechanismReport", mechanism_html)
register_html_view("HardenRecord", harden_html)
register_html_view("AnalysisResult", analysis_html)
