"""Message types described for tools outside fleetbus: the class behind a wire type name
announced on the network, and a type's JSON Schema (for MCAP channels and Foxglove)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from fleetbus.messages.base import Message, lookup_type


def wire_class(type_name: str) -> type[Message] | None:
    """The class of a wire type name (fleetbus/Odometry), None when it is not known here.
    A "module:Class" name is never looked up: a name announced on the network must not
    make this process import a module."""
    if not type_name or ":" in type_name:
        return None
    try:
        return lookup_type(type_name)
    except KeyError:
        return None


def json_schema(cls: type[Message], arrays: str) -> bytes:
    """The type's JSON Schema with the type itself at the top (its fields' types under
    `$defs`), as JSON; `arrays` describes how numpy array fields appear. msgspec writes
    the infinite defaults of unbounded fields as null; the json module would write
    -Infinity, which is not JSON."""
    def hook(kind: type) -> dict[str, Any]:
        if kind is np.ndarray:
            return {"description": arrays}
        raise NotImplementedError(f"no JSON Schema for {kind.__name__}")

    doc = msgspec.json.schema(cls, schema_hook=hook)
    defs, ref = doc.get("$defs", {}), doc.get("$ref", "")
    if ref.startswith("#/$defs/"):
        doc = {**defs[ref.removeprefix("#/$defs/")], "$defs": defs}
    return msgspec.json.encode(doc)
