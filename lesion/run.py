"""A run folder: the one place that knows what lesion's result files are called and how a
result's text is kept.

    lesion-run/
      run.json                 the command, timings and date (the only file with a date, so
                               that the results beside it are byte-identical between runs)
      ranking.json             Stage 1    critical.json   Stage 2    fingerprints.json  verify
      compare.json  mechanism.json  eval.json  minimal-eps<E>.json  analysis-<name>.json
      text-<sha256[:16]>.txt   the input text, when it is too long to sit inline

Every result's ``settings`` records the text's SHA-256. A short text sits inline in
``settings.text``; a long one is written beside the result and named in
``settings.text_file``. Reading a result restores the text and checks it against the
hash: a text that is missing or altered is refused, never replaced by the default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LesionError
from .results import CriticalSet, Ranking, check_output_path, write_json, write_text
from .texts import text_hash

RANKING, CRITICAL, FINGERPRINTS, RUN = "ranking.json", "critical.json", "fingerprints.json", "run.json"
COMPARE, MECHANISM, EVAL = "compare.json", "mechanism.json", "eval.json"
INLINE_TEXT_CHARS = 2000  # longer texts go to a file beside the result, keeping the JSON readable


def text_file_name(sha256: str) -> str:
    return f"text-{sha256[:16]}.txt"


def minimal_name(epsilon: float) -> str:
    return f"minimal-eps{epsilon:g}.json"


def analysis_name(analysis: str) -> str:
    return f"analysis-{analysis}.json"


def write_result(path: str | Path, result: Any) -> Path:
    """Write a result (a dataclass with ``to_dict`` or a dict) as JSON; a long text in its
    settings goes to a file beside it, named by its hash."""
    path = check_output_path(path)
    data = result.to_dict() if dataclasses.is_dataclass(result) else dict(result)
    settings = data.get("settings")
    text = settings.get("text") if isinstance(settings, dict) else None
    if isinstance(text, str) and len(text) > INLINE_TEXT_CHARS:
        name = text_file_name(settings["text_sha256"])
        write_text(path.parent / name, text)
        data = {**data, "settings": {**settings, "text": None, "text_file": name}}
    return write_json(path, data)


def restore_text(settings: dict, folder: Path, source: str | Path) -> dict:
    """``settings`` with its text back inline, checked against ``text_sha256``.

    A result written before texts were always kept has ``text: null`` and no file: it is
    returned as is, and :func:`recorded_text` asks for the text when a command needs it.
    """
    text, name = settings.get("text"), settings.get("text_file")
    if text is None and name is not None:
        if not isinstance(name, str) or Path(name).name != name:
            raise LesionError(f"{str(source)!r} names its text file {name!r}, which is not a file name beside "
                              "it: re-create the result with lesion")
        file = folder / name
        if not file.is_file():
            raise LesionError(f"{str(source)!r} keeps its text in {str(file)!r}, which is missing: copy "
                              f"{name} back beside it")
        text = file.read_text(encoding="utf-8")
    if text is None:
        return settings
    if not isinstance(text, str) or text_hash(text) != settings.get("text_sha256"):
        raise LesionError(f"the text kept with {str(source)!r} does not match its recorded SHA-256 (it was "
                          "edited or replaced): re-create the result with lesion")
    return {**{k: v for k, v in settings.items() if k != "text_file"}, "text": text}


def recorded_text(settings: dict, given: str | None, source: str | Path) -> str:
    """The text a result was made on, or ``given`` (--text/--text-file) when it is the same text."""
    sha = settings.get("text_sha256")
    if not isinstance(sha, str):
        raise LesionError(f"{str(source)!r} records no text_sha256, so its text cannot be checked: "
                          "re-create it with lesion")
    if given is not None:
        if text_hash(given) != sha:
            raise LesionError(f"the text given is not the one {str(source)!r} was made on (SHA-256 "
                              f"{sha[:16]}...): drop --text/--text-file to use the recorded text")
        return given
    if settings.get("text") is None:
        raise LesionError(f"{str(source)!r} records no text (an older lesion left long texts out): pass the "
                          "text it was made on with --text-file")
    return settings["text"]


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

    def settings(self) -> dict:
        """What the run was made on (model, fingerprint, dtype, text, components), from its ranking."""
        return self.ranking().settings

    def study(self, lm, text: str | None = None):
        """The Study the run was made on, rebuilt on ``lm`` from what was recorded (text, components),
        refused if ``lm`` holds other weights or tokenises the text differently."""
        from .pipeline import Study
        return Study.recreate(lm, self.settings(), self.file(RANKING), text)

    def write(self, name: str, result: Any) -> Path:
        return write_result(self.file(name), result)
