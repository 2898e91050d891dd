"""How fleetbus frames are laid out in an MCAP file.

One MCAP channel per topic and publisher, so each message keeps its publisher's sequence
number (`sequence`, the low 32 bits) and its own stamp (`publish_time`); `log_time` is when
the recorder received it on the bus clock (sim time on a simulated bus). A channel's
metadata names the message type, its schema hash, the publishing node and whether it latches.

The data is the publisher's MessagePack payload byte for byte, so a replay is exact:
- `msgpack`: the payload alone, for types without numpy array fields (any MessagePack
  reader decodes it);
- `fleetbus-frames`: a MessagePack array [payload, buffer, ...] for types with arrays,
  whose raw buffers travel as frames after the payload on the bus.
Each channel's schema is the type's JSON Schema (encoding `jsonschema`, named by its wire
type name), so tools know the fields without fleetbus; a type the recorder cannot import
gets schema id 0 and only the metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from fleetbus.messages import schema_hash
from fleetbus.messages.codec import Codec
from fleetbus.messages.json_schema import json_schema

PROFILE = "fleetbus"
PAYLOAD = "msgpack"
FRAMES = "fleetbus-frames"
SCHEMA_ENCODING = "jsonschema"
# Metadata records: what was recorded (graph, parameters, seed, faults) and, written last,
# whether the recording is complete.
RUN_METADATA = "fleetbus.run"
STATUS_METADATA = "fleetbus.recording"


def schema_json(cls: type) -> bytes:
    return json_schema(cls, "numpy array: in the payload a MessagePack extension 1 [buffer "
                            "index, dtype, shape] naming one of the raw buffers after it")


def message_encoding(cls: type | None) -> str:
    """FRAMES for types that may carry arrays (and unknown types: they may), else PAYLOAD."""
    return PAYLOAD if cls is not None and not Codec(cls).has_arrays else FRAMES


def channel_metadata(type_name: str, hash_: int, publisher: str, node: str,
                     latched: bool) -> dict[str, str]:
    """`publisher` is the publishing node's uid (unique per start), `node` its name."""
    return {"type_name": type_name, "schema_hash": f"{hash_:016x}", "publisher": publisher,
            "node": node, "latched": "true" if latched else "false"}


def pack(encoding: str, payload: bytes, buffers: Sequence[Any]) -> bytes:
    if encoding == PAYLOAD:
        return payload
    return msgpack.packb([payload, *(bytes(b) for b in buffers)], use_bin_type=True)


def unpack(encoding: str, data: bytes) -> tuple[bytes, list[bytes]]:
    """(payload, buffers) of a recorded message; ValueError for data that is not one."""
    if encoding == PAYLOAD:
        return data, []
    if encoding != FRAMES:
        raise ValueError(f"not a fleetbus message encoding: {encoding!r}")
    try:
        parts = msgpack.unpackb(data, raw=True)
    except (msgpack.UnpackException, ValueError) as exc:
        raise ValueError(f"bad {FRAMES} record: {exc}") from None
    if not (isinstance(parts, list) and parts and all(isinstance(p, bytes) for p in parts)):
        raise ValueError(f"bad {FRAMES} record: not an array of byte strings")
    return parts[0], parts[1:]


def same_schema(cls: type, hash_text: str) -> bool:
    """Whether a channel's recorded schema hash is this class's (the layout is the same)."""
    return f"{schema_hash(cls):016x}" == hash_text
