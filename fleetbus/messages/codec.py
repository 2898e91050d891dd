"""MessagePack codec for messages, with numpy arrays carried out of band.

A message encodes to a MessagePack map payload plus a list of raw buffers. Each numpy
array field becomes a MessagePack extension (code `ARRAY_EXT`) holding
``[buffer index, dtype string, shape]``; its bytes travel as a separate ZeroMQ frame,
so a 1 MiB image is never copied into the payload. The payload stays valid MessagePack:
the reference `msgpack` library reads it (the array arrives as an ExtType).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgpack
import msgspec
import numpy as np

from fleetbus.messages.base import Message, schema_hash, schema_text, type_name

ARRAY_EXT = 1
"""MessagePack extension code of an out-of-band numpy array reference."""

M = TypeVar("M", bound=Message)
_DTYPE = re.compile(r"[<>|=]?[A-Za-z]\d*(?:\[\w+\])?")
"""A type as the encoder writes it (`dtype.str`: "<f8", "|u1", "<M8[ns]"). numpy's dtype()
takes much more: comma lists and sub-array shapes, parsed with ast.literal_eval, which raised
SyntaxError (past every handler) on ",c16" and makes 5000 fields of "f8,f8,...,f8"."""


class DecodeError(ValueError):
    """A payload that does not decode as the expected message type."""


class Codec(Generic[M]):
    """Encoder/decoder for one message type. Not thread-safe: one per publisher or
    subscription, used from its node's event loop only."""

    def __init__(self, cls: type[M]) -> None:
        self.cls = cls
        self.type_name = type_name(cls)
        self.schema_hash = schema_hash(cls)
        self.has_arrays = "ndarray" in schema_text(cls)
        self._out: list[Any] = []
        self._in: Sequence[Any] = ()
        self._encoder = msgspec.msgpack.Encoder(enc_hook=self._enc_hook)
        self._decoder = msgspec.msgpack.Decoder(
            cls, ext_hook=self._ext_hook, dec_hook=_accept_array
        )

    def encode(self, msg: M) -> tuple[bytes, list[Any]]:
        """Return (payload, buffers). Buffers are contiguous numpy arrays to send as-is."""
        self._out = []
        payload = self._encoder.encode(msg)
        return payload, self._out

    def decode(self, payload: Any, buffers: Sequence[Any] = ()) -> M:
        """Decode a payload; `buffers` are the frames that followed it (bytes-like)."""
        self._in = buffers
        try:
            return self._decoder.decode(payload)
        # DecodeError included; RecursionError: a hostile payload nested ~1000 levels deep.
        except (msgspec.MsgspecError, ValueError, TypeError, RecursionError) as exc:
            raise DecodeError(f"{self.type_name}: {exc}") from None
        finally:
            self._in = ()

    def _enc_hook(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError("numpy arrays of Python objects cannot be sent")
            if obj.dtype.names is not None:  # dtype.str would be "|V<n>": field names lost
                raise TypeError("structured numpy arrays cannot be sent; send one array a field")
            array = np.ascontiguousarray(obj)  # note: 0-d arrays come out 1-d, so obj.shape
            # datetime64/timedelta64 do not export the buffer protocol ZeroMQ sends with
            self._out.append(array.view(np.int64) if array.dtype.kind in "mM" else array)
            ref = msgpack.packb([len(self._out) - 1, array.dtype.str, list(obj.shape)])
            return msgspec.msgpack.Ext(ARRAY_EXT, ref)
        if isinstance(obj, np.generic):
            return obj.item()
        raise NotImplementedError(f"cannot encode {type(obj).__name__} in a message")

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code != ARRAY_EXT:
            raise DecodeError(f"{self.type_name}: unknown MessagePack extension {code}")
        return array_from_ref(data, self._in)


def array_from_ref(ref: bytes | memoryview, buffers: Sequence[Any]) -> np.ndarray:
    """Rebuild a read-only array view from an array reference and the received frames."""
    try:
        index, dtype, shape = msgpack.unpackb(ref)
        if type(index) is not int or not 0 <= index < len(buffers):  # no -1, no True
            raise IndexError(f"buffer {index!r} of {len(buffers)}")
        if type(dtype) is not str or not _DTYPE.fullmatch(dtype):
            raise ValueError(f"dtype {dtype!r:.60} is not a type string like '<f8'")
        array = np.frombuffer(buffers[index], dtype=np.dtype(dtype))
        return array.reshape(shape)
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise DecodeError(f"bad array reference: {exc}") from None


def _accept_array(kind: type, obj: Any) -> Any:
    if kind is np.ndarray and isinstance(obj, np.ndarray):
        return obj
    # TypeError: msgspec turns it into a ValidationError naming the field.
    raise TypeError(f"expected {kind.__name__}, got {type(obj).__name__}")


def to_builtins(payload: bytes | memoryview, buffers: Sequence[Any] = ()) -> Any:
    """Decode any payload without its class, as plain Python data (for echo and
    recording tools). Arrays come back as numpy arrays."""

    def ext(code: int, data: bytes) -> Any:
        if code == ARRAY_EXT:
            return array_from_ref(data, buffers)
        return msgpack.ExtType(code, data)

    # Both are ValueErrors, as before, but msgpack's own carry no message at all.
    try:
        return msgpack.unpackb(payload, ext_hook=ext, strict_map_key=False)
    except msgpack.StackError:
        raise DecodeError("payload nested deeper than MessagePack's limit") from None
    except msgpack.FormatError:
        raise DecodeError("payload is not MessagePack (a reserved type byte)") from None
