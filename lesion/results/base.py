"""The one shape of every lesion result: ``to_dict``/``from_dict`` derived from its fields (schema
versioned), ``save``/``load``, a notebook view, and a typed :class:`Provenance` read from the
result's typed :class:`~lesion.results.settings.Settings`.

Every result's ``settings`` records the text's SHA-256. A short text sits inline in
``settings.text``; a long one is written beside the result and named in
``settings.text_file``. Loading a result restores the text and checks it against the hash:
a text that is missing or altered is refused, never replaced by the default.
"""
from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import ParameterError, ResultError, SchemaError
from ..runtime.anytime import WORK_STOPS, Stopped
from ..runtime.files import check_output_path, json_text, read_json, write_files
from ..texts.text import text_hash
from .views import html_view
from .record import Record, decode, encode
from .settings import Settings

INLINE_TEXT_CHARS = 2000  # longer texts go to a file beside the result, keeping the JSON readable
R = TypeVar("R", bound="Result")


@dataclass(frozen=True)
class Provenance:
    """What a result was computed on and with, as recorded in its settings."""
    model: str | None
    model_fingerprint: str | None
    dtype: str | None
    device: str | None
    text_sha256: str | None
    tokens: int | None
    versions: dict
    model_revision: str | None = None  # a hub id's commit, the snapshot the model was loaded from
    partial_view: dict | None = None  # what lesion did not see, when a partial view was accepted

    @property
    def partial(self) -> bool:
        return self.partial_view is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Provenance":
        sha = settings.text_sha256 if isinstance(settings.text_sha256, str) else None  # one text's hash
        return cls(settings.model, settings.model_fingerprint, settings.dtype, settings.device, sha,
                   settings.tokens, dict(settings.versions or {}), settings.model_revision, settings.partial_view)


class Result(Record):
    """Base of every result type: a frozen dataclass whose ``to_dict``/``from_dict`` derive from its
    fields (:class:`~lesion.results.record.Record`), with typed :class:`Settings`.

    ``SCHEMA`` is the version of the file's shape. Files of schema 1 (all files so far) carry no
    schema key and keep their bytes; a later schema is written as ``"schema": N`` first. A file
    naming a schema other than the class's is refused with one line (:class:`SchemaError`).
    Subclasses set ``SOURCE`` (what file to pass, for errors); a result that records why it
    stopped (a ``stopped`` field) records one of ``STOPS``."""
    SOURCE: ClassVar[str] = "result"
    SCHEMA: ClassVar[int] = 1
    STOPS: ClassVar[frozenset[Stopped]] = WORK_STOPS
    settings: Settings

    def to_dict(self) -> dict:
        data = encode(self)
        return data if self.SCHEMA == 1 else {"schema": self.SCHEMA, **data}

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        if isinstance(data, dict) and "schema" in data:
            check_schema(cls, data, cls.__name__)
            data = {k: v for k, v in data.items() if k != "schema"}
        return decode(cls, data, cls.__name__)

    @property
    def provenance(self) -> Provenance:
        return Provenance.from_settings(self.settings)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically; a long text goes to a file beside it."""
        return save_result(path, self)

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """The result in ``path``, its text restored from where it was kept and checked."""
        data = read_json(path)
        if isinstance(data, dict):
            check_schema(cls, data, repr(str(path)))
        try:
            result = cls.from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            detail = f"missing {e}" if isinstance(e, KeyError) else str(e) or "unexpected structure"
            raise ResultError(f"{str(path)!r} is not a lesion {cls.SOURCE} ({detail})") from None
        problem = _common_inconsistency(result) or result.inconsistency(data)
        if problem:
            raise ResultError(f"{str(path)!r} contradicts itself ({problem}): it was edited or damaged; "
                              "re-create it with lesion")
        settings = restore_text(result.settings, Path(path).parent, path)
        # every concrete result is a dataclass (the base is not, so the checker cannot tell)
        return dataclasses.replace(result, settings=settings)  # type: ignore[type-var]

    def inconsistency(self, data: dict) -> str | None:
        """What in this result (read from ``data``) contradicts the rest of it, naming the field; None
        when nothing does. Subclasses check what their figures must satisfy."""
        return None

    def _repr_html_(self) -> str:
        view = html_view(self)  # registered by lesion.report.notebook: the view layer sits above the results
        if view is not None:
            return view(self)
        summary = {k: v for k, v in self.to_dict().items() if k != "settings"}
        return (f"<b>{type(self).__name__}</b><pre>"
                f"{html.escape(json.dumps(summary, indent=1, default=str)[:4000])}</pre>")


def model_inconsistency(result: Any) -> str | None:
    """A result's model against the one its settings record (both set from the same loaded model)."""
    recorded = result.settings.model
    if result.model and recorded and result.model != recorded:
        return f"model is {result.model!r} but its settings record {recorded!r}"
    return None


