"""The result of :func:`lesion.analysis.run_analysis`: one of the paper's analyses."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..files import as_settings
from .base import Result


@dataclass(frozen=True)
class AnalysisResult(Result):
    """What ``analysis-NAME.json`` holds: the analysis' name, the model, its figures (``data``,
    whose keys are the file's top-level keys, as each analysis defines them) and the settings."""
    analysis: str
    model: str | None
    data: dict
    settings: dict = field(default_factory=dict)

    SOURCE = "analysis: pass analysis-NAME.json from `lesion analyze`"

    def to_dict(self) -> dict:
        return {"analysis": self.analysis, "model": self.model, **self.data, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "AnalysisResult":
        data = {k: v for k, v in d.items() if k not in ("analysis", "model", "settings")}
        return cls(analysis=str(d["analysis"]), model=d.get("model"), data=data, settings=as_settings(d["settings"]))

    def __getitem__(self, key: str):
        """``result["rows"]``: the figures by the names the JSON file gives them."""
        return self.data[key]
