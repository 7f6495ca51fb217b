"""A run folder: its results read back as typed objects, and checked to belong together (the
file names are :mod:`lesion.results.filenames`').

    lesion-run/
      run.json                 the command, timings and date (the only file with a date, so
                               that the results beside it are byte-identical between runs)
      ranking.json             Stage 1    critical.json   Stage 2    fingerprints.json  verify
      compare.json  mechanism.json  eval.json  minimal-eps<E>.json  analysis-<name>.json
      text-<sha256[:16]>.txt   the input text, when it is too long to sit inline

How a result's text is kept beside it: :mod:`lesion.results.base`.

Every reader of a run folder reads it through :class:`RunFolder`, which first checks that its
files belong together (:meth:`RunFolder.check`): each result file read back reproduces itself,
all were made on the same weights and text, the critical set is the top of the ranking beside
it under the ranking's settings, and the fingerprints are those of its neurons (as ``lesion
verify`` requires). A folder that mixes runs, or whose files were edited, is refused with one
line (:class:`InconsistentRun`), never reported, masked or analysed as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InconsistentRun, LesionError, ResultError
from ..runtime.files import read_json
from ..results import CriticalSet, Heel, NeuronSet, Ranking, ScanResult, Settings, Stopped, load_neuron_set, save_result
from ..results.filenames import (ANALYSIS_PREFIX, COMPARE, CRITICAL, EVAL, FINGERPRINTS, MECHANISM, MINIMAL_PREFIX,
                                 RANKING, RUN, analysis_name, minimal_name)

__all__ = ["CRITICAL", "COMPARE", "EVAL", "FINGERPRINTS", "MECHANISM", "RANKING", "RUN", "InconsistentRun",
           "RunFolder", "ScanResult", "analysis_name", "minimal_name", "read_neuron_set"]
# Settings a later step may record differently from the ranking it read: where and with which
# versions it ran, the model's name (the same weights load from another path), how the text is kept.
PER_STEP = frozenset({"model", "device", "versions", "text", "text_file"})


def _on_the_run_text(name: str) -> bool:
    """Whether the result file ``name`` is about the run's critical set, so made on its text."""
    if name in (CRITICAL, MECHANISM) or name.startswith(MINIMAL_PREFIX):
        return True
    if name.startswith(ANALYSIS_PREFIX) and name.endswith(".json"):
        from ..analysis.registry import REGISTRY
        analysis = REGISTRY.get(name[len(ANALYSIS_PREFIX):-len(".json")])
        return analysis is not None and analysis.on == "run"
    return False


def read_neuron_set(path: str | Path, need_neurons: bool = False) -> NeuronSet:
    """A critical.json or heel.json; a critical.json in a run folder only if the folder's files
    belong together (:meth:`RunFolder.check`). ``need_neurons``: one whose search found no set is
    refused (there is nothing to mask, evaluate or explain)."""
    path = Path(path)
    if path.name == CRITICAL and path.is_file():
        RunFolder(path.parent).check()
    found = load_neuron_set(path)
    if need_neurons:
        check_has_neurons(found, path)
    return found


def check_has_neurons(found: NeuronSet, source: str | Path) -> None:
    if not found.neurons:
        raise ResultError(f"{str(source)!r} {no_neurons(found)}")


def no_neurons(found: NeuronSet) -> str:
    """Why a neuron set has no neurons, and what to do: the words depend on what made it and how it stopped."""
    if isinstance(found, Heel) and found.stopped in (Stopped.BUDGET, Stopped.INTERRUPTED):
        how = "its budget (`max_rows` / `time_budget`)" if found.stopped == Stopped.BUDGET else "an interrupt"
        return (f"has no neurons: its search was stopped by {how} after {found.rows} masked rows, before any set "
                "reached `epsilon`; continue it with `resume`, or give it a larger budget")
    cap = "`max_size`" if isinstance(found, Heel) else "`max_neurons`"
    return (f"has no neurons: no set reached `epsilon` within {cap}; pass a result whose 'reached' is true, or "
            f"search again with a lower `epsilon` or a larger {cap}")