def _common_inconsistency(result: Result) -> str | None:
    """What any result may contradict: a count (every top-level whole-number field is one) below zero, a
    stop reason of another kind of work (a search's on an evaluation)."""
    for f in dataclasses.fields(result):  # type: ignore[arg-type]
        value = getattr(result, f.name)
        if type(value) is int and value < 0:
            return f"{f.name} is {value}, a count below zero"
        if isinstance(value, Stopped) and value not in result.STOPS:
            return f"{f.name} is {value.value!r}, which this kind of result never records"
    return None


def check_schema(cls: type, data: dict, where: str) -> None:
    """Refuse ``data`` when it names a schema other than ``cls.SCHEMA`` (none named: schema 1)."""
    schema = data.get("schema", 1)
    if schema != cls.SCHEMA:  # type: ignore[attr-defined]
        raise SchemaError(f"{where} is written in schema {schema!r} of a lesion {cls.SOURCE.split(':')[0]}; "  # type: ignore[attr-defined]
                          f"this lesion reads schema {cls.SCHEMA}: upgrade lesion, or re-create it with this "  # type: ignore[attr-defined]
                          "one")


def text_file_name(sha256: str) -> str:
    return f"text-{sha256[:16]}.txt"


def save_result(path: str | Path, result: Any, follow_link: bool = True) -> Path:
    """Write a result (a :class:`Result` or a dict) as JSON; a long text in its settings goes to
    a file beside it, named by its hash. The two are written as a unit: both, or neither.
    ``follow_link``: whether ``path`` may be a symbolic link to write through (a path the user
    named; not one lesion names, see :func:`lesion.runtime.files.check_output_path`)."""
    return write_files(result_files(path, result, follow_link))[0]


def result_files(path: str | Path, result: Any, follow_link: bool = True) -> dict[Path, str]:
    """What :func:`save_result` writes, file by file: {path: JSON} and, for a long text,
    {its file beside the result: the text}."""
    path = check_output_path(path, follow_link=follow_link, lock=False)  # locked, if at all, before the work
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    settings = data.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    text = settings.get("text")
    files: dict[Path, str] = {}
    if isinstance(text, str) and len(text) > INLINE_TEXT_CHARS:
        name = text_file_name(settings["text_sha256"])
        files[path.parent / name] = text
        data = {**data, "settings": {**settings, "text": None, "text_file": name}}
    return {path: json_text(data), **files}


def restore_text(settings: Settings, folder: Path, source: str | Path) -> Settings:
    """``settings`` with its text back inline, checked against ``text_sha256``.

    A result written before texts were always kept has ``text: null`` and no file: it is
    returned as is, and :func:`recorded_text` asks for the text when a command needs it.
    """
    text, name = settings.text, settings.text_file
    if text is None and name is not None:
        if Path(name).name != name:
            raise ResultError(f"{str(source)!r} names its text file {name!r}, which is not a file name beside "
                              "it: re-create the result with lesion")
        file = folder / name
        if not file.is_file():
            raise ResultError(f"{str(source)!r} keeps its text in {str(file)!r}, which is missing: copy "
                              f"{name} back beside it")
        text = file.read_text(encoding="utf-8")
    if text is None:
        return settings
    if text_hash(text) != settings.text_sha256:
        raise ResultError(f"the text kept with {str(source)!r} does not match its recorded SHA-256 (it was "
                          "edited or replaced): re-create the result with lesion")
    return settings.without("text_file").merged(text=text)


def recorded_text(settings: Settings, given: str | None, source: str | Path) -> str:
    """The text a result was made on, or ``given`` (--text/--text-file) when it is the same text."""
    sha = settings.text_sha256
    if not isinstance(sha, str):
        raise ResultError(f"{str(source)!r} records no text_sha256, so its text cannot be checked: "
                          "re-create it with lesion")
    if given is not None:
        if text_hash(given) != sha:
            raise ParameterError("text", f"is not the one {str(source)!r} was made on (SHA-256 "
                              f"{sha[:16]}...): drop it to use the recorded text")
        return given
    if settings.text is None:
        raise ResultError(f"{str(source)!r} records no text (an older lesion left long texts out): pass the "
                          "text it was made on as `text_file`")
    return settings.text
