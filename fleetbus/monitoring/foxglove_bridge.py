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
import math
import time
from typing import Any

import foxglove
from foxglove import Capability, StatusLevel
from foxglove.websocket import ChannelView, Client, ServerListener, WebSocketServer

from fleetbus.bus import protocol as p
from fleetbus.bus.clock import CLOCK_TOPIC
from fleetbus.bus.graph_watch import GraphWatch
from fleetbus.bus.introspect import visible
from fleetbus.bus.node import Node
from fleetbus.bus.params import ParamError
from fleetbus.bus.pubsub import AnyMessage
from fleetbus.messages import Clock
from fleetbus.monitoring.foxglove_view import JSON, FoxgloveView, json_channel_schema

HOST = "127.0.0.1"  # servers bind loopback only
HEALTH_TOPIC = "/health"
STATUS_ID = "fleetbus/health"
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
            HEALTH_TOPIC, schema=json_channel_schema(HEALTH_SCHEMA, "fleetbus/Health"),
            message_encoding="json", context=self._fox)
        self._view = FoxgloveView(self._fox, self.wanted, self._count)
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
                # Subscribed once its channel is ready: a latched value the publisher
                # re-sends on this subscription finds it.
                if self._view.serve(pub.topic, pub.type_name, pub.latched):
                    self.subscribe(pub.topic, None, self._on_message)
        self._publish_health(graph)

    def _on_message(self, msg: AnyMessage) -> None:
        h = msg.header
        self._view.message(msg.topic, h.type_name, h.schema_hash, msg.payload, msg.buffers,
                           self.now_ns())

    def _resend_latched(self, channel_id: int) -> None:
        """A client subscribed to a channel: send it the channel's last value if the topic
        latches (everyone subscribed gets it again; the app shows the same value)."""
        self._view.resend_latched(channel_id)
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
            self._health.log(JSON.encode({"nodes": rows, **summary,
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


class _Listener(ServerListener):
    """The server's events arrive on the SDK's thread: hand them to the node's."""

    def __init__(self, bridge: FoxgloveBridge) -> None:
        self._bridge = bridge

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        channel_id = channel.id
        self._bridge.call_soon_threadsafe(lambda: self._bridge._resend_latched(channel_id))


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
