"""Message definitions and the codec: round trips, readability by any MessagePack tool,
schema hashes, type lookup, and garbage in the decoder."""

from __future__ import annotations

import msgpack
import msgspec
import msgspec.inspect as mi
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fleetbus.messages as messages
from fleetbus.messages import (
    ArrayMsg,
    Codec,
    DecodeError,
    Message,
    Odometry,
    lookup_type,
    schema_hash,
)
from fleetbus.messages.base import schema_text
from fleetbus.messages.codec import ARRAY_EXT, to_builtins

STANDARD = [
    cls for cls in vars(messages).values()
    if isinstance(cls, type) and issubclass(cls, Message) and cls is not Message
]


def roundtrip(msg: Message) -> Message:
    codec = Codec(type(msg))
    payload, buffers = codec.encode(msg)
    return codec.decode(payload, [bytes(memoryview(b)) for b in buffers])


def plain(msg: Message) -> object:
    """What any MessagePack reader should see: the message as maps keyed by field name."""
    return msgspec.to_builtins(msg, builtin_types=(bytes,))


def values_of(t: mi.Type) -> st.SearchStrategy:
    """Arbitrary valid values of a message field type (arrays are tested on their own)."""
    if isinstance(t, mi.FloatType):
        return st.floats(allow_nan=False)  # NaN != NaN would defeat the equality check
    if isinstance(t, mi.IntType):
        return st.integers(-(2**63), 2**63 - 1)
    if isinstance(t, mi.StrType):
        return st.text(max_size=12)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.BytesType):
        return st.binary(max_size=64)
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.ListType):
        return st.lists(values_of(t.item_type), max_size=3)
    if isinstance(t, mi.DictType):
        return st.dictionaries(values_of(t.key_type), values_of(t.value_type), max_size=3)
    if isinstance(t, mi.UnionType):
        return st.one_of([values_of(i) for i in t.types])
    if isinstance(t, mi.StructType):
        return st.builds(t.cls, **{f.name: values_of(f.type) for f in t.fields})
    if isinstance(t, mi.CustomType) and issubclass(t.cls, np.ndarray):
        return st.nothing()
    raise AssertionError(f"no strategy for {t!r}")


def test_the_standard_set_is_complete():
    names = {cls.__msgtype__ for cls in STANDARD}
    for name in ("Header", "Vector3", "Quaternion", "Pose", "Twist", "Odometry", "Imu",
                 "GnssFix", "Heading", "WheelSpeed", "SpeedLog", "BaroAltitude", "Path",
                 "Waypoint", "Mission", "GeofenceZone", "Geofence", "QuadrotorCommand",
                 "ShipCommand", "CarCommand", "VehicleState", "Clock", "Heartbeat",
                 "Diagnostic", "Event", "String", "Float64", "Blob", "ArrayMsg"):
        assert f"fleetbus/{name}" in names
    assert set(messages.__all__) >= {cls.__name__ for cls in STANDARD}
    for cls in STANDARD:
        assert cls.__msgtype__ == f"fleetbus/{cls.__name__}"
        assert cls.__doc__ and cls.__doc__ != Message.__doc__, f"{cls.__name__} has no docstring"


@pytest.mark.parametrize("cls", STANDARD, ids=lambda c: c.__msgtype__)
def test_every_standard_type_round_trips_and_reads_with_reference_msgpack(cls):
    msg = cls()
    assert roundtrip(msg) == msg
    payload, _ = Codec(cls).encode(msg)
    plain_msg = msgpack.unpackb(payload)
    assert set(plain_msg) == set(cls.__struct_fields__)  # a map keyed by field name


@pytest.mark.parametrize("cls", STANDARD, ids=lambda c: c.__msgtype__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_arbitrary_values_of_every_standard_type_round_trip(cls, data):
    msg = data.draw(values_of(mi.type_info(cls)))
    assert roundtrip(msg) == msg
    payload, buffers = Codec(cls).encode(msg)
    assert msgpack.unpackb(payload) == plain(msg)  # the reference library, field by field
    assert to_builtins(payload, buffers) == plain(msg)  # and the generic decoder


def test_a_filled_odometry_round_trips_exactly():
    msg = Odometry(child_frame_id="base_link", pose_covariance=[float(i) for i in range(36)])
    msg.pose.position.x, msg.twist.angular.z = 12.5, -0.25
    assert roundtrip(msg) == msg
    plain_msg = msgpack.unpackb(Codec(Odometry).encode(msg)[0])
    assert plain_msg["pose"]["position"]["x"] == 12.5 and plain_msg["pose_covariance"][35] == 35.0


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(7, dtype=np.uint8),
    np.arange(40, dtype=np.int64).reshape(5, 8)[:, ::2],  # not contiguous
    np.array(2.5),  # 0-d
    np.zeros((0, 3), dtype=np.float64),
    np.arange(4, dtype=">i4"),  # big-endian
    np.arange(3).astype("datetime64[ns]"),  # no buffer protocol of its own
], ids=["float32 2-D", "uint8 1-D", "strided slice", "0-d", "empty", "big-endian", "datetime"])
def test_arrays_travel_out_of_band(array):
    codec = Codec(ArrayMsg)
    payload, buffers = codec.encode(ArrayMsg(data=array))
    assert len(buffers) == 1 and len(payload) < 100  # the data is not in the payload
    back = codec.decode(payload, [bytes(memoryview(buffers[0]))])
    assert back.data.dtype == array.dtype and back.data.shape == array.shape
    np.testing.assert_array_equal(back.data, array)
    ext = msgpack.unpackb(payload)["data"]
    assert isinstance(ext, msgpack.ExtType) and ext.code == ARRAY_EXT


DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.timedelta64_dtypes(endianness="?"),
    hnp.byte_string_dtypes(),
    hnp.unicode_string_dtypes(endianness="?"),
)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_arbitrary_arrays_arrive_bit_identical(data):
    array = data.draw(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0)))
    if array.ndim and data.draw(st.booleans(), label="strided"):
        array = array[..., :: data.draw(st.integers(2, 3), label="step")]
    if data.draw(st.booleans(), label="fortran"):
        array = np.asfortranarray(array)
    back = roundtrip(ArrayMsg(data=array)).data
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bitwise: NaN, -0.0 and NaT included


@pytest.mark.parametrize("array", [
    np.array([object(), 1], dtype=object),
    np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4")]),  # its field names would be lost
], ids=["object", "structured"])
def test_arrays_that_cannot_travel_are_refused_when_encoded(array):
    with pytest.raises(TypeError, match="cannot be sent"):
        Codec(ArrayMsg).encode(ArrayMsg(data=array))


def test_to_builtins_decodes_any_payload_without_its_class():
    payload, buffers = Codec(ArrayMsg).encode(ArrayMsg(data=np.ones(3)))
    plain_msg = to_builtins(payload, [bytes(b.data) for b in buffers])
    np.testing.assert_array_equal(plain_msg["data"], np.ones(3))
    assert plain_msg["header"] == {"stamp_ns": 0, "frame_id": ""}


def test_frame_header_is_a_plain_msgpack_array():
    from fleetbus.bus.wire import HEADER_ENCODER, FrameHeader  # the bus owns the frame header

    header = HEADER_ENCODER.encode(FrameHeader("fleetbus/Odometry", 7, "pub-1", 3, 10, 20))
    assert msgpack.unpackb(header) == ["fleetbus/Odometry", 7, "pub-1", 3, 10, 20]


def _define(name: str, **fields: type) -> type[Message]:
    """A throwaway message class. Every class made here has the same qualified name
    (``tests.test_messages.Defined``), so a wire name may be redefined, as when a
    program is restarted with an edited message."""
    namespace = {"__msgtype__": name, "__annotations__": dict(fields), "__module__": __name__}
    return type("Defined", (Message,), namespace)


def test_schema_hash_is_stable_for_identical_definitions():
    def define() -> type[Message]:
        return _define("t/Same", x=float, inner=_define("t/SameInner", v=list[int]))

    first, second = define(), define()
    assert first is not second and schema_hash(first) == schema_hash(second)
    # and across processes and versions: a golden value (blake2b, not Python's hash())
    assert schema_text(messages.Header) == "fleetbus/Header{stamp_ns:int,frame_id:str}"
    assert schema_hash(messages.Header) == 0x94E4415B3FE3468C


def test_schema_hash_changes_with_field_name_type_or_nested_type():
    base = schema_hash(_define("t/H", x=float))
    assert schema_hash(_define("t/H", y=float)) != base  # field renamed
    assert schema_hash(_define("t/H", x=int)) != base  # field type changed
    assert schema_hash(_define("t/H", x=float | None)) != base  # made optional
    assert schema_hash(_define("t/H", x=float, y=float)) != base  # field added
    assert schema_hash(_define("t/H2", x=float)) != base  # wire name changed
    assert schema_hash(_define("t/H", x=float)) == base  # and back again

    nested = schema_hash(_define("t/Outer", inner=_define("t/Inner", v=float)))
    assert "t/Inner{v:f64}" in schema_text(_define("t/Outer", inner=_define("t/Inner", v=float)))
    # same outer and inner names; only the inner field's type differs
    assert schema_hash(_define("t/Outer", inner=_define("t/Inner", v=str))) != nested
    assert schema_hash(_define("t/Outer", inner=list[_define("t/Inner", v=float)])) != nested


