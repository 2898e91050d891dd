"""The MAVLink ground-station face of one vehicle: QGroundControl, MAVProxy or MAVSDK watch
it and order it to start or resume its mission, hold, return or land.

Like an autopilot, the node sends its telemetry to the ground station's UDP address
(14550 on this host by default) from a socket of its own and answers every datagram on
that socket to its sender; what it shows and how commands map is `GcsFace`'s business
(fleetbus.sim_bridge.gcs_face). The socket is read as soon as a datagram arrives, on the
node's own loop, whatever the bus clock does; telemetry follows the bus clock (sim time in
a simulation). Bad datagrams and unsupported commands are counted and logged, never fatal.

Parameters: `vehicle_id`, `vehicle_type`, `system_id` (1), `gcs_host` (127.0.0.1),
`gcs_port` (14550), `bind_host` (127.0.0.1), `bind_port` (0: any free port),
`heartbeat_hz` (1: HEARTBEAT, SYS_STATUS, HOME_POSITION), `telemetry_hz` (10:
GLOBAL_POSITION_INT, ATTITUDE), `origin_lat_deg`, `origin_lon_deg`, `origin_alt_m` (the
simulator's defaults; the origin of a /geofence message replaces them), `stale_after_s`
(1: no estimate for longer shows as CRITICAL and stops the position reports),
`geofence_topic` (/geofence).
Topics: `/<id>/odometry`, `/<id>/geofence_status` and `/geofence` in;
`/<id>/mission_command` (MissionCommand) and `/events` (one per accepted order) out.
"""

from __future__ import annotations

import socket

from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages import GeofenceStatus, Header, MissionCommand, Odometry
from fleetbus.nodes.conversions import fence_from_msg
from fleetbus.nodes.vehicle_node import VehicleNode
from fleetbus.planners import GeofenceError
from fleetbus.sim_bridge.gcs_face import VEHICLE_TYPES, GcsFace, Order
from fleetbus.sim_bridge.sensing import SensorSettings

MAX_DATAGRAM = 65535
DATAGRAMS_PER_WAKE = 100  # then the loop serves the bus before reading on


class MavlinkGcs(VehicleNode):
    def setup(self) -> None:
        self.vehicle_params("show to ground stations", VEHICLE_TYPES)
        defaults = SensorSettings()
        origin = tuple(float(self.param(name, getattr(defaults, name)).value)
                       for name in ("origin_lat_deg", "origin_lon_deg", "origin_alt_m"))
        self.face = GcsFace(
            self.kind, int(self.param("system_id", 1, "MAVLink system id, 1..255").value),
            origin, float(self.param("stale_after_s", 1.0, "an estimate older than this "
                                     "is not shown").value), start_s=self.now())
        self.gcs = (self.param("gcs_host", "127.0.0.1", "where telemetry goes").value,
                    int(self.param("gcs_port", 14550).value))
        self.fence_topic = self.param("geofence_topic", "/geofence").value
        self.orders = self.publisher(f"/{self.vehicle}/mission_command", MissionCommand)
        self.subscribe(f"/{self.vehicle}/odometry", Odometry, self._on_odometry, conflate=True)
        self.subscribe(f"/{self.vehicle}/geofence_status", GeofenceStatus,
                       lambda msg: self.face.update_guard(msg.inside, msg.failsafe,
                                                          self.now()), conflate=True)
        self.subscribe(self.fence_topic, GeofenceMsg, self._on_fence)
        self.timer(1.0 / float(self.param("heartbeat_hz", 1.0).value),
                   lambda: self._send(self.face.status(self.now()), self.gcs))
        self.timer(1.0 / float(self.param("telemetry_hz", 10.0).value),
                   lambda: self._send(self.face.telemetry(self.now()), self.gcs))
        self.sock = self._open_socket(self.param("bind_host", "127.0.0.1").value,
                                      int(self.param("bind_port", 0).value))
        self.log.info("%s: MAVLink system %d on udp %s:%d, telemetry to %s:%d", self.name,
                      self.face.system_id, *self.sock.getsockname(), *self.gcs)

    def teardown(self) -> None:
        self.sock.close()

    def _open_socket(self, host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ValueError(f"{self.name}: cannot bind udp {host}:{port}: {exc}") from None
        sock.setblocking(False)
        self.watch(sock, self._on_readable)  # read on the node's thread as datagrams come
        return sock

    # -- bus inputs ---------------------------------------------------------------------

    def _on_odometry(self, msg: Odometry) -> None:
        estimate = self.read_estimate(msg)
        if estimate is not None:
            self.face.update_estimate(estimate, self.now())

    def _on_fence(self, msg: GeofenceMsg) -> None:
        try:
            fence = fence_from_msg(msg)
        except GeofenceError as exc:  # keep serving the fence we had
            self._count("invalid_geofence", f"{self.fence_topic} rejected: {exc}")
            return
        for note in self.face.set_fence(fence):
            self.log.warning("%s: fence for ground stations: %s", self.name, note)

    # -- the ground station -------------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(DATAGRAMS_PER_WAKE):
            try:
                data, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:
                self._count("mavlink_socket_error", f"receive: {exc}")
                return
            self._handle(data, sender)

    def _handle(self, data: bytes, sender: tuple[str, int]) -> None:
        peer = f"{sender[0]}:{sender[1]}"
        try:
            handled = self.face.handle_datagram(data, self.now())
        except Exception as exc:  # a bug must cost this datagram, not the node
            self._count("mavlink_error", f"datagram from {peer}: {type(exc).__name__}: {exc}",
                        exc_info=True)
            return
        for kind, text in handled.problems:
            self._count(kind, f"MAVLink from {peer}: {text}")
        self._send(handled.replies, sender)
        for order in handled.orders:
            self._publish(order)

    def _publish(self, order: Order) -> None:
        self.orders.publish(MissionCommand(header=Header(stamp_ns=self.now_ns()),
                                           vehicle_id=self.vehicle, action=order.action,
                                           source=order.source))
        self.vehicle_event("gcs_command", "info",
                           f"{order.action} ordered by {order.source} ({order.via})",
                           {"action": order.action, "source": order.source,
                            "command": order.via})

    def _send(self, packets: list[bytes], address: tuple[str, int]) -> None:
        for packet in packets:
            try:
                self.sock.sendto(packet, address)
            except OSError as exc:
                self._count("mavlink_socket_error", f"send to {address[0]}:{address[1]}: "
                                                    f"{exc}")
                return
