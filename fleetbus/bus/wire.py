"""The data frame layout: ``[topic, header, payload, *buffers]``.

The topic frame is the topic name followed by a NUL byte, so that ZeroMQ's prefix
subscription matches whole names only (``/odom`` never receives ``/odom_raw``). The header
is a MessagePack array (see `FrameHeader`); the payload is the message's MessagePack map;
buffers are the raw bytes of numpy array fields.
"""

from __future__ import annotations

import msgspec


class FrameHeader(msgspec.Struct, array_like=True):
    """Per-frame metadata, encoded as a MessagePack array in this order."""

    type_name: str
    schema_hash: int
    publisher: str  # uid of the publishing node (sequence numbers are per publisher+topic)
    seq: int  # 1, 2, 3 … per publisher and topic
    source_stamp_ns: int  # the message's own stamp (bus clock), or the publish time
    publish_wall_ns: int  # wall-clock send time, for latency measurement


HEADER_ENCODER = msgspec.msgpack.Encoder()
HEADER_DECODER = msgspec.msgpack.Decoder(FrameHeader)


def topic_frame(topic: str) -> bytes:
    return topic.encode() + b"\0"


def topic_from_frame(frame: bytes) -> str:
    return frame[:-1].decode(errors="replace")