class _Tree(Message):
    __msgtype__ = "t/Tree"
    label: str = ""
    children: list[_Tree] = []


def test_a_recursive_type_has_a_schema_hash_and_round_trips():
    assert schema_text(_Tree) == "t/Tree{label:str,children:[^t/Tree]}"
    assert isinstance(schema_hash(_Tree), int)
    tree = _Tree(label="root", children=[_Tree(label="leaf", children=[_Tree()])])
    assert roundtrip(tree) == tree


def test_two_different_classes_cannot_share_a_wire_name():
    class First(Message):
        __msgtype__ = "t/Taken"

    with pytest.raises(TypeError, match="t/Taken"):
        class Second(Message):
            __msgtype__ = "t/Taken"

    with pytest.raises(TypeError, match="fleetbus/Odometry"):
        class Odometry(Message):  # same class name, another module
            __msgtype__ = "fleetbus/Odometry"

    assert lookup_type("t/Taken") is First
    assert lookup_type("fleetbus/Odometry") is messages.Odometry


def test_lookup_by_wire_name_or_import_path():
    assert lookup_type("fleetbus/Odometry") is Odometry
    assert lookup_type("fleetbus.messages.navigation:Odometry") is Odometry
    for unknown in ("fleetbus/Nope", "fleetbus.messages.navigation:Nope",
                    "no_such_module_here:Thing", "Odometry"):
        with pytest.raises(KeyError, match=unknown):
            lookup_type(unknown)
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


@pytest.mark.parametrize("payload", [
    b"\x81\xa1a" * 5000,  # {"a": {"a": ...}} 5000 deep: an unknown field, skipped recursively
    b"\x91" * 100_000,  # [[[...]]]
    b"\x81\xa6header" * 5000,
], ids=["maps", "arrays", "known field"])
def test_deeply_nested_payloads_raise_decode_error(payload):
    for cls in (Odometry, ArrayMsg):
        with pytest.raises(DecodeError):
            Codec(cls).decode(payload)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_payloads_raise_decode_error(data):
    msg = Odometry(child_frame_id="x" * data.draw(st.integers(0, 50)))
    payload, _ = Codec(Odometry).encode(msg)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(DecodeError):
        Codec(Odometry).decode(payload[:cut])


def _with_ref(ref: object) -> bytes:
    return msgspec.msgpack.encode({"data": msgspec.msgpack.Ext(ARRAY_EXT, msgpack.packb(ref))})


@pytest.mark.parametrize("ref", [
    [5, "<f8", [1]],  # buffer index out of range
    [1, "<f8", [1]],  # one past the end
    [-1, "<f8", [1]],  # negative: would silently pick the last frame
    [True, "<f8", [1]],  # a bool is not an index
    [0, "not-a-dtype", [1]],
    [0, "O", [1]],  # object arrays from raw memory
    [0, "<f8", [1000]],  # shape larger than the buffer
    [0, "<f8", [2**63]],
    "garbage",
    [0, "<f8"],
])
def test_bad_array_references_raise_decode_error(ref):
    with pytest.raises(DecodeError):
        Codec(ArrayMsg).decode(_with_ref(ref), [b"\0" * 8])


REF_ITEMS = st.one_of(
    st.integers(-3, 3), st.integers(-(2**63), 2**64 - 1), st.booleans(), st.none(), st.floats(),
    st.sampled_from(["<f8", "|u1", ">i2", "O", "V0", "S0", "T", "<f8,<i4", "M8[ns]", "U3"]),
    st.text(max_size=6),
    st.lists(st.integers(-2, 2**63 - 1), max_size=3),
)


@settings(max_examples=500, deadline=None)
@given(ref=st.lists(REF_ITEMS, max_size=4) | REF_ITEMS,
       frames=st.lists(st.binary(max_size=24), max_size=2))
def test_arbitrary_array_references_decode_or_raise_decode_error(ref, frames):
    try:
        msg = Codec(ArrayMsg).decode(_with_ref(ref), frames)
    except DecodeError:
        return
    assert isinstance(msg.data, np.ndarray)


@settings(max_examples=300, deadline=None)
@given(ext=st.binary(max_size=40))
def test_arbitrary_array_extension_bytes_decode_or_raise_decode_error(ext):
    payload = msgspec.msgpack.encode({"data": msgspec.msgpack.Ext(ARRAY_EXT, ext)})
    try:
        Codec(ArrayMsg).decode(payload, [b"\0" * 16])
    except DecodeError:
        pass
