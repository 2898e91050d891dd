"""The bus in Foxglove's terms: what the live bridge serves and what `fleetbus export`
writes into a Foxglove-readable MCAP file, from the same messages.

- every topic as a JSON channel of the same name, with the message type's JSON Schema (a
  permissive object schema for types this process cannot import);
- `/<vehicle>/location` (``foxglove.LocationFix``) for every `/<vehicle>/odometry`: the
  ENU position turned into WGS84 around the origin of the last `/geofence` message (none
  before a fence arrived: an ENU position alone has no place on the globe);
- `/geofence/geojson` (``foxglove.GeoJson``): the geofence's zones on the map.

A frame is decoded only when a sink (an app watching, a file) wants its channel, or to keep
the last value of a latched topic. One that does not decode is counted and skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import foxglove
import msgpack
import msgspec
import numpy as np
import pymap3d
from foxglove.channels import GeoJsonChannel, LocationFixChannel
from foxglove.messages import GeoJson, LocationFix, LocationFixPositionCovarianceType, Timestamp
from foxglove.messages import Vector3 as FoxgloveVector3

from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages import Odometry
from fleetbus.messages.codec import Codec, DecodeError, to_builtins
from fleetbus.messages.json_schema import json_schema, wire_class
from fleetbus.nodes.conversions import fence_from_msg
from fleetbus.planners import GeofenceError, to_geojson
from fleetbus.planners.geojson import check_origin

FENCE_TOPIC = "/geofence"
GEOJSON_TOPIC = "/geofence/geojson"
ODOMETRY_SUFFIX = "/odometry"
LOCATION_SUFFIX = "/location"
ARRAY_JSON_LIMIT = 65536
"""Arrays with more elements are served as a summary (dtype, shape): as JSON text a large
image or point cloud would cost the bridge tens of milliseconds a frame and the app more."""
ARRAY_DESCRIPTION = (f"numpy array as nested lists (NaN as null); over {ARRAY_JSON_LIMIT} "
                     "elements only its dtype and shape")

Count = Callable[[str, str], None]  # (kind, message): a node's problem counter


class FoxgloveView:
    """Channels in one foxglove context, fed with bus frames. `wanted(topic)`: whether a
    topic is served; `count(kind, text)`: where problems go."""

    def __init__(self, context: foxglove.Context, wanted: Callable[[str], bool],
                 count: Count) -> None:
        self.context, self.wanted, self.count = context, wanted, count
        self.topics: dict[str, _Topic] = {}
        self.resend: dict[int, _Topic | _Latest] = {}  # channel id -> its last value
        self.origin: tuple[float, float, float] | None = None
        self.geojson: _Latest | None = None
        if wanted(FENCE_TOPIC):
            self.geojson = _Latest(GeoJsonChannel(GEOJSON_TOPIC, context=context))
            self.resend[self.geojson.channel.id()] = self.geojson

    def serve(self, topic: str, type_name: str, latched: bool) -> bool:
        """Take a topic on (once); whether its frames are wanted at all (the fence is,
        served or not: its origin places the vehicles)."""
        served = self.topics.get(topic)
        if served is not None:
            served.latched |= latched
            return False
        advertise = self.wanted(topic)
        if not (advertise or topic == FENCE_TOPIC):
            return False
        channel = location = None
        if advertise:
            channel = foxglove.Channel(
                topic, schema=_schema_for(type_name), message_encoding="json",
                context=self.context, metadata={"fleetbus_type": type_name})
            if topic.endswith(ODOMETRY_SUFFIX) and type_name == Odometry.__msgtype__:
                location = LocationFixChannel(
                    topic[: -len(ODOMETRY_SUFFIX)] + LOCATION_SUFFIX, context=self.context)
        self.topics[topic] = _Topic(type_name, latched, channel, location)
        if channel is not None:
            self.resend[channel.id()] = self.topics[topic]
        return True

    def message(self, topic: str, type_name: str, schema_hash: int, payload: bytes,
                buffers: Sequence[Any], log_time: int) -> None:
        """One frame of a topic taken on with serve(), logged at log_time (ns)."""
        served = self.topics[topic]
        channel, location = served.channel, served.location
        mirror = channel is not None and (served.latched or channel.has_sinks())
        place = location is not None and self.origin is not None and location.has_sinks()
        fence = topic == FENCE_TOPIC
        if not (mirror or place or fence):
            return  # nobody looks: not even a decode
        try:
            text = b""
            if mirror:
                data = to_builtins(payload, buffers)
                if not isinstance(data, dict):  # a message is a map of its fields
                    raise TypeError(f"payload is a {type(data).__name__}, not a map")
                text = JSON.encode(data)
            typed: Any = None
            if place and schema_hash == _ODOMETRY.schema_hash:
                typed = _ODOMETRY.decode(payload, buffers)
            elif fence and schema_hash == _FENCE.schema_hash:
                typed = _FENCE.decode(payload, buffers)
        # Whatever a hostile payload makes a decoder raise: the frame is skipped, counted.
        except (DecodeError, msgpack.UnpackException, msgspec.MsgspecError, ValueError,
                TypeError, OverflowError, RecursionError) as exc:
            self.count("rejected_frame", f"{topic}: cannot serve a {type_name} frame: "
                       f"{type(exc).__name__}{f': {exc}' if str(exc) else ''}")
            return
        if mirror:
            assert channel is not None
            channel.log(text, log_time=log_time)
            if served.latched:
                served.last, served.last_time = text, log_time
        if isinstance(typed, Odometry) and location is not None:
            self._locate(topic, typed, location, log_time)
        elif isinstance(typed, GeofenceMsg):
            self._on_fence(typed, log_time)

    def resend_latched(self, channel_id: int) -> None:
        """A client subscribed to a channel: send it the channel's last value if the topic
        latches (everyone subscribed gets it again; the app shows the same value)."""
        served = self.resend.get(channel_id)
        if served is not None:
            served.resend()

    def _locate(self, topic: str, odom: Odometry, channel: LocationFixChannel,
                log_time: int) -> None:
        """The vehicle's WGS84 position around the fence's origin. No fence yet, no
        origin: no LocationFix (an ENU position alone has no place on the globe)."""
        assert self.origin is not None
        p_ = odom.pose.position
        if not all(math.isfinite(v) for v in (p_.x, p_.y, p_.z)):
            self.count("bad_odometry", f"{topic}: non-finite position, no location sent")
            return
        lat, lon, alt = pymap3d.enu2geodetic(p_.x, p_.y, p_.z, *self.origin)
        q, v = odom.pose.orientation, odom.twist.linear
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        east, north, up = _rotate((q.w, q.x, q.y, q.z), (v.x, v.y, v.z))  # body FLU -> ENU
        covariance = _position_covariance(odom.pose_covariance)
        fix = LocationFix(
            timestamp=_timestamp(odom.header.stamp_ns),
            frame_id=topic[1: -len(ODOMETRY_SUFFIX)],
            latitude=float(lat), longitude=float(lon), altitude=float(alt),
            position_covariance=covariance,
            position_covariance_type=(LocationFixPositionCovarianceType.Known if covariance
                                      else LocationFixPositionCovarianceType.Unknown),
            # LocationFix's heading is clockwise from north; ENU yaw counter-clockwise
            # from east.
            heading=(math.pi / 2 - yaw) % math.tau if math.isfinite(yaw) else None,
            velocity=(FoxgloveVector3(x=east, y=north, z=up)
                      if all(math.isfinite(c) for c in (east, north, up)) else None))
        channel.log(fix, log_time=log_time)

    def _on_fence(self, msg: GeofenceMsg, log_time: int) -> None:
        try:
            self.origin = check_origin(
                (msg.origin_lat_deg, msg.origin_lon_deg, msg.origin_alt_m), "geofence origin")
        except GeofenceError as exc:
            self.count("bad_geofence", f"{FENCE_TOPIC}: {exc}; vehicles keep the old origin")
            return
        if self.geojson is None:
            return
        try:
            doc = to_geojson(fence_from_msg(msg))
        except GeofenceError as exc:
            self.count("bad_geofence", f"{FENCE_TOPIC}: not drawn on the map: {exc}")
            return
        self.geojson.log(GeoJson(geojson=json.dumps(doc, allow_nan=False)), log_time)


@dataclass
class _Topic:
    """A bus topic the bridge subscribes to, and what it is served as."""

    type_name: str
    latched: bool
    channel: foxglove.Channel | None  # None: listened to (the fence's origin), not served
    location: LocationFixChannel | None = None
    last: bytes = b""  # the last JSON of a latched topic, for clients that subscribe later
    last_time: int = 0

    def resend(self) -> None:
        if self.latched and self.last and self.channel is not None:
            self.channel.log(self.last, log_time=self.last_time)


class _Latest:
    """A derived channel (the GeoJSON) and its last value: it latches like the fence."""

    def __init__(self, channel: GeoJsonChannel) -> None:
        self.channel = channel
        self.last: tuple[GeoJson, int] | None = None

    def log(self, msg: GeoJson, log_time: int) -> None:
        self.last = (msg, log_time)
        self.channel.log(msg, log_time=log_time)

    def resend(self) -> None:
        if self.last is not None:
            self.channel.log(self.last[0], log_time=self.last[1])


_ODOMETRY = Codec(Odometry)
_FENCE = Codec(GeofenceMsg)


def _json_safe(obj: Any) -> Any:
    """What msgspec's JSON encoder cannot write by itself, as plain data. NaN and
    infinities need nothing here: JSON has no NaN, and msgspec writes them as null (a
    sensor's NaN shows as null in the app). Bytes need nothing either: msgspec writes them
    as base64 text, which is how Foxglove expects binary data in JSON."""
    if isinstance(obj, np.ndarray):
        if obj.size > ARRAY_JSON_LIMIT:
            return {"dtype": obj.dtype.str, "shape": list(obj.shape),
                    "omitted": f"more than {ARRAY_JSON_LIMIT} elements"}
        if obj.dtype.kind == "c":  # complex: [real, imaginary] pairs
            return np.stack([obj.real, obj.imag], axis=-1).tolist()
        if obj.dtype.kind in "mMV":  # times as integers, raw records as bytes (base64)
            return obj.view(np.int64).tolist() if obj.dtype.kind != "V" else obj.tobytes()
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, msgpack.ExtType):  # an extension fleetbus does not know: kept raw
        return {"ext": obj.code, "data": obj.data}
    if isinstance(obj, memoryview | bytearray):
        return bytes(obj)
    raise TypeError(f"cannot serve {type(obj).__name__} as JSON")


JSON = msgspec.json.Encoder(enc_hook=_json_safe)
_SCHEMAS: dict[str, foxglove.Schema] = {}


def _schema_for(type_name: str) -> foxglove.Schema:
    """The JSON Schema of a message type, named by its wire type name; a permissive object
    schema for a type this process cannot import."""
    schema = _SCHEMAS.get(type_name)
    if schema is None:
        cls = wire_class(type_name)
        data = msgspec.json.encode({"type": "object", "title": type_name, "description":
                                    "fields of a type the bridge does not know"})
        if cls is not None:
            try:
                data = json_schema(cls, ARRAY_DESCRIPTION)
            except (TypeError, NotImplementedError, msgspec.MsgspecError):
                pass  # a field type without a JSON Schema: the permissive one will do
        schema = _SCHEMAS[type_name] = foxglove.Schema(
            name=type_name or "fleetbus/unknown", encoding="jsonschema", data=data)
    return schema


def json_channel_schema(doc: dict[str, Any], name: str) -> foxglove.Schema:
    return foxglove.Schema(name=name, encoding="jsonschema", data=msgspec.json.encode(doc))


def _timestamp(stamp_ns: int) -> Timestamp | None:
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return Timestamp(sec, nsec) if 0 <= sec < 2**32 else None


def _rotate(q: tuple[float, float, float, float],
            v: tuple[float, float, float]) -> tuple[float, float, float]:
    """`v` turned by the unit quaternion `q` (w, x, y, z)."""
    w, x, y, z = q
    tx, ty, tz = 2 * (y * v[2] - z * v[1]), 2 * (z * v[0] - x * v[2]), 2 * (x * v[1] - y * v[0])
    return (v[0] + w * tx + y * tz - z * ty, v[1] + w * ty + z * tx - x * tz,
            v[2] + w * tz + x * ty - y * tx)


def _position_covariance(pose_covariance: list[float]) -> list[float] | None:
    """The ENU position block (m^2, row-major 3x3) of a 6x6 pose covariance, or None when
    it is unknown (all zero, the wrong size or not finite)."""
    if len(pose_covariance) != 36:
        return None
    block = [float(pose_covariance[6 * row + col]) for row in range(3) for col in range(3)]
    if not any(block) or not all(math.isfinite(c) for c in block):
        return None
    return block
