"""The MAVLink ground-station face: what it encodes and decodes (unit tests of GcsFace), and
the node on a real bus with real UDP sockets, watched and commanded by a pymavlink client
directly and through MAVProxy."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pymap3d
import pytest
from pymavlink import mavutil
from pymavlink.dialects.v20 import common as mavlink

from fleetbus.estimation import Estimate
from fleetbus.messages import (
    Event,
    GeofenceStatus,
    Header,
    MissionCommand,
    Odometry,
    Pose,
    Twist,
    Vector3,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages import Quaternion as QuaternionMsg
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.nodes.mavlink_gcs import MavlinkGcs
from fleetbus.planners import Geofence, Zone
from fleetbus.sim_bridge.frames import geodetic, quat_multiply
from fleetbus.sim_bridge.gcs_face import MODES, VEHICLE_TYPES, GcsFace, fence_items
from tests.helpers import run_on, wait_until

ORIGIN = (59.9, 10.7, 50.0)
GCS_SYSTEM, GCS_COMPONENT = 255, 190
FENCE = mavlink.MAV_MISSION_TYPE_FENCE
ACCEPTED = mavlink.MAV_RESULT_ACCEPTED
# roll 10 deg, pitch 5 deg nose down (FLU pitch is positive nose down), heading 30 deg from
# east: in NED/FRD that is roll 10, pitch -5 and yaw 60 deg from north.
ROLL, PITCH, YAW = math.radians(10.0), math.radians(5.0), math.radians(30.0)


def axis_quat(axis: tuple[float, float, float], angle: float) -> tuple:
    s = math.sin(angle / 2)
    return (math.cos(angle / 2), *(s * a for a in axis))


ATTITUDE = quat_multiply(quat_multiply(axis_quat((0, 0, 1), YAW), axis_quat((0, 1, 0), PITCH)),
                         axis_quat((1, 0, 0), ROLL))


def estimate(position=(100.0, 200.0, 30.0), velocity=(5.0, 0.0, 0.0),
             rates=(0.1, 0.2, 0.3)) -> Estimate:
    return Estimate(0.0, np.array(position), np.array(ATTITUDE), np.array(velocity),
                    np.array(rates), np.zeros((6, 6)), np.zeros((6, 6)))


def yard_fence(origin=ORIGIN) -> Geofence:
    """An inclusion square with a hole, an exclusion circle and a second inclusion circle."""
    square = [(-100, -100), (100, -100), (100, 100), (-100, 100)]
    hole = [(-10, -10), (10, -10), (10, 10), (-10, 10)]
    return Geofence([Zone.polygon("yard", square, holes=[hole], action="hold"),
                     Zone.circle_zone("pond", (50.0, 50.0), 8.0, inclusion=False),
                     Zone.circle_zone("annex", (150.0, 0.0), 30.0)], origin)


def decode(packets: list[bytes]) -> list:
    parser = mavlink.MAVLink(None)
    return [msg for packet in packets for msg in parser.parse_buffer(packet) or []]


def one(packets: list[bytes], kind: str):
    found = [m for m in decode(packets) if m.get_type() == kind]
    assert len(found) == 1, f"expected one {kind} in {[m.get_type() for m in decode(packets)]}"
    return found[0]


class Station:
    """What a ground station (255/190) sends to a face, packet by packet."""

    def __init__(self, face: GcsFace) -> None:
        self.face = face
        self.mav = mavlink.MAVLink(None, GCS_SYSTEM, GCS_COMPONENT)

    def send(self, msg, now_s: float = 1.0):
        return self.face.handle_datagram(bytes(msg.pack(self.mav)), now_s)

    def command(self, command: int, *params: float, kind: str = "long", target: int = 1):
        params = [*params, *[0.0] * (7 - len(params))]
        if kind == "long":
            msg = self.mav.command_long_encode(target, 1, command, 0, *params)
        else:
            msg = self.mav.command_int_encode(target, 1, mavlink.MAV_FRAME_GLOBAL, command, 0, 0,
                                              *params[:4], 0, 0, params[6])
        return self.send(msg)


# -- the face: telemetry ------------------------------------------------------------------


def test_a_known_pose_becomes_global_position_and_attitude_in_ned():
    face = GcsFace("quadrotor", origin=ORIGIN)
    face.update_estimate(estimate(), 0.0)
    face.update_estimate(estimate(position=(100.0, 200.0, 40.0)), 0.5)  # 10 m above home
    gpi = one(face.telemetry(1.0), "GLOBAL_POSITION_INT")
    # 200 m north and 100 m east of 59.9 N, 10.7 E, without pymap3d:
    north_deg = math.degrees(200.0 / 6_383_356)  # WGS84 meridian radius at 59.9 deg
    east_deg = math.degrees(100.0 / (6_394_177 * math.cos(math.radians(59.9))))  # normal
    assert gpi.lat == pytest.approx((59.9 + north_deg) * 1e7, abs=20)
    assert gpi.lon == pytest.approx((10.7 + east_deg) * 1e7, abs=20)
    assert gpi.alt == pytest.approx(90_000, abs=10)  # mm MSL: 50 m origin + 40 m up
    assert gpi.relative_alt == 10_000
    assert gpi.hdg == 6000  # 60 deg from north
    # 5 m/s forward, nose 5 deg down, heading 60 deg: north, east and down in cm/s
    assert (gpi.vx, gpi.vy, gpi.vz) == (249, 431, 44)
    att = one(face.telemetry(1.0), "ATTITUDE")
    assert (math.degrees(att.roll), math.degrees(att.pitch), math.degrees(att.yaw)) == (
        pytest.approx(10.0, abs=1e-4), pytest.approx(-5.0, abs=1e-4),
        pytest.approx(60.0, abs=1e-4))
    assert (att.rollspeed, att.pitchspeed, att.yawspeed) == (
        pytest.approx(0.1), pytest.approx(-0.2), pytest.approx(-0.3))


def test_heartbeat_and_sys_status_follow_the_estimate_and_the_guard():
    face = GcsFace("vessel", system_id=7, origin=ORIGIN, stale_after_s=1.0)
    heartbeat = one(face.status(0.0), "HEARTBEAT")
    assert heartbeat.get_srcSystem() == 7 and heartbeat.type == mavlink.MAV_TYPE_SURFACE_BOAT
    assert heartbeat.autopilot == mavlink.MAV_AUTOPILOT_GENERIC
    assert heartbeat.system_status == mavlink.MAV_STATE_STANDBY
    assert face.telemetry(0.0) == []

    face.update_estimate(estimate(), 1.0)
    packets = face.status(1.5)
    heartbeat, sys_status = one(packets, "HEARTBEAT"), one(packets, "SYS_STATUS")
    assert heartbeat.system_status == mavlink.MAV_STATE_ACTIVE
    assert heartbeat.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED
    gps = mavlink.MAV_SYS_STATUS_SENSOR_GPS
    assert sys_status.onboard_control_sensors_health & gps
    assert not sys_status.onboard_control_sensors_present & mavlink.MAV_SYS_STATUS_GEOFENCE
    assert one(packets, "HOME_POSITION").latitude == round(geodetic((100, 200, 30), ORIGIN)[0]
                                                           * 1e7)

    face.update_guard(inside=False, failsafe="return", now_s=1.5)
    packets = face.status(1.6)
    assert one(packets, "HEARTBEAT").system_status == mavlink.MAV_STATE_CRITICAL
    assert one(packets, "HEARTBEAT").custom_mode == MODES["vessel"]["RTL"]
    assert fence_bits(one(packets, "SYS_STATUS")) == (True, True, False)  # breached
    face.update_guard(inside=True, failsafe="none", now_s=1.7)
    assert fence_bits(one(face.status(1.8), "SYS_STATUS")) == (True, True, True)

    # No estimate (nor guard status) for longer than stale_after_s: critical, unhealthy, no
    # position at all, and a fence nobody enforces.
    packets = face.status(3.0)
    assert one(packets, "HEARTBEAT").system_status == mavlink.MAV_STATE_CRITICAL
    assert not one(packets, "HEARTBEAT").base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED
    assert not one(packets, "SYS_STATUS").onboard_control_sensors_health & gps
    assert fence_bits(one(packets, "SYS_STATUS")) == (True, False, True)
    assert face.telemetry(3.0) == []


def fence_bits(sys_status) -> tuple[bool, bool, bool]:
    """The geofence's present, enabled and healthy bits."""
    bit = mavlink.MAV_SYS_STATUS_GEOFENCE
    return tuple(bool(getattr(sys_status, f"onboard_control_sensors_{name}") & bit)
                 for name in ("present", "enabled", "health"))


