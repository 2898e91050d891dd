"""One fleetbus vehicle as a MAVLink ground station (QGroundControl, MAVProxy, MAVSDK) sees it.

A pure library over pymavlink's common dialect (MAVLink 2): the vehicle's estimate, geofence
and guard status go in; datagrams to send and the orders a ground station gave come out.
`fleetbus.nodes.mavlink_gcs` puts it on the bus and a UDP socket. Frames are converted in
`fleetbus.sim_bridge.frames` only; ENU positions become WGS84 with pymap3d.

What a ground station sees, and why:

- HEARTBEAT: MAV_TYPE_QUADROTOR, _SURFACE_BOAT or _GROUND_ROVER with MAV_AUTOPILOT_GENERIC.
  fleetbus is neither ArduPilot nor PX4; claiming either would make ground stations expect
  their parameters, and QGroundControl does not complain about missing parameters from a
  generic autopilot. `system_status` is STANDBY until the first estimate, ACTIVE while it is
  fresh, and CRITICAL once it went stale or while the geofence guard reports the vehicle
  outside or under a failsafe. `base_mode` has the custom mode flag, and the armed flag
  while the estimate is fresh: fleetbus has no arming, a vehicle with a live estimate is
  under its stack's control, and ground stations offer in-flight actions (return, hold)
  to armed vehicles only.
- Custom modes are ArduPilot's numbers for Copter (quadrotor) and Rover (cars and boats):
  pymavlink, hence MAVProxy, names the modes of any non-PX4 autopilot with those tables, so
  MAVProxy's `mode RTL`, `rtl`, `loiter` and `auto` work and show by name. The mode shown is
  the guard's failsafe while one holds, else the last order a ground station gave (GUIDED,
  "driven by its own stack", before any): it says what was ordered, not what the mission
  manager made of it. MAVSDK sends PX4 modes to any non-ArduPilot autopilot; those are
  answered UNSUPPORTED.
- SYS_STATUS: GPS and AHRS stand for the estimate (healthy while fresh). GEOFENCE is present
  once a fence or a guard status is known, enabled while the guard reports (a fence nobody
  enforces is not enabled), and unhealthy only while the guard's fresh status says outside
  (MAVProxy announces a breach whenever the bit is clear). No battery is reported.
  `errors_comm` counts the bad packets received.
- GLOBAL_POSITION_INT and ATTITUDE only from a fresh estimate, never from a stale one.
  HOME_POSITION (the first estimated position) goes out with every heartbeat.
- The geofence is served with the mission protocol (mission_type FENCE); missions and rally
  points live on the bus, so their lists are empty, and uploads are refused.
- Parameters: there are none. PARAM_REQUEST_LIST is ignored, as the MAVLink parameter
  protocol asks of components without parameters; reads and writes get a STATUSTEXT.
- Commands (COMMAND_LONG or COMMAND_INT to our system id or 0): return to launch, mission
  start, pause/continue, loiter unlimited, land, set mode, and requests for
  AUTOPILOT_VERSION and HOME_POSITION. Anything else is answered UNSUPPORTED and counted.

Bad input (garbage, bad CRCs, truncated packets, unsupported commands and requests) is
counted in `counters` and reported as problems; it never raises.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymavlink.dialects.v20 import common as mavlink

from fleetbus.estimation import Estimate
from fleetbus.planners import Geofence
from fleetbus.sim_bridge.frames import (
    Origin,
    Vec3,
    attitude_enu_ned,
    enu_ned,
    euler_ned,
    flu_frd,
    geodetic,
    rotate,
)

Message = Any  # a decoded pymavlink message

VEHICLE_TYPES = {"quadrotor": mavlink.MAV_TYPE_QUADROTOR,
                 "vessel": mavlink.MAV_TYPE_SURFACE_BOAT,
                 "car": mavlink.MAV_TYPE_GROUND_ROVER}
COMPONENT_ID = mavlink.MAV_COMP_ID_AUTOPILOT1

# ArduPilot's custom mode numbers as pymavlink's mode tables have them (the tests check).
_COPTER_MODES = {"AUTO": 3, "GUIDED": 4, "LOITER": 5, "RTL": 6, "LAND": 9, "SMART_RTL": 21}
_ROVER_MODES = {"HOLD": 4, "LOITER": 5, "AUTO": 10, "RTL": 11, "SMART_RTL": 12, "GUIDED": 15}
MODES = {"quadrotor": _COPTER_MODES, "vessel": _ROVER_MODES, "car": _ROVER_MODES}
_MODE_ACTIONS = {"AUTO": "start", "LOITER": "hold", "HOLD": "hold", "RTL": "return",
                 "SMART_RTL": "return", "LAND": "land"}
# The mode that shows an action: the first of these the vehicle's table has (a rover holds
# rather than loiters, and has no LAND).
_ACTION_MODES = {"start": ("AUTO",), "resume": ("AUTO",), "hold": ("HOLD", "LOITER"),
                 "return": ("RTL",), "land": ("LAND", "HOLD")}

_COMMAND_ACTIONS = {mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH: "return",
                    mavlink.MAV_CMD_MISSION_START: "start",
                    mavlink.MAV_CMD_NAV_LOITER_UNLIM: "hold",
                    mavlink.MAV_CMD_NAV_LAND: "land"}
_PAUSE_ACTIONS = {0: "hold", 1: "resume"}  # MAV_CMD_DO_PAUSE_CONTINUE's param1
_REQUEST_COMMANDS = (mavlink.MAV_CMD_REQUEST_MESSAGE,
                     mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES,
                     mavlink.MAV_CMD_GET_HOME_POSITION)  # older forms; MAVProxy asks with this one

CAPABILITIES = (mavlink.MAV_PROTOCOL_CAPABILITY_MISSION_INT
                | mavlink.MAV_PROTOCOL_CAPABILITY_COMMAND_INT
                | mavlink.MAV_PROTOCOL_CAPABILITY_MISSION_FENCE
                | mavlink.MAV_PROTOCOL_CAPABILITY_MAVLINK2)
"""What AUTOPILOT_VERSION announces: QGroundControl downloads a fence only from a vehicle
with MISSION_FENCE."""

_ESTIMATE_SENSORS = mavlink.MAV_SYS_STATUS_SENSOR_GPS | mavlink.MAV_SYS_STATUS_AHRS
_UINT16_MAX = 0xFFFF
_EMPTY_LISTS = (mavlink.MAV_MISSION_TYPE_MISSION, mavlink.MAV_MISSION_TYPE_RALLY)
_BAD_PACKETS = ("mavlink_bad_crc", "mavlink_garbage", "mavlink_bad_packet", "mavlink_truncated")


@dataclass(frozen=True)
class FenceItem:
    """One fence item as a MISSION_ITEM_INT carries it (frame MAV_FRAME_GLOBAL)."""

    command: int  # MAV_CMD_NAV_FENCE_POLYGON_VERTEX_* or MAV_CMD_NAV_FENCE_CIRCLE_*
    param1: float  # polygon: its vertex count; circle: its radius, m
    param2: float  # inclusion group (inclusions only; 0 for exclusions)
    lat_deg: float
    lon_deg: float


@dataclass(frozen=True)
class Order:
    """An order a ground station gave, for the vehicle's mission manager."""

    action: str  # start | hold | resume | return | land
    source: str  # "mavlink <system>/<component>" of the sender
    via: str  # the MAVLink command or message that carried it


