"""A run folder: the one place that knows what lesion's result files are called and how a
result's text is kept.

    lesion-run/
      run.json                 the command, timings and date (the only file with a date, so
                               that the results beside it are byte-identical between runs)
      ranking.json             Stage 1    critical.json   Stage 2    fingerprints.json  verify
      compare.json  mechanism.json  eval.json  minimal-eps<E>.json  analysis-<name>.json
      text-<sha256[:16]>.txt   the input text, when it is too long to sit inline

How a result's text is kept beside it: :mod:`lesion.results.base`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LesionError
from .results import CriticalSet, Ranking, ScanResult, save_result
from .results.scan import CRITICAL, FINGERPRINTS, RANKING, RUN

__all__ = ["CRITICAL", "COMPARE", "EVAL", "FINGERPRINTS", "MECHANISM", "RANKING", "RUN", "RunFolder", "ScanResult",
           "analysis_name", "minimal_name"]
COMPARE, MECHANISM, EVAL = "compare.json", "mechanism.json", "eval.json"


def minimal_name(epsilon: float) -> str:
    return f"minimal-eps{epsilon:g}.json"


def analysis_name(analysis: str) -> str:
    return f"analysis-{analysis}.json"


@dataclass(frozen=True)
class RunFolder:
    """A folder written by ``lesion scan``: its typed results and the Study they were made on."""
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # accept a str, as every CLI flag gives

    def file(self, name: str) -> Path:
        return self.path / name

    def _require(self, name: str) -> Path:
        file = self.file(name)
        if self.path.exists() and not self.path.is_dir():
            raise LesionError(f"{str(self.path)!r} is not a folder: pass the folder `lesion scan --out` wrote")
        if not file.is_file():
            raise LesionError(f"{str(self.path)!r} has no {name}: run `lesion scan --out {self.path}` first")
        return file

    def ranking(self) -> Ranking:
        return Ranking.load(self._require(RANKING))

    def critical(self) -> CriticalSet:
        return CriticalSet.load(self._require(CRITICAL))

    def scan(self) -> ScanResult:
        """Everything ``lesion scan`` wrote here, read back and checked."""
        self._require(CRITICAL)
        return ScanResult.load(self.path)

    def settings(self) -> dict:
        """What the run was made on (model, fingerprint, dtype, text, components), from its ranking."""
        return self.ranking().settings

    def study(self, lm, text: str | None = None):
        """The Study the run was made on, rebuilt on ``lm`` from what was recorded (text, components),
        refused if ``lm`` holds other weights or tokenises the text differently."""
        from .study import Study
        return Study.recreate(lm, self.settings(), self.file(RANKING), text)

    def write(self, name: str, result: Any) -> Path:
        return save_result(self.file(name), result)
