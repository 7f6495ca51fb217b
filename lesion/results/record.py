"""Typed records: frozen dataclasses whose ``to_dict``/``from_dict`` are derived from their field
types, once, here. Every payload of a result (settings, stages, certificates, proofs, mechanism
entries) is a :class:`Record`; nothing outside (de)serialisation reads a result by string key.

Encoding: a nested record becomes an object (its fields in declaration order), a tuple a list, an
enum its value, a :class:`~lesion.model.neurons.Neuron` its string. A field whose metadata says
``omit_none`` is left out of the object while it is None, so files written before the field
existed keep their bytes. Decoding checks each value against its field's type (a float also
accepts the non-finite strings :mod:`lesion.runtime.files` writes) and refuses unknown keys: a file from
another schema is refused with one line, not half read.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..runtime.files import as_float, as_int
from ..model.neurons import Neuron

T = TypeVar("T", bound="Record")


def optional(default: Any = None) -> Any:
    """A field left out of the file while it holds None (it was added after files existed)."""
    return field(default=default, metadata={"omit_none": True})


class Record:
    """Base of every typed payload; subclasses are ``@dataclass(frozen=True)``.

    ``LAYOUT``, when a class sets it, is the order of the keys in its file (which need not be the
    order of the fields, which positional construction fixes); a name in it that is no field is a
    property written for readers (a set's ``n``), accepted on reading and checked by the result.
    ``LEGACY`` holds the values assumed for fields that files written before them lack."""
    LAYOUT: ClassVar[tuple[str, ...]] = ()
    LEGACY: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict:
        return encode(self)

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        return decode(cls, data, cls.__name__)


def encode(value: Any) -> Any:
    if isinstance(value, OpenRecord):
        return value.to_dict()
    if isinstance(value, Record) and dataclasses.is_dataclass(value):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("omit_none") and item is None:
                continue
            if f.metadata.get("spread"):  # an open-ended tail of keys, written after the fields
                out.update({str(k): encode(v) for k, v in (item or {}).items()})
                continue
            out[f.metadata.get("key", f.name)] = encode(item)
        if value.LAYOUT:
            named = {name: out[name] if name in out else encode(getattr(value, name)) for name in value.LAYOUT}
            out = {**named, **out}
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, Neuron):
        return str(value)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (read from JSON) as type ``tp``; ValueError naming ``where`` when it is not one."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return decode(option, value, where)
            except (ValueError, TypeError, KeyError):
                continue
        raise ValueError(f"{where}: {value!r} is none of the expected types")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple or origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} is not a list")
        args = typing.get_args(tp)
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:  # a fixed shape: tuple[int, float]
            if len(value) != len(args):
                raise ValueError(f"{where} has {len(value)} items, not {len(args)}")
            return tuple(decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} is not an object")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if issubclass(tp, OpenRecord):
            return tp._read(value, where)
        if issubclass(tp, Record):
            return _decode_record(tp, value, where)
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise ValueError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
        if tp is Neuron:
            if not isinstance(value, str):
                raise ValueError(f"{where}: {value!r} is not a neuron")
            return Neuron.parse(value)
        if tp is float:  # an int stays one (a float field accepts it), so that it is written back as read
            return value if type(value) is int else as_float(value)
        if tp is int:
            return as_int(value)
        if tp is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {value!r} is not true or false")
            return value
        if tp is str:
            if not isinstance(value, str):
                raise ValueError(f"{where}: {value!r} is not a string")
            return value
    raise TypeError(f"{where}: cannot read a field of type {tp!r}")


def _decode_record(cls: type[T], value: Any, where: str) -> T:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    hints = _hints(cls)  # type: ignore[arg-type]
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    spread = next((f.name for f in fields.values() if f.metadata.get("spread")), None)
    unknown = [k for k in value if (k not in fields and k not in cls.LAYOUT) or k == spread]
    if unknown and spread is None:
        raise ValueError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():  # name: the key in the file
        if name == spread:  # each value read as the field's dict value type (Any: as it is)
            kwargs[f.name] = decode(hints[f.name], {k: value[k] for k in unknown}, where)
        elif name in value:
            kwargs[f.name] = decode(hints[f.name], value[name], f"{where}.{name}")
        elif name in cls.LEGACY:
            kwargs[f.name] = decode(hints[f.name], cls.LEGACY[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f"{where}.{name}")
    return cls(**kwargs)


OR = TypeVar("OR", bound="OpenRecord")


@dataclass(frozen=True)
class OpenRecord(Record):
    """A record whose keys vary from file to file, in an order each writer chose (settings, a
    certificate): typed fields for the keys lesion knows (None while absent), ``extra`` for any
    other key (kept as read), ``present`` for the keys held, in their order. It is written back
    exactly as read; a key present may hold null."""
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    present: tuple[str, ...] = field(default=(), kw_only=True)

    def to_dict(self) -> dict:
        return {key: encode(self.extra[key] if key in self.extra else getattr(self, key)) for key in self.present}

    @classmethod
    def from_dict(cls: type[OR], data: Any) -> OR:
        return cls._read(data, cls.__name__)

    @classmethod
    def of(cls: type[OR], values: Any = None, **more: Any) -> OR:
        """The record holding ``values`` (a mapping or a record of this type) and then ``more``, in
        that order, each value as it will read back."""
        given = values.to_dict() if isinstance(values, OpenRecord) else dict(values or {})
        return cls._read({**given, **{k: encode(v) for k, v in more.items()}}, cls.__name__)

    @classmethod
    def _read(cls: type[OR], data: Any, where: str) -> OR:
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not an object")
        hints = _hints(cls)  # type: ignore[arg-type]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "present"}
        typed: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in names:
                typed[key] = decode(hints[key], encode(value), f"{where}.{key}")
            else:
                extra[str(key)] = encode(value)
        return cls(**typed, extra=extra, present=tuple(map(str, data)))

    def merged(self: OR, values: Any = None, **more: Any) -> OR:
        """This record updated with ``values`` and then ``more``, as a dict update: a key already
        present keeps its place, a new one goes last."""
        given = values.to_dict() if isinstance(values, OpenRecord) else dict(values or {})
        return self.of({**self.to_dict(), **given}, **more)

    def without(self: OR, *keys: str) -> OR:
        return self.of({k: v for k, v in self.to_dict().items() if k not in keys})

    def has(self, key: str) -> bool:
        """Whether ``key`` is present (it may hold null)."""
        return key in self.present


def renamed(key: str, **options: Any) -> Any:
    """A field kept in the file under another name (``key``)."""
    return field(metadata={"key": key}, **options)


def spread() -> Any:
    """The field that keeps an open-ended tail of keys (written after the named fields)."""
    return field(default_factory=dict, metadata={"spread": True})


__all__ = ["OpenRecord", "Record", "decode", "encode", "optional", "renamed", "spread"]