@dataclass
class Handled:
    """What one received datagram led to."""

    replies: list[bytes] = field(default_factory=list)  # packets for its sender
    orders: list[Order] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (counter, message)


@dataclass(frozen=True)
class _GuardStatus:
    inside: bool
    failsafe: str
    received_s: float


class _Outbox(list):
    """Where pymavlink writes the packets it encodes: one packet, one datagram."""

    def write(self, packet: bytes) -> None:
        self.append(bytes(packet))

    def take(self) -> list[bytes]:
        packets = list(self)
        self.clear()
        return packets


def fence_items(fence: Geofence, origin: Origin) -> tuple[list[FenceItem], list[str]]:
    """The fence as MAVLink fence items, and notes on what they cannot say.

    fleetbus allows the union of its inclusion zones while MAVLink requires every zone of
    one inclusion group, so each inclusion zone is a group of its own. A hole in an inclusion
    polygon becomes an exclusion polygon; a hole in an exclusion polygon, zone priorities and
    altitude bands have no MAVLink form."""
    items: list[FenceItem] = []
    notes: list[str] = []
    group = 0
    for zone in fence.zones:
        group += zone.inclusion
        zone_group = group if zone.inclusion else 0
        if zone.circle is not None:
            cx, cy, radius = zone.circle
            command = (mavlink.MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION if zone.inclusion
                       else mavlink.MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION)
            items.append(FenceItem(command, radius, zone_group,
                                   *geodetic((cx, cy, 0.0), origin)[:2]))
        else:
            items += _polygon(zone.shape.exterior.coords, zone.inclusion, zone_group, origin)
            holes = [hole.coords for hole in zone.shape.interiors]
            if zone.inclusion:
                for hole in holes:
                    items += _polygon(hole, False, 0, origin)
            elif holes:
                notes.append(f"zone {zone.zone_id!r}: the holes of an exclusion zone have no "
                             f"MAVLink fence form; left out")
        if zone.has_band:
            notes.append(f"zone {zone.zone_id!r}: its altitude band ({zone.floor_m} to "
                         f"{zone.ceiling_m} m) has no MAVLink fence form; left out")
    return items, notes


