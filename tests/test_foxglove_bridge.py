"""The Foxglove bridge on a real bus, watched by a real WebSocket client speaking the
Foxglove protocol: every topic advertised as JSON with its schema and served with the
published values (NaN as null), vehicles placed on the globe around the geofence's origin
(checked against the WGS84 radii of curvature, not the bridge's own conversion), the fence
as GeoJSON to a client that subscribed after it was published, topics that appear later,
garbage counted while serving goes on, node health, sim time as the app's clock, and a
bridge that refuses to listen beyond loopback."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import threading
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fleetbus.bus.config import BusConfig
from fleetbus.messages import Clock, Header, Odometry, Pose, Quaternion, Twist, Vector3
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.monitoring.foxglove_bridge import FoxgloveBridge
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.planners import Geofence, Zone
from tests.helpers import run_on, wait_until

SUBPROTOCOL = "foxglove.sdk.v1"  # the SDK's server refuses the older foxglove.websocket.v1
ORIGIN = (59.91, 10.75, 12.0)  # lat deg, lon deg, alt m
EAST, NORTH, UP = 120.0, -80.0, 3.0
YAW = math.radians(30.0)  # ENU: 30 degrees left of east, so heading 60 degrees


class FoxgloveClient:
    """A minimal client of the Foxglove WebSocket protocol, reading on a thread."""

    def __init__(self, port: int) -> None:
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}", subprotocols=[SUBPROTOCOL]))
        self.lock = threading.Lock()
        self.ops: list[dict[str, Any]] = []  # JSON messages from the server
        self.channels: dict[str, dict[str, Any]] = {}  # advertised, by topic
        self.frames: list[tuple[str, int, bytes]] = []  # (topic, log time ns, payload)
        self.times: list[int] = []  # Time frames, ns
        self._subscribed: dict[int, str] = {}  # subscription id -> topic
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                with self.lock:
                    if isinstance(message, str):
                        op = json.loads(message)
                        self.ops.append(op)
                        if op["op"] == "advertise":
                            self.channels.update({c["topic"]: c for c in op["channels"]})
                    elif message[0] == 0x01:  # MessageData: u32 subscription, u64 log time
                        sub, log_time = struct.unpack_from("<IQ", message, 1)
                        self.frames.append((self._subscribed[sub], log_time, message[13:]))
                    elif message[0] == 0x02:  # Time: u64 ns
                        self.times.append(struct.unpack_from("<Q", message, 1)[0])
        except ConnectionClosed:
            pass

    def server_info(self) -> dict[str, Any] | None:
        with self.lock:
            return next((op for op in self.ops if op["op"] == "serverInfo"), None)

    def subscribe(self, *topics: str) -> None:
        with self.lock:
            subscriptions = []
            for topic in topics:
                sub = len(self._subscribed) + 1
                self._subscribed[sub] = topic
                subscriptions.append({"id": sub, "channelId": self.channels[topic]["id"]})
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subscriptions}))

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, _, payload in self.frames if t == topic]

    def messages(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.payloads(topic)]

    def close(self) -> None:
        self._stack.close()
        self.thread.join(10)


@pytest.fixture
def clients() -> Any:
    opened: list[FoxgloveClient] = []

    def open_client(port: int) -> FoxgloveClient:
        opened.append(FoxgloveClient(port))
        return opened[-1]

    yield open_client
    for client in opened:
        client.close()


# -- protobuf, read with the schema the server advertised ----------------------------------


def _fields(data: bytes) -> dict[int, list[Any]]:
    """Protobuf wire format: field number -> values (ints, or raw bytes for the fixed and
    length-delimited types)."""
    out: dict[int, list[Any]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value: Any = varint()
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i:i + size], i + size
        elif wire == 2:
            size = varint()
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _field_numbers(channel: dict[str, Any], message: str) -> dict[str, int]:
    """Field name -> number of `message`, from the channel's FileDescriptorSet (file = 1;
    a file's message_type = 4; a message's name = 1 and field = 2; a field's name = 1 and
    number = 3)."""
    assert channel["schemaEncoding"] == "protobuf"
    for file in _fields(base64.b64decode(channel["schema"]))[1]:
        for proto in _fields(file).get(4, []):
            desc = _fields(proto)
            if desc[1][0].decode() == message:
                return {_fields(f)[1][0].decode(): _fields(f)[3][0] for f in desc.get(2, [])}
    raise AssertionError(f"no message {message} in the schema of {channel['topic']}")


def _double(raw: bytes) -> float:
    return struct.unpack("<d", raw)[0]


# -- expected values, independently of the bridge's conversion ---------------------------


def _expected_geodetic(east: float, north: float, up: float) -> tuple[float, float, float]:
    """Small ENU offsets to WGS84 through the meridian and normal radii of curvature at the
    origin: exact to millimetres a few hundred metres out."""
    lat0, lon0, h0 = ORIGIN
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    s = math.sin(math.radians(lat0))
    meridian = a * (1 - e2) / (1 - e2 * s * s) ** 1.5
    normal = a / math.sqrt(1 - e2 * s * s)
    lat = lat0 + math.degrees(north / (meridian + h0))
    lon = lon0 + math.degrees(east / ((normal + h0) * math.cos(math.radians(lat0))))
    return lat, lon, h0 + up - (east ** 2 + north ** 2) / (2 * normal)  # the surface drops


def _fence() -> GeofenceMsg:
    return fence_to_msg(Geofence([
        Zone.polygon("field", [(-500, -500), (500, -500), (500, 500), (-500, 500)],
                     ceiling_m=120.0),
        Zone.circle_zone("mast", (40.0, 50.0), 15.0, inclusion=False, action="hold"),
    ], origin=ORIGIN))


def _odometry(k: int = 0, east: float = EAST) -> Odometry:
    covariance = [0.0] * 36
    covariance[0], covariance[7], covariance[14] = 0.25, 0.36, 1.0
    covariance[35] = math.nan  # yaw variance unknown: served as null
    return Odometry(
        header=Header(stamp_ns=1_700_000_000_000_000_000 + k, frame_id="map"),
        child_frame_id="base_link",
        pose=Pose(position=Vector3(x=east, y=NORTH, z=UP),
                  orientation=Quaternion(w=math.cos(YAW / 2), z=math.sin(YAW / 2))),
        twist=Twist(linear=Vector3(x=2.0)),
        pose_covariance=covariance)


def _source(bus: Any) -> Any:
    def setup(node: Any) -> None:
        node.odom = node.publisher("/car1/odometry", Odometry)
        node.fence = node.publisher("/geofence", GeofenceMsg, latched=True)
    return bus.node("source", setup)


def _until_served(src: Any, client: FoxgloveClient, topic: str, publish: Any) -> list[bytes]:
    """Publish until the client has a frame of `topic`: the server takes the subscription
    on its own thread, so the first messages may reach it before it has."""
    def arrived() -> list[bytes]:
        run_on(src, publish)
        return client.payloads(topic)
    return wait_until(arrived, what=f"a frame of {topic}")


# -- tests ----------------------------------------------------------------------------------


def test_bridge_serves_topics_vehicles_on_the_map_and_the_fence(bus, clients):
    src = _source(bus)
    run_on(src, lambda: src.fence.publish(_fence()))
    bridge = bus.start(FoxgloveBridge("foxglove", params={"port": 0, "poll_s": 0.05}))
    assert bridge.port > 0 and bridge.url == f"ws://127.0.0.1:{bridge.port}"
    client = clients(bridge.port)

    info = wait_until(client.server_info, what="serverInfo")
    assert "time" not in info["capabilities"]  # wall time: the app keeps its own clock
    topics = ("/car1/odometry", "/car1/location", "/geofence", "/geofence/geojson", "/health")
    wait_until(lambda: all(t in client.channels for t in topics), what=f"channels {topics}")
    odom = client.channels["/car1/odometry"]
    assert (odom["encoding"], odom["schemaEncoding"]) == ("json", "jsonschema")
    assert odom["schemaName"] == "fleetbus/Odometry"
    schema = json.loads(odom["schema"])
    assert schema["type"] == "object" and "pose_covariance" in schema["properties"]
    assert json.loads(client.channels["/geofence"]["schema"])["type"] == "object"
    assert client.channels["/car1/location"]["schemaName"] == "foxglove.LocationFix"
    assert client.channels["/geofence/geojson"]["schemaName"] == "foxglove.GeoJSON"
    client.subscribe(*topics)

    # the odometry as published, NaN as null (JSON has no NaN)
    sent = _odometry()
    data = json.loads(_until_served(src, client, "/car1/odometry",
                                    lambda: src.odom.publish(sent))[0])
    assert data["header"] == {"stamp_ns": sent.header.stamp_ns, "frame_id": "map"}
    assert data["child_frame_id"] == "base_link"
    assert data["pose"]["position"] == {"x": EAST, "y": NORTH, "z": UP}
    assert data["pose"]["orientation"]["z"] == pytest.approx(math.sin(YAW / 2))
    assert data["pose_covariance"][:3] == [0.25, 0.0, 0.0]
    assert data["pose_covariance"][35] is None

    # the vehicle on the globe, around the fence's origin
    fix_payload = wait_until(lambda: client.payloads("/car1/location"), what="a LocationFix")[0]
    numbers = _field_numbers(client.channels["/car1/location"], "LocationFix")
    fix = _fields(fix_payload)
    lat, lon, alt = (_double(fix[numbers[k]][0]) for k in ("latitude", "longitude", "altitude"))
    want = _expected_geodetic(EAST, NORTH, UP)
    assert lat == pytest.approx(want[0], abs=1e-7)  # about a centimetre
    assert lon == pytest.approx(want[1], abs=1e-7)
    assert alt == pytest.approx(want[2], abs=0.01)
    assert fix[numbers["frame_id"]][0] == b"car1"
    assert _double(fix[numbers["heading"]][0]) == pytest.approx(math.radians(60.0))
    covariance = struct.unpack("<9d", fix[numbers["position_covariance"]][0])
    assert covariance == (0.25, 0, 0, 0, 0.36, 0, 0, 0, 1.0)
    axes = _field_numbers(client.channels["/car1/location"], "Vector3")
    velocity = _fields(fix[numbers["velocity"]][0])  # 2 m/s forward, turned into ENU
    assert _double(velocity[axes["x"]][0]) == pytest.approx(2 * math.cos(YAW))
    assert _double(velocity[axes["y"]][0]) == pytest.approx(2 * math.sin(YAW))

    # the fence as GeoJSON, although it was published before anyone subscribed
    geo_payload = wait_until(lambda: client.payloads("/geofence/geojson"), what="GeoJSON")[0]
    numbers = _field_numbers(client.channels["/geofence/geojson"], "GeoJSON")
    doc = json.loads(_fields(geo_payload)[numbers["geojson"]][0])
    assert doc["type"] == "FeatureCollection"
    assert doc["fleetbus:origin"] == dict(zip(("lat_deg", "lon_deg", "alt_m"), ORIGIN,
                                              strict=True))
    assert [f["id"] for f in doc["features"]] == ["field", "mast"]
    fence_json = wait_until(lambda: client.messages("/geofence"), what="the fence as JSON")[0]
    assert fence_json["zones"][0]["floor_m"] is None  # -inf: unbounded below
    assert fence_json["zones"][0]["ceiling_m"] == 120.0

    # health: every node of the graph, alive
    health = wait_until(lambda: client.messages("/health"), what="health")[-1]
    states = {row["name"]: row["state"] for row in health["nodes"]}
    assert states["/source"] == "alive" and states["/foxglove"] == "alive"
    assert bridge.counters["rejected_frame"] == 0


def test_topics_that_appear_later_are_served_and_garbage_is_counted(bus, clients):
    src = _source(bus)
    bridge = bus.start(FoxgloveBridge("foxglove", params={"port": 0, "poll_s": 0.05}))
    client = clients(bridge.port)
    wait_until(lambda: "/car1/odometry" in client.channels, what="/car1/odometry advertised")
    client.subscribe("/car1/odometry")
    assert "/car2/odometry" not in client.channels
    assert "/car1/location" in client.channels  # advertised; no fix without a fence

    late = bus.node("late", lambda n: setattr(n, "odom", n.publisher("/car2/odometry",
                                                                      Odometry)))
    wait_until(lambda: {"/car2/odometry", "/car2/location"} <= set(client.channels),
               what="the later topic advertised")
    client.subscribe("/car2/odometry")
    _until_served(late, client, "/car2/odometry", lambda: late.odom.publish(_odometry(2)))
    _until_served(src, client, "/car1/odometry", lambda: src.odom.publish(_odometry(1)))

    # A frame with a valid header whose payload is not MessagePack (0xc1 is never used).
    run_on(src, lambda: src.odom.publish_encoded(b"\xc1garbage"))
    wait_until(lambda: bridge.counters["rejected_frame"] == 1, what="the garbage counted")
    marker = _odometry(east=-7.5)

    def marker_served() -> bool:
        run_on(src, lambda: src.odom.publish(marker))
        return any(m["pose"]["position"]["x"] == -7.5 for m in client.messages("/car1/odometry"))

    wait_until(marker_served, what="odometry served after the garbage")
    assert not client.payloads("/car1/location")  # still no fence, so no LocationFix
    assert not bridge.stopped.is_set()

    # A node that leaves the graph is reported to the app.
    late.stop()
    assert late.stopped.wait(10)

    def warning() -> list[dict[str, Any]]:
        with client.lock:
            return [op for op in client.ops if op["op"] == "status" and op["level"] == 1]

    assert "/late gone" in wait_until(warning, what="a warning status")[-1]["message"]


def test_on_sim_time_the_app_clock_is_the_bus_clock(bus, clients):
    def setup(node: Any) -> None:
        node.ticks = node.publisher("/clock", Clock, latched=True)
        node.odom = node.publisher("/car1/odometry", Odometry)
    src = bus.node("sim", setup)
    run_on(src, lambda: src.ticks.publish(Clock(stamp_ns=7_000_000_000)))
    bridge = bus.start(FoxgloveBridge("foxglove", params={"port": 0, "poll_s": 0.05},
                                      config=BusConfig.from_env(clock="sim")))
    client = clients(bridge.port)
    assert "time" in wait_until(client.server_info, what="serverInfo")["capabilities"]
    wait_until(lambda: "/car1/odometry" in client.channels, what="/car1/odometry advertised")
    client.subscribe("/car1/odometry")
    wait_until(lambda: 7_000_000_000 in client.times, what="the sim time sent")
    _until_served(src, client, "/car1/odometry", lambda: src.odom.publish(_odometry()))
    with client.lock:
        log_time = [t for topic, t, _ in client.frames if topic == "/car1/odometry"][-1]
    assert log_time == 7_000_000_000  # messages are logged on the same clock


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "localhost", "::"])
def test_the_bridge_binds_loopback_only(bus, host):
    bridge = FoxgloveBridge("foxglove", params={"port": 0, "host": host})
    with pytest.raises(ValueError, match=r"binds 127\.0\.0\.1 only"):
        bus.start(bridge)


def test_a_port_in_use_is_a_clear_setup_error(bus):
    first = bus.start(FoxgloveBridge("first", params={"port": 0}))
    with pytest.raises(RuntimeError,
                       match=re.escape(f"cannot serve Foxglove on 127.0.0.1:{first.port}")):
        bus.start(FoxgloveBridge("second", params={"port": first.port}))