@pytest.mark.parametrize("kind", sorted(VEHICLE_TYPES))
def test_mode_numbers_are_the_ones_pymavlink_and_mavproxy_use(kind):
    table = mavutil.mode_mapping_byname(VEHICLE_TYPES[kind])
    assert {name: table[name] for name in MODES[kind]} == MODES[kind]
    face = GcsFace(kind)
    assert mavutil.mode_string_v10(one(face.status(0.0), "HEARTBEAT")) == "GUIDED"
    Station(face).command(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH)
    assert mavutil.mode_string_v10(one(face.status(0.0), "HEARTBEAT")) == "RTL"


# -- the face: fence and mission protocol --------------------------------------------------


def test_fence_items_say_what_the_zones_say():
    items, notes = fence_items(yard_fence(), ORIGIN)
    commands = [(i.command, i.param1, i.param2) for i in items]
    include, exclude = (mavlink.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
                        mavlink.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION)
    assert commands == ([(include, 4, 1)] * 4 + [(exclude, 4, 0)] * 4
                        + [(mavlink.MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION, 8.0, 0),
                           (mavlink.MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION, 30.0, 2)])
    corners = {tuple(round(v, 7) for v in geodetic((x, y, 0), ORIGIN)[:2])
               for x in (-100, 100) for y in (-100, 100)}
    assert {(round(i.lat_deg, 7), round(i.lon_deg, 7)) for i in items[:4]} == corners
    assert (items[9].lat_deg, items[9].lon_deg) == geodetic((150, 0, 0), ORIGIN)[:2]
    assert notes == []

    banded = Geofence([Zone.polygon("no-go", [(0, 0), (9, 0), (9, 9)], holes=[
        [(5, 1), (8, 1), (8, 4)]], inclusion=False, floor_m=0.0, ceiling_m=20.0)])
    items, notes = fence_items(banded, ORIGIN)
    assert [i.command for i in items] == [exclude] * 3  # its hole has no MAVLink form
    assert len(notes) == 2 and "hole" in notes[0] and "altitude band" in notes[1]


