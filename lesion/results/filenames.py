"""The one owner of lesion's result file names (a leaf: imports nothing), so that the results
that write them, the run folder that reads them and the report that renders them agree.

    lesion-run/                  (lesion scan --out; lesion.replay.runfolder.RunFolder reads it)
      run.json  ranking.json  critical.json  fingerprints.json
      compare.json  mechanism.json  eval.json  minimal-eps<E>.json  analysis-<name>.json
      report.html  report.md
    heel.json                    (lesion search's default --out)
    <hardened model>/            lesion-harden.json  harden.md  lesion-files.json
"""
RUN, RANKING, CRITICAL, FINGERPRINTS = "run.json", "ranking.json", "critical.json", "fingerprints.json"
COMPARE, MECHANISM, EVAL = "compare.json", "mechanism.json", "eval.json"
REPORT_HTML, REPORT_MD = "report.html", "report.md"
HEEL = "heel.json"
HARDEN_RECORD, HARDEN_REPORT, HARDEN_MANIFEST = "lesion-harden.json", "harden.md", "lesion-files.json"
MINIMAL_PREFIX, ANALYSIS_PREFIX = "minimal-eps", "analysis-"


def minimal_name(epsilon: float) -> str:
    """``lesion minimal``'s file at ``epsilon``: minimal-eps2.json."""
    return f"{MINIMAL_PREFIX}{epsilon:g}.json"


def analysis_name(analysis: str) -> str:
    """``lesion analyze NAME``'s file: analysis-NAME.json."""
    return f"{ANALYSIS_PREFIX}{analysis}.json"