@dataclass(frozen=True)
class RunFolder:
    """A folder written by ``lesion scan``: its typed results and the Study they were made on."""
    path: Path
    _checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # accept a str, as every CLI flag gives

    def file(self, name: str) -> Path:
        return self.path / name

    def check(self) -> "RunFolder":
        """Refuse (:class:`InconsistentRun`, one line) a folder whose files do not belong together.

        Checked, for the files present: ranking.json and critical.json each reproduce themselves
        (as every load checks); every result file with settings was made on the ranking's weights
        and text (model fingerprint, text SHA-256); critical.json was made from this ranking (its
        settings agree with the ranking's) and its neurons are the ranking's top; fingerprints.json
        fingerprints exactly those neurons. Checked once per :class:`RunFolder`."""
        if self._checked or not self.path.is_dir():
            return self
        if self.file(RUN).exists():  # read by no report, but a damaged run.json says the folder was damaged
            read_json(self.file(RUN))
        ranking = Ranking.load(self.file(RANKING)) if self.file(RANKING).is_file() else None
        critical = CriticalSet.load(self.file(CRITICAL)) if self.file(CRITICAL).is_file() else None
        reference = (RANKING, ranking.settings) if ranking else (CRITICAL, critical.settings) if critical else None
        if reference is not None:
            for file in sorted(self.path.glob("*.json")):
                if file.name not in (reference[0], FINGERPRINTS, RUN):
                    self._same_identity(file, reference)
        if ranking is not None and critical is not None:
            self._critical_from_ranking(ranking, critical)
        if critical is not None and self.file(FINGERPRINTS).is_file():
            from .verify import read_fingerprints
            try:
                read_fingerprints(critical, self.file(FINGERPRINTS), self.file(CRITICAL))
            except LesionError as e:
                raise InconsistentRun(str(e)) from None
        object.__setattr__(self, "_checked", True)
        return self

    def _same_identity(self, file: Path, reference: tuple[str, Settings]) -> None:
        try:
            data = read_json(file)
            settings = Settings.from_dict(data["settings"])
        except (LesionError, TypeError, KeyError, ValueError):
            return  # not a result of this folder's (a reader of that file refuses it on its own)
        name, expected = reference
        # Every result here was made on the run's weights; those about its critical set also on its
        # text (compare, robustness, precision and the text analyses choose their own texts).
        pairs = {"model_fingerprint": (settings.model_fingerprint, expected.model_fingerprint)}
        if _on_the_run_text(file.name):
            pairs["text_sha256"] = (settings.text_sha256, expected.text_sha256)
        for key, (theirs, ours) in pairs.items():
            if theirs is not None and ours is not None and theirs != ours:
                what = "model weights" if key == "model_fingerprint" else "text"
                raise InconsistentRun(f"{str(file)!r} was made on other {what} than {name} beside it ({key} "
                                      f"{str(theirs)[:16]} vs {str(ours)[:16]}): the folder mixes runs; move "
                                      f"{file.name} out or re-create it on this run")

    def _critical_from_ranking(self, ranking: Ranking, critical: CriticalSet) -> None:
        source = str(self.file(CRITICAL))
        ours, theirs = ranking.settings.to_dict(), critical.settings.to_dict()
        differs = sorted(k for k, v in ours.items() if k not in PER_STEP and theirs.get(k, v) != v)
        if differs:
            raise InconsistentRun(f"{source!r} was not made from the ranking beside it ({', '.join(differs)} "
                                  f"differ): the folder mixes runs; re-run `lesion identify` on this ranking")
        top = ranking.neurons[:len(critical.neurons)]
        if tuple(critical.neurons) != tuple(top):
            at = next(i for i, (a, b) in enumerate(zip(critical.neurons, top)) if a != b) if len(top) == len(
                critical.neurons) else len(top)
            raise InconsistentRun(f"{source!r} lists {critical.neurons[at]} as critical neuron {at + 1}, but the "
                                  f"ranking beside it has {top[at] if at < len(top) else 'no neuron'} there: Stage 2 "
                                  "masks the ranking's top, so it was edited or comes from another ranking")

    def _require(self, name: str) -> Path:
        file = self.file(name)
        if self.path.exists() and not self.path.is_dir():
            raise ResultError(f"{str(self.path)!r} is not a folder: pass the run folder a scan wrote")
        if not file.is_file():
            raise ResultError(f"{str(self.path)!r} has no {name}: write a scan into it first (`lesion scan`)")
        self.check()
        return file

    def ranking(self) -> Ranking:
        return Ranking.load(self._require(RANKING))

    def critical(self) -> CriticalSet:
        return CriticalSet.load(self._require(CRITICAL))

    def scan(self) -> ScanResult:
        """Everything ``lesion scan`` wrote here, read back and checked."""
        self._require(CRITICAL)
        return ScanResult.load(self.check().path)

    def settings(self) -> Settings:
        """What the run was made on (model, fingerprint, dtype, text, components), from its ranking."""
        return self.ranking().settings

    def study(self, lm, text: str | None = None):
        """The Study the run was made on, rebuilt on ``lm`` from what was recorded (text, components),
        refused if ``lm`` holds other weights or tokenises the text differently."""
        from ..method.study import Study
        return Study.recreate(lm, self.settings(), self.file(RANKING), text)

    def write(self, name: str, result: Any) -> Path:
        return save_result(self.file(name), result, follow_link=False)