def test_the_fence_downloads_with_the_mission_protocol():
    face = GcsFace("quadrotor", origin=(0.0, 0.0, 0.0))
    assert face.set_fence(yard_fence()) == []  # its own origin replaces the default
    gcs = Station(face)
    count = one(gcs.send(gcs.mav.mission_request_list_encode(1, 1, FENCE)).replies,
                "MISSION_COUNT")
    assert (count.count, count.mission_type, count.target_system) == (10, FENCE, GCS_SYSTEM)
    face.set_fence(Geofence([Zone.polygon("later", [(0, 0), (5, 0), (5, 5)])], ORIGIN))
    items = []
    for seq in range(count.count):  # the deprecated MISSION_REQUEST gets MISSION_ITEM_INT too
        request = (gcs.mav.mission_request_int_encode if seq % 2 else
                   gcs.mav.mission_request_encode)(1, 1, seq, FENCE)
        items.append(one(gcs.send(request).replies, "MISSION_ITEM_INT"))
    expected, _ = fence_items(yard_fence(), ORIGIN)  # the download kept the fence it began
    assert [(m.seq, m.command, m.param1, m.x, m.y) for m in items] == [
        (k, e.command, e.param1, round(e.lat_deg * 1e7), round(e.lon_deg * 1e7))
        for k, e in enumerate(expected)]
    assert {(m.frame, m.mission_type) for m in items} == {(mavlink.MAV_FRAME_GLOBAL, FENCE)}
    assert gcs.send(gcs.mav.mission_ack_encode(1, 1, ACCEPTED, FENCE)).replies == []
    # The next download reads the fence as it is now; a request past its end is refused.
    assert one(gcs.send(gcs.mav.mission_request_list_encode(1, 1, FENCE)).replies,
               "MISSION_COUNT").count == 3
    handled = gcs.send(gcs.mav.mission_request_int_encode(1, 1, 3, FENCE))
    assert one(handled.replies, "MISSION_ACK").type == mavlink.MAV_MISSION_INVALID_SEQUENCE
    assert face.counters["mavlink_bad_request"] == 1


