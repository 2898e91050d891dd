"""Message definitions and the codec: round trips, readability by any MessagePack tool,
schema hashes, type lookup, and garbage in the decoder."""

from __future__ import annotations

import msgpack
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleetbus.messages as messages
from fleetbus.bus.wire import HEADER_ENCODER, FrameHeader
from fleetbus.messages import ArrayMsg, Codec, DecodeError, Message, Odometry, lookup_type
from fleetbus.messages.base import schema_hash, schema_text
from fleetbus.messages.codec import ARRAY_EXT, to_builtins

STANDARD = [
    cls for cls in vars(messages).values()
    if isinstance(cls, type) and issubclass(cls, Message) and cls is not Message
]


def roundtrip(msg: Message) -> Message:
    codec = Codec(type(msg))
    payload, buffers = codec.encode(msg)
    return codec.decode(payload, [bytes(b.data) for b in buffers])


def test_the_standard_set_is_complete():
    names = {cls.__msgtype__ for cls in STANDARD}
    for name in ("Header", "Vector3", "Quaternion", "Pose", "Twist", "Odometry", "Imu",
                 "GnssFix", "Heading", "WheelSpeed", "SpeedLog", "Path", "Waypoint", "Mission",
                 "GeofenceZone", "Geofence", "QuadrotorCommand", "ShipCommand", "CarCommand",
                 "VehicleState", "Clock", "Heartbeat", "Diagnostic", "Event"):
        assert f"fleetbus/{name}" in names


@pytest.mark.parametrize("cls", STANDARD, ids=lambda c: c.__msgtype__)
def test_every_standard_type_round_trips_and_reads_with_reference_msgpack(cls):
    msg = cls()
    assert roundtrip(msg) == msg
    payload, _ = Codec(cls).encode(msg)
    plain = msgpack.unpackb(payload)
    assert set(plain) == set(cls.__struct_fields__)  # a map keyed by field name


def test_a_filled_odometry_round_trips_exactly():
    msg = Odometry(child_frame_id="base_link", pose_covariance=[float(i) for i in range(36)])
    msg.pose.position.x, msg.twist.angular.z = 12.5, -0.25
    assert roundtrip(msg) == msg
    plain = msgpack.unpackb(Codec(Odometry).encode(msg)[0])
    assert plain["pose"]["position"]["x"] == 12.5 and plain["pose_covariance"][35] == 35.0


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(7, dtype=np.uint8),
    np.arange(40, dtype=np.int64).reshape(5, 8)[:, ::2],  # not contiguous
], ids=["float32 2-D", "uint8 1-D", "strided slice"])
def test_arrays_travel_out_of_band(array):
    codec = Codec(ArrayMsg)
    payload, buffers = codec.encode(ArrayMsg(data=array))
    assert len(buffers) == 1 and len(payload) < 100  # the data is not in the payload
    back = codec.decode(payload, [bytes(buffers[0].data)])
    np.testing.assert_array_equal(back.data, array)
    assert back.data.dtype == array.dtype
    ext = msgpack.unpackb(payload)["data"]
    assert isinstance(ext, msgpack.ExtType) and ext.code == ARRAY_EXT


def test_to_builtins_decodes_any_payload_without_its_class():
    payload, buffers = Codec(ArrayMsg).encode(ArrayMsg(data=np.ones(3)))
    plain = to_builtins(payload, [bytes(b.data) for b in buffers])
    np.testing.assert_array_equal(plain["data"], np.ones(3))
    assert plain["header"] == {"stamp_ns": 0, "frame_id": ""}


def test_frame_header_is_a_plain_msgpack_array():
    header = HEADER_ENCODER.encode(FrameHeader("fleetbus/Odometry", 7, "pub-1", 3, 10, 20))
    assert msgpack.unpackb(header) == ["fleetbus/Odometry", 7, "pub-1", 3, 10, 20]


def _define(name: str, **fields: type) -> type[Message]:
    """A throwaway message class (the same wire name may be redefined identically)."""
    namespace = {"__msgtype__": name, "__annotations__": dict(fields), "__module__": __name__}
    return type("Defined", (Message,), namespace)


def test_schema_hash_is_stable_for_identical_definitions():
    assert schema_hash(_define("t/Same", x=float)) == schema_hash(_define("t/Same", x=float))


def test_schema_hash_changes_with_name_type_field_or_nesting():
    base = schema_hash(_define("t/A", x=float))
    assert schema_hash(_define("t/A2", x=float)) != base  # type name
    assert schema_hash(_define("t/A3", y=float)) != schema_hash(_define("t/A3b", x=float))
    assert schema_hash(_define("t/A4", x=int)) != schema_hash(_define("t/A4b", x=float))
    inner1, inner2 = _define("t/In1", v=float), _define("t/In2", v=str)
    assert "t/In1{v:f64}" in schema_text(_define("t/Out1", inner=inner1))
    assert schema_hash(_define("t/Out", inner=inner1)) != schema_hash(
        _define("t/OutB", inner=inner2))


def test_two_different_classes_cannot_share_a_wire_name():
    class First(Message):
        __msgtype__ = "t/Taken"

    with pytest.raises(TypeError, match="t/Taken"):
        class Second(Message):
            __msgtype__ = "t/Taken"


def test_lookup_by_wire_name_or_import_path():
    assert lookup_type("fleetbus/Odometry") is Odometry
    assert lookup_type("fleetbus.messages.navigation:Odometry") is Odometry
    with pytest.raises(KeyError, match="fleetbus/Nope"):
        lookup_type("fleetbus/Nope")
    with pytest.raises(KeyError, match="not a fleetbus Message"):
        lookup_type("fleetbus.messages.codec:Codec")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_payloads_raise_decode_error_only(data):
    for cls in (Odometry, ArrayMsg):
        try:
            Codec(cls).decode(data, [b"\0" * 8])
        except DecodeError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_payloads_raise_decode_error(data):
    msg = Odometry(child_frame_id="x" * data.draw(st.integers(0, 50)))
    payload, _ = Codec(Odometry).encode(msg)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(DecodeError):
        Codec(Odometry).decode(payload[:cut])


@pytest.mark.parametrize("ref", [
    [5, "<f8", [1]],  # buffer index out of range
    [0, "not-a-dtype", [1]],
    [0, "<f8", [1000]],  # shape larger than the buffer
    "garbage",
])
def test_bad_array_references_raise_decode_error(ref):
    payload = msgspec.msgpack.encode(
        {"data": msgspec.msgpack.Ext(ARRAY_EXT, msgpack.packb(ref))}
    )
    with pytest.raises(DecodeError):
        Codec(ArrayMsg).decode(payload, [b"\0" * 8])
