"""The result of ``lesion scan`` (:meth:`lesion.Study.scan`): both stages, the fingerprints
``verify`` checks, and the timings, saved as a run folder in one unit."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ParameterError, ResultError
from ..runtime.files import json_text, read_json, write_files
from .base import Result, result_files
from .record import OpenRecord, renamed
from .sets import CriticalSet, Ranking
from .settings import Settings

from .filenames import CRITICAL, FINGERPRINTS, RANKING, RUN  # the files of a run folder a scan writes


@dataclass(frozen=True)
class ScanResult(Result):
    """Stage 1's ranking, Stage 2's critical set, the fingerprints of the weights around each
    critical neuron (None when no set reached epsilon), the seconds each step took and when
    the scan finished. Unpacks as ``ranking, critical = study.scan(...)``."""
    ranking: Ranking
    critical: CriticalSet
    fingerprints: dict[str, Any] | None
    timings: dict[str, float] = renamed("timings_s", default_factory=dict)
    finished: str = ""

    SOURCE = "run folder: pass the folder a scan wrote"

    def __iter__(self) -> Iterator:
        return iter((self.ranking, self.critical))

    @property
    def settings(self) -> Settings:  # type: ignore[override]
        return self.critical.settings

    def run_record(self) -> dict:
        """run.json: the only file of the folder with a date, so the results beside it are
        byte-identical between runs."""
        from ..runtime.distributed import record  # world_size and each rank's share under torchrun; {} in one process
        return {"command": "scan", "timings_s": self.timings, **record(), "finished": self.finished}

    def save(self, path: str | Path) -> Path:
        """Write the run folder as a unit: ranking.json, critical.json, fingerprints.json and
        run.json (and the text file of a long text) all appear, or none of them replaces what
        was there. A fingerprints.json left by an earlier scan whose set this one does not
        have is removed, so verify never checks another set's weights."""
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise ParameterError("path", f"{str(folder)!r} is a file: a scan writes a folder; pass a folder path")
        files = {**result_files(folder / RANKING, self.ranking, follow_link=False),
                 **result_files(folder / CRITICAL, self.critical, follow_link=False)}
        if self.fingerprints is not None:
            files[folder / FINGERPRINTS] = json_text(self.fingerprints)
        files[folder / RUN] = json_text(self.run_record())
        write_files(files, remove=[] if self.fingerprints is not None else [folder / FINGERPRINTS])
        return folder

    @classmethod
    def load(cls, path: str | Path) -> "ScanResult":
        folder = Path(path)
        if not folder.is_dir():
            raise ResultError(f"{str(folder)!r} is not a folder: {cls.SOURCE}")
        fingerprints = read_json(folder / FINGERPRINTS) if (folder / FINGERPRINTS).is_file() else None
        try:
            run = RunRecord.from_dict(read_json(folder / RUN)) if (folder / RUN).is_file() else RunRecord()
        except ValueError as e:
            raise ResultError(f"{str(folder / RUN)!r} is not a lesion run record ({e})") from None
        return cls(Ranking.load(folder / RANKING), CriticalSet.load(folder / CRITICAL), fingerprints, run.timings,
                   run.finished or "")


@dataclass(frozen=True)
class RunRecord(OpenRecord):
    """What run.json holds that a scan reads back (the command and each rank's share stay as written)."""
    timings_s: dict[str, float] | None = None
    finished: str | None = None

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.timings_s or {})