def test_missions_are_empty_and_uploads_are_refused():
    face = GcsFace("car")
    gcs = Station(face)
    for mission_type in (mavlink.MAV_MISSION_TYPE_MISSION, mavlink.MAV_MISSION_TYPE_RALLY):
        count = one(gcs.send(gcs.mav.mission_request_list_encode(1, 1, mission_type)).replies,
                    "MISSION_COUNT")
        assert (count.count, count.mission_type) == (0, mission_type)
    handled = gcs.send(gcs.mav.mission_count_encode(1, 1, 3, mavlink.MAV_MISSION_TYPE_MISSION))
    assert one(handled.replies, "MISSION_ACK").type == mavlink.MAV_MISSION_DENIED
    assert b"on the bus" in one(handled.replies, "STATUSTEXT").text.encode()
    assert handled.problems[0][0] == "mavlink_refused" and handled.orders == []


def test_no_parameters_and_the_requested_messages():
    face = GcsFace("quadrotor", origin=ORIGIN)
    gcs = Station(face)
    assert gcs.send(gcs.mav.param_request_list_encode(1, 0)).replies == []  # no parameters
    assert one(gcs.send(gcs.mav.param_request_read_encode(1, 1, b"FENCE_ENABLE", -1)).replies,
               "STATUSTEXT").text.startswith("fleetbus: this vehicle has no")
    request = mavlink.MAV_CMD_REQUEST_MESSAGE
    handled = gcs.command(request, mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION)
    assert [m.get_type() for m in decode(handled.replies)] == ["COMMAND_ACK", "AUTOPILOT_VERSION"]
    assert decode(handled.replies)[1].capabilities & mavlink.MAV_PROTOCOL_CAPABILITY_MISSION_FENCE
    no_home = one(gcs.command(request, mavlink.MAVLINK_MSG_ID_HOME_POSITION).replies,
                  "COMMAND_ACK")
    assert no_home.result == mavlink.MAV_RESULT_TEMPORARILY_REJECTED
    assert not face.counters  # asking early is no fault
    face.update_estimate(estimate(), 0.0)
    assert one(gcs.command(request, mavlink.MAVLINK_MSG_ID_HOME_POSITION).replies,
               "HOME_POSITION").altitude == pytest.approx(80_000, abs=10)
    assert one(gcs.command(mavlink.MAV_CMD_GET_HOME_POSITION).replies,  # MAVProxy's way
               "HOME_POSITION").altitude == pytest.approx(80_000, abs=10)


# -- the face: commands and bad input ------------------------------------------------------

COMMANDS = [
    (mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, (), "return"),
    (mavlink.MAV_CMD_MISSION_START, (), "start"),
    (mavlink.MAV_CMD_DO_PAUSE_CONTINUE, (0,), "hold"),
    (mavlink.MAV_CMD_DO_PAUSE_CONTINUE, (1,), "resume"),
    (mavlink.MAV_CMD_NAV_LOITER_UNLIM, (), "hold"),
    (mavlink.MAV_CMD_NAV_LAND, (), "land"),
    (mavlink.MAV_CMD_DO_SET_MODE, (mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, 6), "return"),
    (mavlink.MAV_CMD_DO_SET_MODE, (mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, 3), "start"),
]


