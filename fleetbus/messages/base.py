"""The message definition mechanism: typed Structs with a stable name and a schema hash.

A message type is a `msgspec.Struct` subclass of `Message`. Its wire name is
`__msgtype__` (e.g. ``"fleetbus/Odometry"``); when a class does not set one, the name is
``"<top-level package>/<ClassName>"`` so that user types get a readable default.

The schema hash is derived from the type name and, recursively, from every field's name
and type. Publisher and subscriber compare hashes before they connect, so two programs
that disagree about a message's layout are refused instead of decoding garbage.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import msgspec
import msgspec.inspect as mi
import numpy as np


class Message(msgspec.Struct, kw_only=True):
    """Base of every bus message. Subclass it and annotate fields with SI-unit docs."""

    __msgtype__: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__msgtype__" not in cls.__dict__:
            package = cls.__module__.split(".")[0]
            cls.__msgtype__ = cls.__name__ if package == "__main__" else f"{package}/{cls.__name__}"
        existing = _TYPES.get(cls.__msgtype__)
        if existing is not None and existing is not cls and _qualified(existing) != _qualified(cls):
            raise TypeError(
                f"message type name {cls.__msgtype__!r} is already used by {_qualified(existing)}; "
                f"set a distinct __msgtype__ on {_qualified(cls)}"
            )
        _TYPES[cls.__msgtype__] = cls


_TYPES: dict[str, type[Message]] = {}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def type_name(cls: type[Message]) -> str:
    """The stable wire name of a message type."""
    return cls.__msgtype__


def lookup_type(name: str, *, imports: bool = True) -> type[Message]:
    """Find a message class by wire name (``fleetbus/Odometry``) or import path
    (``package.module:Class``). Raises KeyError naming what was asked for.
    `imports=False` for a name that came from the bus (the graph): an import path there
    would import whatever module a peer names, so only defined types are found."""
    if ":" in name and imports:
        import importlib

        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"cannot import message type {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise KeyError(f"{name!r} is not a fleetbus Message class")
        return cls
    if name not in _TYPES and name.startswith("fleetbus/"):
        import fleetbus.messages  # noqa: F401  (registers the standard set)
    try:
        return _TYPES[name]
    except KeyError:
        raise KeyError(
            f"unknown message type {name!r}; import the module that defines it "
            f"or pass it as 'package.module:Class'"
        ) from None


def known_types() -> dict[str, type[Message]]:
    """All message types defined so far, by wire name."""
    return dict(_TYPES)


_HASHES: dict[type, int] = {}


def schema_hash(cls: type[Message]) -> int:
    """64-bit hash of the type's name and field layout (names, types, nesting)."""
    cached = _HASHES.get(cls)
    if cached is None:
        text = _canonical(mi.type_info(cls))
        cached = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        _HASHES[cls] = cached
    return cached


def schema_text(cls: type[Message]) -> str:
    """The canonical layout string the hash is computed from (shown by `fleetbus doctor`)."""
    return _canonical(mi.type_info(cls))


_SCALARS: dict[type, str] = {
    mi.FloatType: "f64",
    mi.IntType: "int",
    mi.StrType: "str",
    mi.BoolType: "bool",
    mi.BytesType: "bytes",
    mi.NoneType: "nil",
    mi.AnyType: "any",
}


def _canonical(t: mi.Type, expanding: frozenset[type] = frozenset()) -> str:
    scalar = _SCALARS.get(type(t))
    if scalar is not None:
        return scalar
    if isinstance(t, mi.StructType):
        name = getattr(t.cls, "__msgtype__", t.cls.__name__)
        if t.cls in expanding:  # a recursive type refers back to itself: name it only
            return f"^{name}"
        inner = expanding | {t.cls}
        fields = ",".join(f"{f.encode_name}:{_canonical(f.type, inner)}" for f in t.fields)
        return f"{name}{{{fields}}}"
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return f"[{_canonical(t.item_type, expanding)}]"
    if isinstance(t, mi.TupleType):
        return "(" + ",".join(_canonical(i, expanding) for i in t.item_types) + ")"
    if isinstance(t, mi.DictType):
        return f"{{{_canonical(t.key_type, expanding)}:{_canonical(t.value_type, expanding)}}}"
    if isinstance(t, mi.UnionType):
        return "|".join(sorted(_canonical(i, expanding) for i in t.types))
    if isinstance(t, mi.LiteralType):
        return "literal(" + ",".join(repr(v) for v in t.values) + ")"
    if isinstance(t, mi.EnumType):
        return f"enum {t.cls.__name__}(" + ",".join(repr(m.value) for m in t.cls) + ")"
    if isinstance(t, mi.CustomType) and issubclass(t.cls, np.ndarray):
        return "ndarray"
    raise TypeError(f"field type {t!r} is not supported in a fleetbus message")
