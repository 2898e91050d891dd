"""The Foxglove bridge: the live bus in the Foxglove app, over the Foxglove WebSocket
protocol (served by the `foxglove` SDK, subprotocol ``foxglove.sdk.v1``).

What the app sees:

- every topic of the bus as a JSON channel of the same name, with the message type's JSON
  Schema (a permissive object schema for types this process cannot import). Topics are
  found in the registry's graph every `poll_s` seconds, so a topic that appears later
  is served from then on;
- `/<vehicle>/location` (``foxglove.LocationFix``) for every `/<vehicle>/odometry`, so the
  fleet shows on the Map panel: the ENU position is turned into WGS84 around the origin
  of the last `/geofence` message;
- `/geofence/geojson` (``foxglove.GeoJson``): the geofence's zones on the map;
- `/health`: node liveness from the graph, also raised as a status message in the app when
  a node falls silent or drops out of the graph;
- on sim time, the app's clock is the bus's `/clock`.

The bridge is one more subscriber on the bus and nothing else: a publisher's PUB socket
never blocks and never waits for it, so serving a topic adds nothing to the publisher's
work. A frame that reaches a channel nobody in the app watches costs the bridge one
receive; it is decoded only when someone looks (or to keep the last value of a latched
topic, which a client that subscribes later is sent, as on the bus).

Bad input never stops the bridge: a frame that does not decode is counted
(`rejected_frame`) and skipped, a geofence that is not a valid fence is counted
(`bad_geofence`) and its origin still used if it is a valid position.

Parameters: `port` (default 8765; 0 picks a free one, see the `port` attribute), `host`
(127.0.0.1 only: servers bind loopback only; reach the bridge from another machine
through an SSH tunnel), `topics` (glob patterns of the topics to serve, default all; a
location is served with its odometry topic and the GeoJSON with `/geofence`, which is
listened to in any case for its origin; `/health` is always served), `poll_s` (seconds
between looks at the graph).
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import foxglove
import msgpack
import msgspec
import numpy as np
import pymap3d
from foxglove import Capability, StatusLevel
from foxglove.channels import GeoJsonChannel, LocationFixChannel
from foxglove.messages import GeoJson, LocationFix, LocationFixPositionCovarianceType, Timestamp
from foxglove.messages import Vector3 as FoxgloveVector3
from foxglove.websocket import ChannelView, Client, ServerListener, WebSocketServer

from fleetbus.bus import protocol as p
from fleetbus.bus.clock import CLOCK_TOPIC
from fleetbus.bus.graph_watch import GraphWatch
from fleetbus.bus.introspect import visible
from fleetbus.bus.node import Node
from fleetbus.bus.params import ParamError
from fleetbus.bus.pubsub import AnyMessage
from fleetbus.messages import Clock, Odometry
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages.codec import Codec, DecodeError
from fleetbus.messages.json_schema import json_schema, wire_class
from fleetbus.nodes.conversions import fence_from_msg
from fleetbus.planners import GeofenceError, to_geojson
from fleetbus.planners.geojson import check_origin

HOST = "127.0.0.1"  # servers bind loopback only
FENCE_TOPIC = "/geofence"
GEOJSON_TOPIC = "/geofence/geojson"
HEALTH_TOPIC = "/health"
ODOMETRY_SUFFIX = "/odometry"
LOCATION_SUFFIX = "/location"
STATUS_ID = "fleetbus/health"
ARRAY_JSON_LIMIT = 65536
"""Arrays with more elements are served as a summary (dtype, shape): as JSON text a large
image or point cloud would cost the bridge tens of milliseconds a frame and the app more."""
ARRAY_DESCRIPTION = (f"numpy array as nested lists (NaN as null); over {ARRAY_JSON_LIMIT} "
                     "elements only its dtype and shape")
TIME_MIN_GAP_S = 0.02
"""The app's clock moves at most this often (wall time): a lockstep simulator can step at
kilohertz rates, far more than anyone can watch."""
TIME_FLUSH_S = 0.05  # a /clock held back by TIME_MIN_GAP_S goes out at the latest this late
TIME_REPEAT_S = 1.0
"""The protocol tells a server nothing when a client connects: the time is sent again this
often while the simulator is paused, so that a client that connected since has it."""
SILENT_S = 3 * p.HEARTBEAT_S  # a node that has not announced itself this long is silent
GONE_FORGET_S = 60.0  # a node gone from the graph is reported as gone for this long


class FoxgloveBridge(Node):
    """Serves the live bus to the Foxglove app; see the module docstring.

    Attributes set by setup(): `server` (the SDK's WebSocketServer), `port` (the port it
    listens on, the chosen one when the `port` parameter is 0) and `url`.
    """

    server: WebSocketServer
    port: int
    url: str

    def setup(self) -> None:
        port = self.param("port", 8765, "TCP port of the WebSocket server (0: any free)").value
        host = self.param("host", HOST, "address to listen on: 127.0.0.1 only").value
        self._patterns = list(self.param("topics", ["*"], "globs of the topics to serve").value)
        self._poll_s = float(self.param("poll_s", 0.5, "s between looks for new topics").value)
        if host != HOST:
            raise ParamError(
                f"parameter 'host' is {host!r}, but the Foxglove bridge binds {HOST} only "
                f"(servers bind loopback only); from another machine, reach it through an "
                f"SSH tunnel (ssh -L {port or 8765}:{HOST}:{port or 8765} ...)")
        if not 0 <= port <= 65535:
            raise ParamError(f"parameter 'port' must be 0..65535, got {port}")
        if not self._poll_s > 0:
            raise ParamError(f"parameter 'poll_s' must be positive, got {self._poll_s}")
        if not all(isinstance(pattern, str) for pattern in self._patterns):
            raise ParamError(f"parameter 'topics' must be a list of globs, got "
                             f"{self._patterns!r}")

        self._served: dict[str, _Topic] = {}
        self._resend: dict[int, _Topic | _Latest] = {}  # channel id -> its last value
        self._origin: tuple[float, float, float] | None = None
        self._known_nodes: dict[str, tuple[p.NodeInfo, float]] = {}  # name -> (last, when)
        self._status_text = ""
        self._sim_ns: int | None = None  # the last /clock, once there was one
        self._time_sent_ns = -1
        self._time_sent_at = -math.inf
        self._graph: GraphWatch | None = None
        # A context of its own: channels of two bridges (or of other SDK users) in one
        # process never meet.
        self._fox = foxglove.Context()
        try:
            # The Time capability says the app's clock is the server's: on sim time only,
            # and then every log time below is on that clock too (sim time). On wall time
            # the app takes the messages' log times (wall clock) as they arrive.
            self.server = foxglove.start_server(
                name=f"fleetbus {self.name}", host=HOST, port=port,
                capabilities=[Capability.Time] if self.clock.is_sim else [],
                server_listener=_Listener(self), context=self._fox)
        except Exception as exc:
            raise RuntimeError(f"cannot serve Foxglove on {HOST}:{port}: "
                               f"{exc}") from exc
        try:
            self._start()
        except BaseException:
            self._shutdown()  # teardown() does not run when setup() fails
            raise

    def _start(self) -> None:
        self.port = self.server.port
        self.url = f"ws://{HOST}:{self.port}"
        self.log.info("%s: Foxglove WebSocket server on %s", self.name, self.url)
        self._health = foxglove.Channel(
            HEALTH_TOPIC, schema=_json_schema_of(HEALTH_SCHEMA, "fleetbus/Health"),
            message_encoding="json", context=self._fox)
        self._geojson: _Latest | None = None
        if self.wanted(FENCE_TOPIC):
            self._geojson = _Latest(GeoJsonChannel(GEOJSON_TOPIC, context=self._fox))
            self._resend[self._geojson.channel.id()] = self._geojson
        if self.clock.is_sim:
            self.subscribe(CLOCK_TOPIC, Clock, self._on_clock, conflate=True)
        # Sim-time timers stand still until the simulator runs, and the topics are there
        # before it does: graph polls and clock flushes run on wall time.
        self._graph = GraphWatch(self, self._poll_s, self._on_graph,
                                 tick_s=TIME_FLUSH_S if self.clock.is_sim else None,
                                 on_tick=self._flush_time if self.clock.is_sim else None)

    def teardown(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        if self._graph is not None:
            self._graph.close()
        self.server.stop()

    # -- public API -------------------------------------------------------------------------

    def wanted(self, topic: str) -> bool:
        """Whether `topic` matches the `topics` parameter."""
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self._patterns)

    # -- discovery --------------------------------------------------------------------------

    def _flush_time(self) -> None:
        if self._sim_ns is not None and (
                self._sim_ns > self._time_sent_ns
                or time.monotonic() - self._time_sent_at >= TIME_REPEAT_S):
            self._send_time()

    def _on_graph(self, graph: p.Graph) -> None:
        for node in graph.nodes:
            for pub in node.publishers:
                served = self._served.get(pub.topic)
                if served is not None:
                    served.latched |= pub.latched
                elif self.wanted(pub.topic) or pub.topic == FENCE_TOPIC:
                    # The fence is always listened to: its origin places the vehicles.
                    self._serve(pub.topic, pub.type_name, pub.latched, self.wanted(pub.topic))
        self._publish_health(graph)

    def _serve(self, topic: str, type_name: str, latched: bool, advertise: bool) -> None:
        channel = None
        if advertise:
            channel = foxglove.Channel(
                topic, schema=_schema_for(type_name), message_encoding="json",
                context=self._fox, metadata={"fleetbus_type": type_name})
        location = None
        if advertise and topic.endswith(ODOMETRY_SUFFIX) and type_name == Odometry.__msgtype__:
            location = LocationFixChannel(topic[: -len(ODOMETRY_SUFFIX)] + LOCATION_SUFFIX,
                                          context=self._fox)
        served = _Topic(type_name, latched, channel, location)
        if channel is not None:
            self._resend[channel.id()] = served
        self._served[topic] = served
        # Subscribed last: a latched value the publisher re-sends on this subscription
        # finds the channel ready.
        self.subscribe(topic, None, self._on_message)

    # -- messages ---------------------------------------------------------------------------

    def _on_message(self, msg: AnyMessage) -> None:
        served = self._served[msg.topic]
        log_time = self.now_ns()
        channel, location = served.channel, served.location
        mirror = channel is not None and (served.latched or channel.has_sinks())
        place = location is not None and self._origin is not None and location.has_sinks()
        fence = msg.topic == FENCE_TOPIC
        if not (mirror or place or fence):
            return  # nobody looks: not even a decode
        header = msg.header
        try:
            text = b""
            if mirror:
                data = msg.to_builtins()
                if not isinstance(data, dict):  # a message is a map of its fields
                    raise TypeError(f"payload is a {type(data).__name__}, not a map")
                text = _JSON.encode(data)
            typed: Any = None
            if place and header.schema_hash == _ODOMETRY.schema_hash:
                typed = _ODOMETRY.decode(msg.payload, msg.buffers)
            elif fence and header.schema_hash == _FENCE.schema_hash:
                typed = _FENCE.decode(msg.payload, msg.buffers)
        # Whatever a hostile payload makes a decoder raise: the frame is skipped, counted.
        except (DecodeError, msgpack.UnpackException, msgspec.MsgspecError, ValueError,
                TypeError, OverflowError, RecursionError) as exc:
            self._count("rejected_frame", f"{msg.topic}: cannot serve a {header.type_name} "
                        f"frame from {header.publisher}: {type(exc).__name__}"
                        f"{f': {exc}' if str(exc) else ''}")
            return
        if mirror:
            assert channel is not None
            channel.log(text, log_time=log_time)
            if served.latched:
                served.last, served.last_time = text, log_time
        if isinstance(typed, Odometry) and location is not None:
            self._locate(msg.topic, typed, location, log_time)
        elif isinstance(typed, GeofenceMsg):
            self._on_fence(typed, log_time)

    def _locate(self, topic: str, odom: Odometry, channel: LocationFixChannel,
                log_time: int) -> None:
        """The vehicle's WGS84 position around the fence's origin. No fence yet, no
        origin: no LocationFix (an ENU position alone has no place on the globe)."""
        assert self._origin is not None
        p_ = odom.pose.position
        if not all(math.isfinite(v) for v in (p_.x, p_.y, p_.z)):
            self._count("bad_odometry", f"{topic}: non-finite position, no location sent")
            return
        lat, lon, alt = pymap3d.enu2geodetic(p_.x, p_.y, p_.z, *self._origin)
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
            self._origin = check_origin(
                (msg.origin_lat_deg, msg.origin_lon_deg, msg.origin_alt_m), "geofence origin")
        except GeofenceError as exc:
            self._count("bad_geofence", f"{FENCE_TOPIC}: {exc}; vehicles keep the old origin")
            return
        if self._geojson is None:
            return
        try:
            doc = to_geojson(fence_from_msg(msg))
        except GeofenceError as exc:
            self._count("bad_geofence", f"{FENCE_TOPIC}: not drawn on the map: {exc}")
            return
        self._geojson.log(GeoJson(geojson=json.dumps(doc, allow_nan=False)), log_time)

    def _resend_latched(self, channel_id: int) -> None:
        """A client subscribed to a channel: send it the channel's last value if the topic
        latches (everyone subscribed gets it again; the app shows the same value)."""
        served = self._resend.get(channel_id)
        if served is not None:
            served.resend()
        if self._sim_ns is not None:
            self._send_time()  # likely a client that just connected

    # -- time -------------------------------------------------------------------------------

    def _on_clock(self, msg: Clock) -> None:
        if not 0 <= msg.stamp_ns < 2**64:  # the protocol's time is an unsigned 64-bit ns
            self._count("rejected_frame", f"{CLOCK_TOPIC}: stamp {msg.stamp_ns} out of range")
            return
        self._sim_ns = max(self._sim_ns or 0, int(msg.stamp_ns))
        if time.monotonic() - self._time_sent_at >= TIME_MIN_GAP_S:
            self._send_time()

    def _send_time(self) -> None:
        assert self._sim_ns is not None
        self.server.broadcast_time(self._sim_ns)
        self._time_sent_ns = self._sim_ns
        self._time_sent_at = time.monotonic()

    # -- health -----------------------------------------------------------------------------

    def _publish_health(self, graph: p.Graph) -> None:
        now = time.monotonic()
        rows = []
        present = set()
        for node in visible(graph.nodes):  # tool nodes (the CLI's) come and go: left out
            silent_s = graph.silent_s.get(node.uid, 0.0)
            present.add(node.name)
            self._known_nodes[node.name] = (node, now)
            rows.append({"name": node.name, "host": node.host, "pid": node.pid,
                         "state": "silent" if silent_s > SILENT_S else "alive",
                         "silent_s": round(silent_s, 3),
                         "problems": sum(node.counters.values()), "counters": node.counters})
        for name, (node, seen) in list(self._known_nodes.items()):
            if name in present:
                continue
            if now - seen > GONE_FORGET_S:
                del self._known_nodes[name]
                continue
            rows.append({"name": name, "host": node.host, "pid": node.pid, "state": "gone",
                         "silent_s": round(now - seen, 3), "problems": 0, "counters": {}})
        rows.sort(key=lambda row: row["name"])
        states = [row["state"] for row in rows]
        summary = {state: states.count(state) for state in ("alive", "silent", "gone")}
        if self._health.has_sinks():
            self._health.log(_JSON.encode({"nodes": rows, **summary,
                                           "graph_problems": graph.problems}),
                             log_time=self.now_ns())
        troubled = [f"{row['name']} {row['state']}" for row in rows if row["state"] != "alive"]
        text = ("; ".join(troubled + graph.problems)) if troubled or graph.problems else ""
        if text != self._status_text:
            if text:
                self.server.publish_status(text, StatusLevel.Warning, id=STATUS_ID)
            else:
                self.server.remove_status([STATUS_ID])
            self._status_text = text


# -- helpers ----------------------------------------------------------------------------------


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


class _Listener(ServerListener):
    """The server's events arrive on the SDK's thread: hand them to the node's."""

    def __init__(self, bridge: FoxgloveBridge) -> None:
        self._bridge = bridge

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        channel_id = channel.id
        self._bridge.call_soon_threadsafe(lambda: self._bridge._resend_latched(channel_id))


_ODOMETRY = Codec(Odometry)
_FENCE = Codec(GeofenceMsg)

HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Liveness of the bus's nodes, from the registry's graph.",
    "properties": {
        "nodes": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "state": {"enum": ["alive", "silent", "gone"]},
            "silent_s": {"type": "number", "description": "s since its last announce"},
            "problems": {"type": "integer", "description": "sum of its problem counters"},
            "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
        }}},
        "alive": {"type": "integer"},
        "silent": {"type": "integer"},
        "gone": {"type": "integer"},
        "graph_problems": {"type": "array", "items": {"type": "string"}},
    },
}


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


_JSON = msgspec.json.Encoder(enc_hook=_json_safe)
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


def _json_schema_of(doc: dict[str, Any], name: str) -> foxglove.Schema:
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