@pytest.mark.parametrize("kind", ["long", "int"])
@pytest.mark.parametrize("command, params, action", COMMANDS)
def test_commands_become_orders_and_are_acknowledged(command, params, action, kind):
    face = GcsFace("quadrotor")
    handled = Station(face).command(command, *params, kind=kind)
    ack = one(handled.replies, "COMMAND_ACK")
    assert (ack.command, ack.result, ack.target_system, ack.target_component) == (
        command, ACCEPTED, GCS_SYSTEM, GCS_COMPONENT)
    assert [(o.action, o.source) for o in handled.orders] == [(action, "mavlink 255/190")]
    assert handled.orders[0].via == mavlink.enums["MAV_CMD"][command].name
    assert handled.problems == []


def test_set_mode_message_uses_the_rover_table_for_cars():
    face = GcsFace("car")
    gcs = Station(face)
    hold = MODES["car"]["HOLD"]
    handled = gcs.send(gcs.mav.set_mode_encode(1, mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
                                               hold))
    ack = one(handled.replies, "COMMAND_ACK")
    assert (ack.command, ack.result) == (mavlink.MAVLINK_MSG_ID_SET_MODE, ACCEPTED)
    assert [o.action for o in handled.orders] == ["hold"]
    assert one(face.status(0.0), "HEARTBEAT").custom_mode == hold
    guided = gcs.send(gcs.mav.set_mode_encode(1, mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
                                              MODES["car"]["GUIDED"]))
    assert one(guided.replies, "COMMAND_ACK").result == mavlink.MAV_RESULT_UNSUPPORTED
    assert "AUTO" in guided.problems[0][1]  # the refusal lists the modes that work


def test_unknown_bad_and_foreign_commands_are_refused_or_ignored():
    face = GcsFace("quadrotor", system_id=3)
    gcs = Station(face)
    unknown = gcs.command(mavlink.MAV_CMD_DO_SET_SERVO, 1, 1500, target=3)
    assert one(unknown.replies, "COMMAND_ACK").result == mavlink.MAV_RESULT_UNSUPPORTED
    assert unknown.orders == [] and face.counters["mavlink_unsupported_command"] == 1
    bad = gcs.command(mavlink.MAV_CMD_DO_PAUSE_CONTINUE, 2, target=3)
    assert one(bad.replies, "COMMAND_ACK").result == mavlink.MAV_RESULT_DENIED
    assert bad.orders == [] and face.counters["mavlink_bad_command"] == 1
    nan_mode = gcs.command(mavlink.MAV_CMD_DO_SET_MODE, 1, math.nan, target=3)
    assert one(nan_mode.replies, "COMMAND_ACK").result == mavlink.MAV_RESULT_UNSUPPORTED
    # Another vehicle's command is none of ours: no answer, no order, no complaint.
    foreign = gcs.command(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, target=4)
    assert (foreign.replies, foreign.orders, foreign.problems) == ([], [], [])
    assert face.ignored["for another system"] == 1
    broadcast = gcs.command(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, target=0)
    assert [o.action for o in broadcast.orders] == ["return"]


def test_garbage_bad_crc_and_truncated_datagrams_are_counted_and_survived():
    face = GcsFace("quadrotor")
    gcs = Station(face)
    rtl = bytes(gcs.mav.command_long_encode(1, 1, mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, 0,
                                            0, 0, 0, 0, 0, 0, 0).pack(gcs.mav))
    bad_crc = rtl[:-1] + bytes([rtl[-1] ^ 0xFF])
    cases = [(b"not mavlink at all", "mavlink_garbage"),
             (bad_crc, "mavlink_bad_crc"),
             (rtl[:15], "mavlink_truncated"),
             (b"\xfd\x01", "mavlink_truncated")]
    for data, counter in cases:
        handled = face.handle_datagram(data, 0.0)
        assert handled.orders == [] and handled.replies == []
        assert handled.problems and handled.problems[0][0] == counter
    assert face.counters == {"mavlink_garbage": 1, "mavlink_bad_crc": 1,
                             "mavlink_truncated": 2}
    assert "msgID 76" in face.handle_datagram(bad_crc, 0.0).problems[0][1]  # COMMAND_LONG
    # Garbage before a good packet in one datagram costs the garbage only.
    handled = face.handle_datagram(b"\x00\x01junk" + rtl, 0.0)
    assert [o.action for o in handled.orders] == ["return"]
    assert one(face.status(0.0), "SYS_STATUS").errors_comm == 6