def _polygon(ring: Sequence[Sequence[float]], inclusion: bool, group: int,
             origin: Origin) -> list[FenceItem]:
    vertices = list(ring)[:-1]  # shapely closes its rings
    command = (mavlink.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION if inclusion
               else mavlink.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION)
    return [FenceItem(command, len(vertices), group, *geodetic((x, y, 0.0), origin)[:2])
            for x, y in vertices]


class GcsFace:
    """The MAVLink side of one vehicle (system `system_id`, component AUTOPILOT1).

    Feed it with `set_fence`, `update_estimate` and `update_guard`; send what `status`
    (at about 1 Hz) and `telemetry` (at the telemetry rate) return to the ground station,
    and what `handle_datagram` returns to the datagram's sender. Times are seconds on
    the caller's clock; `start_s` is the boot time MAVLink's time_boot_ms counts from.
    """

    def __init__(self, vehicle_type: str, system_id: int = 1,
                 origin: Origin = (0.0, 0.0, 0.0), stale_after_s: float = 1.0,
                 start_s: float = 0.0) -> None:
        if vehicle_type not in VEHICLE_TYPES:
            raise ValueError(f"unknown vehicle type {vehicle_type!r} (known: "
                             f"{', '.join(VEHICLE_TYPES)})")
        if not 1 <= system_id <= 255:
            raise ValueError(f"MAVLink system id {system_id} is not in 1..255")
        self.kind = vehicle_type
        self.system_id = system_id
        self.configured_origin = origin
        self.origin = origin
        self.stale_after_s = stale_after_s
        self.start_s = start_s
        self.counters: Counter[str] = Counter()  # problems, by counter name
        self.ignored: Counter[str] = Counter()  # valid messages not acted on, by type
        self.estimate: Estimate | None = None
        self.estimate_s: float | None = None  # when the estimate arrived
        self.home: Vec3 | None = None  # ENU, m: the first estimated position
        self.guard: _GuardStatus | None = None
        self.fence_known = False
        self.fence: list[FenceItem] = []  # the fence as served
        self.order: str | None = None  # the last action ordered
        self._download: list[FenceItem] | None = None  # the fence a download is reading
        self._outbox = _Outbox()
        self.mav = mavlink.MAVLink(self._outbox, system_id, COMPONENT_ID)
        self._modes = MODES[vehicle_type]
        self._mode_names = {number: name for name, number in self._modes.items()}
        self._handlers: dict[str, Callable[[Message, Handled, float], None]] = {
            "COMMAND_LONG": self._on_command, "COMMAND_INT": self._on_command,
            "SET_MODE": self._on_set_mode,
            "MISSION_REQUEST_LIST": self._on_mission_list,
            "MISSION_REQUEST_INT": self._on_mission_request,
            "MISSION_REQUEST": self._on_mission_request,
            "MISSION_ACK": self._on_mission_ack,
            "MISSION_COUNT": self._on_upload, "MISSION_CLEAR_ALL": self._on_upload,
            "PARAM_REQUEST_READ": self._on_param, "PARAM_SET": self._on_param,
        }

    # -- inputs -------------------------------------------------------------------------

    def set_fence(self, fence: Geofence) -> list[str]:
        """Serve `fence` from now on (a download in progress keeps the fence it started
        with). Its origin becomes the frame's origin unless it has none (all zeros, what
        a fence message without one carries). Returns what MAVLink cannot carry of it."""
        has_origin = fence.origin is not None and any(fence.origin)
        self.origin = tuple(fence.origin) if has_origin else self.configured_origin
        self.fence, notes = fence_items(fence, self.origin)
        self.fence_known = True
        return notes

    def update_estimate(self, estimate: Estimate, now_s: float) -> None:
        """A new (finite) estimate of the vehicle; its first position becomes home."""
        self.estimate, self.estimate_s = estimate, now_s
        if self.home is None:
            self.home = tuple(float(v) for v in estimate.position)

    def update_guard(self, inside: bool, failsafe: str, now_s: float) -> None:
        """The geofence guard's latest verdict on the vehicle."""
        self.guard = _GuardStatus(inside, failsafe, now_s)

    # -- what the state looks like ------------------------------------------------------

    def fresh(self, now_s: float) -> bool:
        """Whether an estimate arrived within `stale_after_s`: only then is it shown."""
        return self.estimate_s is not None and now_s - self.estimate_s <= self.stale_after_s

    def system_status(self, now_s: float) -> int:
        """MAV_STATE: STANDBY before any estimate, CRITICAL when it went stale or the guard
        (while it reports) sees a breach or runs a failsafe, else ACTIVE."""
        if self.estimate_s is None:
            return mavlink.MAV_STATE_STANDBY
        guard = self._fresh_guard(now_s)
        alarm = guard is not None and (not guard.inside or guard.failsafe != "none")
        if alarm or not self.fresh(now_s):
            return mavlink.MAV_STATE_CRITICAL
        return mavlink.MAV_STATE_ACTIVE

    def custom_mode(self, now_s: float) -> int:
        """The mode number: the guard's failsafe while one holds, else the last order."""
        guard = self._fresh_guard(now_s)
        action = (guard.failsafe if guard is not None and guard.failsafe in _ACTION_MODES
                  else self.order)
        names = _ACTION_MODES.get(action, ("GUIDED",))
        return next(self._modes[name] for name in names if name in self._modes)

    def _fresh_guard(self, now_s: float) -> _GuardStatus | None:
        guard = self.guard
        if guard is None or now_s - guard.received_s > self.stale_after_s:
            return None
        return guard

    # -- outputs ------------------------------------------------------------------------

    def status(self, now_s: float) -> list[bytes]:
        """HEARTBEAT, SYS_STATUS and, once known, HOME_POSITION."""
        fresh = self.fresh(now_s)
        base_mode = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (
            mavlink.MAV_MODE_FLAG_SAFETY_ARMED if fresh else 0)
        self.mav.heartbeat_send(VEHICLE_TYPES[self.kind], mavlink.MAV_AUTOPILOT_GENERIC,
                                base_mode, self.custom_mode(now_s), self.system_status(now_s))
        self._send_sys_status(now_s, fresh)
        if self.home is not None:
            self._send_home(now_s)
        return self._outbox.take()

    def telemetry(self, now_s: float) -> list[bytes]:
        """GLOBAL_POSITION_INT and ATTITUDE of a fresh estimate; nothing when it is stale."""
        est = self.estimate
        if est is None or not self.fresh(now_s):  # fresh: home is known too
            return []
        position = tuple(float(v) for v in est.position)
        q = tuple(float(v) for v in est.orientation)
        lat, lon, alt = geodetic(position, self.origin)
        velocity = enu_ned(rotate(q, [float(v) for v in est.velocity_body]))
        roll, pitch, yaw = euler_ned(attitude_enu_ned(q))
        boot_ms = self._boot_ms(now_s)
        self.mav.global_position_int_send(
            boot_ms, _e7(lat), _e7(lon), round(alt * 1000),
            round((position[2] - self.home[2]) * 1000), *(_cm_s(v) for v in velocity),
            round(math.degrees(yaw) * 100) % 36000)
        self.mav.attitude_send(boot_ms, roll, pitch, yaw,
                               *flu_frd([float(w) for w in est.angular_body]))
        return self._outbox.take()

    def _send_sys_status(self, now_s: float, fresh: bool) -> None:
        geofence = mavlink.MAV_SYS_STATUS_GEOFENCE
        guard = self._fresh_guard(now_s)
        present = _ESTIMATE_SENSORS | (geofence if self.fence_known or self.guard else 0)
        enabled = _ESTIMATE_SENSORS | (geofence if guard is not None else 0)
        breached = guard is not None and not guard.inside
        health = (_ESTIMATE_SENSORS if fresh else 0) | (0 if breached else geofence)
        errors = min(sum(self.counters[kind] for kind in _BAD_PACKETS), _UINT16_MAX)
        self.mav.sys_status_send(present, enabled, health, 0, _UINT16_MAX, -1, -1, 0, errors,
                                 0, 0, 0, 0)

    def _send_home(self, now_s: float) -> None:
        lat, lon, alt = geodetic(self.home, self.origin)
        self.mav.home_position_send(_e7(lat), _e7(lon), round(alt * 1000), *enu_ned(self.home),
                                    [1.0, 0.0, 0.0, 0.0], 0.0, 0.0, 0.0,
                                    round(max(now_s - self.start_s, 0.0) * 1e6))

    def _send_version(self) -> None:
        zeros = [0] * 8
        self.mav.autopilot_version_send(CAPABILITIES, 0, 0, 0, 0, zeros, zeros, zeros, 0, 0, 0)

    def _boot_ms(self, now_s: float) -> int:
        return round(max(now_s - self.start_s, 0.0) * 1000) % 2**32

    # -- input from the ground station --------------------------------------------------

    def handle_datagram(self, data: bytes, now_s: float) -> Handled:
        """Act on every packet in one datagram: replies for its sender, orders, and the
        problems met (each also counted in `counters`)."""
        handled = Handled()
        parser = mavlink.MAVLink(None)
        parser.robust_parsing = True  # bad data comes back as BAD_DATA, never raised
        for msg in parser.parse_buffer(data) or []:
            if msg.get_type() == "BAD_DATA":
                self._bad_packet(msg, handled)
                continue
            handler = self._handlers.get(msg.get_type())
            if handler is None:
                self.ignored[msg.get_type()] += 1
            elif not self._for_us(msg):
                self.ignored["for another system"] += 1
            else:
                handler(msg, handled, now_s)
        if parser.buf_len():
            self._problem(handled, "mavlink_truncated", "a datagram ended inside a packet")
        handled.replies = self._outbox.take()
        return handled

    def _for_us(self, msg: Message) -> bool:
        return (getattr(msg, "target_system", 0) in (0, self.system_id)
                and getattr(msg, "target_component", 0) in (0, COMPONENT_ID))

    def _bad_packet(self, msg: Message, handled: Handled) -> None:
        reason = str(msg.reason)
        if "CRC" in reason:
            # "invalid MAVLink CRC in msgID N 0x.. should be 0x..": keep the stable part
            text = reason.partition(" 0x")[0]
            self._problem(handled, "mavlink_bad_crc", f"packet dropped: {text}")
        elif reason == "Bad prefix":
            self._problem(handled, "mavlink_garbage",
                          "bytes that are not MAVLink (no start marker) dropped")
        else:
            self._problem(handled, "mavlink_bad_packet", f"packet dropped: {reason}")

    def _problem(self, handled: Handled, kind: str, text: str) -> None:
        self.counters[kind] += 1
        handled.problems.append((kind, text))

    # -- commands -----------------------------------------------------------------------

    def _on_command(self, msg: Message, handled: Handled, now_s: float) -> None:
        name = _enum_name("MAV_CMD", msg.command)
        result, action = self._command_result(msg)
        self.mav.command_ack_send(msg.command, result, 0, 0, msg.get_srcSystem(),
                                  msg.get_srcComponent())
        if action is not None:
            self._order(action, msg, name, handled)
        elif result == mavlink.MAV_RESULT_ACCEPTED:  # a request for a message
            self._send_requested(self._requested(msg), now_s)
        elif result == mavlink.MAV_RESULT_UNSUPPORTED:
            self._problem(handled, "mavlink_unsupported_command",
                          f"{name} from {_source(msg)} is not supported")
        elif result == mavlink.MAV_RESULT_DENIED:  # a pause/continue that is neither
            self._problem(handled, "mavlink_bad_command",
                          f"{name} from {_source(msg)} denied: param1 {msg.param1} is "
                          f"neither 0 (hold) nor 1 (continue)")
        # TEMPORARILY_REJECTED (no home yet) is no fault of the sender's

    def _command_result(self, msg: Message) -> tuple[int, str | None]:
        """The result to acknowledge and the action ordered, if any."""
        command = msg.command
        if command in _COMMAND_ACTIONS:
            return mavlink.MAV_RESULT_ACCEPTED, _COMMAND_ACTIONS[command]
        if command == mavlink.MAV_CMD_DO_PAUSE_CONTINUE:
            action = _PAUSE_ACTIONS.get(msg.param1)
            return (mavlink.MAV_RESULT_ACCEPTED if action else mavlink.MAV_RESULT_DENIED), action
        if command == mavlink.MAV_CMD_DO_SET_MODE:
            action = self._mode_action(msg.param1, msg.param2)
            return (mavlink.MAV_RESULT_ACCEPTED if action else
                    mavlink.MAV_RESULT_UNSUPPORTED), action
        if command in _REQUEST_COMMANDS:
            wanted = self._requested(msg)
            if wanted == mavlink.MAVLINK_MSG_ID_HOME_POSITION and self.home is None:
                return mavlink.MAV_RESULT_TEMPORARILY_REJECTED, None
            served = (mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
                      mavlink.MAVLINK_MSG_ID_HOME_POSITION)
            return (mavlink.MAV_RESULT_ACCEPTED if wanted in served
                    else mavlink.MAV_RESULT_UNSUPPORTED), None
        return mavlink.MAV_RESULT_UNSUPPORTED, None

    @staticmethod
    def _requested(msg: Message) -> int | None:
        """The message id a request command asks for."""
        if msg.command == mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES:
            return mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION if msg.param1 == 1 else None
        if msg.command == mavlink.MAV_CMD_GET_HOME_POSITION:
            return mavlink.MAVLINK_MSG_ID_HOME_POSITION
        return int(msg.param1) if math.isfinite(msg.param1) else None

    def _send_requested(self, message_id: int | None, now_s: float) -> None:
        if message_id == mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION:
            self._send_version()
        else:
            self._send_home(now_s)

    def _mode_action(self, base_mode: float, custom_mode: float) -> str | None:
        """The action a custom mode of ours stands for, or None."""
        if not (math.isfinite(base_mode) and math.isfinite(custom_mode)):
            return None
        if not int(base_mode) & mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
            return None
        return _MODE_ACTIONS.get(self._mode_names.get(int(custom_mode), ""))

    def _on_set_mode(self, msg: Message, handled: Handled, now_s: float) -> None:
        """The SET_MODE message (older than MAV_CMD_DO_SET_MODE); acknowledged, as ArduPilot
        does, with a COMMAND_ACK whose command is SET_MODE's message id."""
        action = self._mode_action(msg.base_mode, msg.custom_mode)
        result = mavlink.MAV_RESULT_ACCEPTED if action else mavlink.MAV_RESULT_UNSUPPORTED
        self.mav.command_ack_send(mavlink.MAVLINK_MSG_ID_SET_MODE, result, 0, 0,
                                  msg.get_srcSystem(), msg.get_srcComponent())
        if action is not None:
            self._order(action, msg, "SET_MODE", handled)
        else:
            self._problem(handled, "mavlink_unsupported_command",
                          f"SET_MODE to custom mode {msg.custom_mode} from {_source(msg)} is "
                          f"not supported (modes: {', '.join(self._supported_modes())})")

    def _supported_modes(self) -> list[str]:
        return [name for name in self._modes if name in _MODE_ACTIONS]

    def _order(self, action: str, msg: Message, via: str, handled: Handled) -> None:
        self.order = action
        handled.orders.append(Order(action, _source(msg), via))

    # -- mission protocol ---------------------------------------------------------------

    def _on_mission_list(self, msg: Message, handled: Handled, now_s: float) -> None:
        if msg.mission_type == mavlink.MAV_MISSION_TYPE_FENCE:
            self._download = list(self.fence)
            count = len(self._download)
        elif msg.mission_type in _EMPTY_LISTS:
            count = 0
        else:
            self._mission_refusal(msg, handled, mavlink.MAV_MISSION_UNSUPPORTED,
                                  "mavlink_bad_request", "a list of an unknown mission type")
            return
        self.mav.mission_count_send(msg.get_srcSystem(), msg.get_srcComponent(), count,
                                    msg.mission_type)

    def _on_mission_request(self, msg: Message, handled: Handled, now_s: float) -> None:
        """MISSION_REQUEST_INT, or the deprecated MISSION_REQUEST, which the mission
        protocol answers with MISSION_ITEM_INT too."""
        items = self._download if self._download is not None else self.fence
        fence = msg.mission_type == mavlink.MAV_MISSION_TYPE_FENCE
        count = len(items) if fence else 0
        if not 0 <= msg.seq < count:
            self._mission_refusal(msg, handled, mavlink.MAV_MISSION_INVALID_SEQUENCE,
                                  "mavlink_bad_request",
                                  f"item {msg.seq} requested of a list of {count}")
            return
        item = items[msg.seq]
        self.mav.mission_item_int_send(
            msg.get_srcSystem(), msg.get_srcComponent(), msg.seq, mavlink.MAV_FRAME_GLOBAL,
            item.command, 0, 0, item.param1, item.param2, 0.0, 0.0, _e7(item.lat_deg),
            _e7(item.lon_deg), 0.0, mavlink.MAV_MISSION_TYPE_FENCE)

    def _on_mission_ack(self, msg: Message, handled: Handled, now_s: float) -> None:
        """The ground station has the fence: the next download reads the current one."""
        if msg.mission_type == mavlink.MAV_MISSION_TYPE_FENCE:
            self._download = None

    def _on_upload(self, msg: Message, handled: Handled, now_s: float) -> None:
        """MISSION_COUNT (an upload) and MISSION_CLEAR_ALL: the mission and the fence are
        set on the bus, so a ground station may read them but not change them."""
        self._mission_refusal(msg, handled, mavlink.MAV_MISSION_DENIED, "mavlink_refused",
                              f"{msg.get_type()} refused: missions and fences are set on "
                              f"the fleetbus bus")
        self.mav.statustext_send(mavlink.MAV_SEVERITY_WARNING,
                                 b"fleetbus: plans are set on the bus, not over MAVLink")

    def _mission_refusal(self, msg: Message, handled: Handled, result: int, kind: str,
                         text: str) -> None:
        self.mav.mission_ack_send(msg.get_srcSystem(), msg.get_srcComponent(), result,
                                  msg.mission_type)
        self._problem(handled, kind, f"{_enum_name('MAV_MISSION_TYPE', msg.mission_type)} "
                                     f"from {_source(msg)}: {text}")

    def _on_param(self, msg: Message, handled: Handled, now_s: float) -> None:
        self.mav.statustext_send(mavlink.MAV_SEVERITY_INFO,
                                 b"fleetbus: this vehicle has no MAVLink parameters")


def _source(msg: Message) -> str:
    return f"mavlink {msg.get_srcSystem()}/{msg.get_srcComponent()}"


def _enum_name(enum: str, value: int) -> str:
    entry = mavlink.enums[enum].get(value)
    return entry.name if entry is not None else f"{enum} {value}"


def _e7(degrees: float) -> int:
    return round(degrees * 1e7)


def _cm_s(speed_mps: float) -> int:
    """A speed in cm/s, clipped to the int16 field that carries it."""
    return max(-32768, min(32767, round(speed_mps * 100)))