def test_bad_face_settings_fail_by_name():
    with pytest.raises(ValueError, match="blimp"):
        GcsFace("blimp")
    with pytest.raises(ValueError, match="system id 0"):
        GcsFace("car", system_id=0)


# -- the node on a bus, with real UDP sockets -----------------------------------------------


def odometry(node) -> Odometry:
    w, x, y, z = ATTITUDE
    return Odometry(header=Header(stamp_ns=node.now_ns(), frame_id="map"),
                    pose=Pose(position=Vector3(x=100.0, y=200.0, z=30.0),
                              orientation=QuaternionMsg(w=w, x=x, y=y, z=z)),
                    twist=Twist(linear=Vector3(x=5.0)))


def operator(node) -> None:
    """Publishes the vehicle's estimate (while `live`), its guard status and the fence, and
    records the orders and events that come back."""
    node.live = True
    node.orders, node.events = [], []
    node.fence = node.publisher("/geofence", GeofenceMsg, latched=True)
    odom = node.publisher("/drone1/odometry", Odometry)
    status = node.publisher("/drone1/geofence_status", GeofenceStatus)
    node.links = [odom, status,
                  node.subscribe("/drone1/mission_command", MissionCommand, node.orders.append),
                  node.subscribe("/events", Event, node.events.append)]

    def tick() -> None:
        if node.live:
            odom.publish(odometry(node))
            status.publish(GeofenceStatus(header=Header(stamp_ns=node.now_ns()),
                                          vehicle_id="drone1", inside=True))
    node.timer(0.05, tick)


def linked(op) -> bool:
    odom, status, orders, events = op.links
    return (odom.subscribers >= 1 and status.subscribers >= 1 and orders.publishers >= 1
            and events.publishers >= 1)


def client() -> mavutil.mavfile:
    """A ground station listening on a free port of 127.0.0.1."""
    return mavutil.mavlink_connection("udpin:127.0.0.1:0", source_system=GCS_SYSTEM,
                                      source_component=GCS_COMPONENT)


def start_gcs(bus, gcs_port: int, **params) -> MavlinkGcs:
    settings = {"vehicle_id": "drone1", "vehicle_type": "quadrotor", "gcs_port": gcs_port,
                "origin_lat_deg": ORIGIN[0], "origin_lon_deg": ORIGIN[1],
                "origin_alt_m": ORIGIN[2], **params}
    return bus.start(MavlinkGcs("gcs", params=settings))


def receive(conn, kind, where=lambda msg: True, timeout: float = 30.0):
    """The next `kind` message from the vehicle (system 1) for which `where` holds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = conn.recv_match(type=kind, blocking=True, timeout=left)
        if msg is not None and msg.get_srcSystem() == 1 and where(msg):
            return msg
    raise AssertionError(f"no {kind} from system 1 in {timeout} s")


def download_fence(conn) -> list:
    conn.mav.mission_request_list_send(1, 1, FENCE)
    count = receive(conn, "MISSION_COUNT", lambda m: m.mission_type == FENCE).count
    items = []
    for seq in range(count):
        conn.mav.mission_request_int_send(1, 1, seq, FENCE)
        items.append(receive(conn, "MISSION_ITEM_INT", lambda m, s=seq: m.seq == s))
    conn.mav.mission_ack_send(1, 1, ACCEPTED, FENCE)
    return items


def command(conn, cmd: int, *params: float, result: int = ACCEPTED) -> None:
    conn.mav.command_long_send(1, 1, cmd, 0, *params, *[0.0] * (7 - len(params)))
    ack = receive(conn, "COMMAND_ACK", lambda m: m.command == cmd)
    assert ack.result == result


def test_a_ground_station_watches_downloads_the_fence_and_commands(bus):
    conn = client()
    bus.closers.append(conn.close)
    gcs = start_gcs(bus, conn.port.getsockname()[1], telemetry_hz=20.0)
    op = bus.node("op", operator)
    wait_until(lambda: linked(op), what="the operator's links with the face")
    run_on(op, lambda: op.fence.publish(fence_to_msg(yard_fence())))

    heartbeat = receive(conn, "HEARTBEAT",
                        lambda m: m.system_status == mavlink.MAV_STATE_ACTIVE)
    assert (heartbeat.type, heartbeat.autopilot) == (mavlink.MAV_TYPE_QUADROTOR,
                                                     mavlink.MAV_AUTOPILOT_GENERIC)
    gpi = receive(conn, "GLOBAL_POSITION_INT")
    lat, lon, _ = pymap3d.enu2geodetic(100.0, 200.0, 30.0, *ORIGIN)
    assert (gpi.lat, gpi.lon, gpi.hdg) == (pytest.approx(lat * 1e7, abs=2),
                                           pytest.approx(lon * 1e7, abs=2), 6000)
    attitude = receive(conn, "ATTITUDE")
    assert math.degrees(attitude.pitch) == pytest.approx(-5.0, abs=1e-3)
    geofence = mavlink.MAV_SYS_STATUS_GEOFENCE  # enabled: the guard's status came through
    receive(conn, "SYS_STATUS", lambda m: m.onboard_control_sensors_enabled & geofence)

    items = download_fence(conn)
    expected, _ = fence_items(yard_fence(), ORIGIN)
    assert [(m.command, m.param1, m.x, m.y) for m in items] == [
        (e.command, e.param1, round(e.lat_deg * 1e7), round(e.lon_deg * 1e7)) for e in expected]

    wait_until(lambda: gcs.orders.subscribers >= 1, what="the operator's order subscription")
    command(conn, mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH)
    conn.mav.command_int_send(1, 1, mavlink.MAV_FRAME_GLOBAL, mavlink.MAV_CMD_DO_PAUSE_CONTINUE,
                              0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert receive(conn, "COMMAND_ACK", lambda m: m.command == mavlink.MAV_CMD_DO_PAUSE_CONTINUE
                   ).result == ACCEPTED
    command(conn, mavlink.MAV_CMD_MISSION_START)
    command(conn, mavlink.MAV_CMD_DO_SET_MODE, mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
            MODES["quadrotor"]["LAND"])
    command(conn, mavlink.MAV_CMD_DO_SET_SERVO, 1, 1500, result=mavlink.MAV_RESULT_UNSUPPORTED)

    wait_until(lambda: len(op.orders) == 4, what="four orders on the bus")
    assert [(o.vehicle_id, o.action, o.source) for o in op.orders] == [
        ("drone1", action, "mavlink 255/190") for action in ("return", "hold", "start", "land")]
    wait_until(lambda: len([e for e in op.events if e.kind == "gcs_command"]) == 4,
               what="an event per order")
    event = next(e for e in op.events if e.kind == "gcs_command")
    assert event.source == "/gcs" and event.data["command"] == "MAV_CMD_NAV_RETURN_TO_LAUNCH"
    assert gcs.counters["mavlink_unsupported_command"] == 1
    receive(conn, "HEARTBEAT", lambda m: m.custom_mode == MODES["quadrotor"]["LAND"])

    # Garbage and a corrupted packet straight at the vehicle's port: counted, survived.
    rtl = conn.mav.command_long_encode(1, 1, mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, 0,
                                       0, 0, 0, 0, 0, 0, 0).pack(conn.mav)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"\x00garbage", gcs.sock.getsockname())
        raw.sendto(bytes(rtl[:-1]) + bytes([rtl[-1] ^ 0xFF]), gcs.sock.getsockname())
    wait_until(lambda: gcs.counters["mavlink_garbage"] == 1
               and gcs.counters["mavlink_bad_crc"] == 1, what="the bad datagrams counted")
    command(conn, mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH)
    wait_until(lambda: len(op.orders) == 5, what="the node still taking orders")


def test_a_stale_estimate_shows_in_the_heartbeat_and_stops_the_position(bus):
    conn = client()
    bus.closers.append(conn.close)
    start_gcs(bus, conn.port.getsockname()[1], stale_after_s=0.5, heartbeat_hz=5.0)
    op = bus.node("op", operator)
    wait_until(lambda: linked(op), what="the operator's links with the face")
    receive(conn, "HEARTBEAT", lambda m: m.system_status == mavlink.MAV_STATE_ACTIVE)
    receive(conn, "GLOBAL_POSITION_INT")
    op.live = False
    receive(conn, "HEARTBEAT", lambda m: m.system_status == mavlink.MAV_STATE_CRITICAL)
    # From then on (datagrams on loopback keep their order): heartbeats, no positions.
    seen = []
    while seen.count("HEARTBEAT") < 3:
        msg = receive(conn, ["HEARTBEAT", "SYS_STATUS", "GLOBAL_POSITION_INT", "ATTITUDE"])
        seen.append(msg.get_type())
        if msg.get_type() == "SYS_STATUS":
            assert not msg.onboard_control_sensors_health & mavlink.MAV_SYS_STATUS_SENSOR_GPS
    assert "GLOBAL_POSITION_INT" not in seen and "ATTITUDE" not in seen


@pytest.mark.parametrize("params, match", [
    ({"vehicle_id": "x", "vehicle_type": "blimp"}, "vehicle_type"),
    ({"vehicle_id": "x", "vehicle_type": "car", "system_id": 0}, "system id"),
    ({"vehicle_id": "x", "vehicle_type": "car", "bind_host": "192.0.2.1"}, "cannot bind"),
])
def test_bad_node_configurations_fail_setup_by_name(bus, params, match):
    node = MavlinkGcs("bad", params=params)
    bus.start(node, check=False)
    assert node.setup_error is not None and match in str(node.setup_error)


# -- through MAVProxy -------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_ground_station_behind_mavproxy_watches_and_commands(bus, tmp_path: Path):
    mavproxy = Path(sys.executable).parent / "mavproxy.py"
    if not mavproxy.exists():
        pytest.skip(f"MAVProxy is not installed next to {sys.executable}")
    conn = client()
    bus.closers.append(conn.close)
    master = free_udp_port()
    log = tmp_path / "mavproxy.log"
    env = {k: v for k, v in os.environ.items() if k != "MAVLINK_DIALECT"}  # set by mavutil
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(mavproxy), f"--master=udpin:127.0.0.1:{master}",
             f"--out=udp:127.0.0.1:{conn.port.getsockname()[1]}", "--daemon",
             "--non-interactive", f"--state-basedir={tmp_path}"],
            cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        start_gcs(bus, master)
        op = bus.node("op", operator)
        wait_until(lambda: linked(op), what="the operator's links with the face")
        first_heartbeat_through(conn, proc, log)
        gpi = receive(conn, "GLOBAL_POSITION_INT")
        assert gpi.hdg == 6000
        command(conn, mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH)
        wait_until(lambda: any(o.source == "mavlink 255/190" and o.action == "return"
                               for o in op.orders), what="the order through MAVProxy")
    finally:
        stop(proc)
        print(log.read_text(errors="replace")[-3000:])


def first_heartbeat_through(conn, proc: subprocess.Popen, log: Path,
                            timeout: float = 60.0) -> None:
    """Wait for the vehicle's ACTIVE heartbeat through MAVProxy; skip the test if MAVProxy
    exits before it forwarded one (it cannot run here), fail if it runs but forwards none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"MAVProxy cannot start here (exit {proc.returncode}): "
                        f"{log.read_text(errors='replace')[-2000:]}")
        msg = conn.recv_match(type="HEARTBEAT", blocking=True, timeout=0.5)
        if (msg is not None and msg.get_srcSystem() == 1
                and msg.system_status == mavlink.MAV_STATE_ACTIVE):
            return
    raise AssertionError(f"no heartbeat of the vehicle through MAVProxy in {timeout} s")
