"""PX4 simulator protocol conformance: pymavlink plays the autopilot over a real TCP socket
(and a pseudo-terminal for the serial transport) against fleetbus's simulator."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymavlink.dialects.v20 import common as mavlink

from fleetbus.sim_bridge.frames import euler_ned
from fleetbus.sim_bridge.hil_body import HilBody
from fleetbus.sim_bridge.px4 import (
    Px4Link,
    Px4Settings,
    Px4Simulator,
    SerialLink,
    TcpServer,
    Transport,
)
from fleetbus.sim_bridge.px4_sensors import (
    ACCEL,
    BARO,
    GYRO,
    MAG,
    Px4SensorSettings,
    SensorNoise,
    isa_pressure_hpa,
)
from tests.helpers import wait_until

DT_US = 4000
QUIET = Px4SensorSettings(noise=SensorNoise.quiet(), utc_start_us=1_700_000_000_000_000)
FIELD = QUIET.magnetic_field_ned_gauss
G = 9.81
# A HIL_ACTUATOR_CONTROLS as PX4 sends it: t = 8000 us, lockstep flag, motors 0.5, armed
# custom mode (mode 129), from system 1 component 1; MAVLink 2, sequence 0.
GOLDEN_ACTUATORS = bytes.fromhex(
    "fd5100000001015d0000"  # MAVLink 2, 81-byte payload, seq 0, 1/1, message 93
    "401f0000000000000100000000000000"  # time_usec 8000, flags 1
    + "0000003f" * 4 + "00000000" * 12  # controls
    + "81"  # mode
    + "d5a2")  # checksum with CRC_EXTRA 47


class Autopilot:
    """pymavlink on the autopilot's side of a byte stream."""

    def __init__(self, read: Any, write: Any) -> None:
        self._read, self._write = read, write
        self.mav = mavlink.MAVLink(None, 1, 1)
        self.inbox: list[Any] = []

    def send(self, msg: Any) -> None:
        self._write(msg.pack(self.mav))

    def heartbeat(self) -> None:
        self.send(self.mav.heartbeat_encode(mavlink.MAV_TYPE_QUADROTOR,
                                            mavlink.MAV_AUTOPILOT_PX4, 1, 0, 3))

    def actuators(self, time_usec: int, motors: list[float], flags: int = 1) -> None:
        self.send(self.mav.hil_actuator_controls_encode(time_usec, motors + [0.0] * 12, 129,
                                                        flags))

    def next(self, kind: str, timeout: float = 10.0) -> Any:
        """The next message of a kind; the others stay in the inbox."""
        def found() -> Any:
            for i, msg in enumerate(self.inbox):
                if msg.get_type() == kind:
                    return self.inbox.pop(i)
            self.inbox += self.mav.parse_buffer(self._read()) or []
            return None
        return wait_until(found, timeout, f"a {kind}", interval=0)

    def drain(self, kind: str) -> list[Any]:
        taken = [m for m in self.inbox if m.get_type() == kind]
        self.inbox = [m for m in self.inbox if m.get_type() != kind]
        return taken


@dataclass
class Rig:
    link: Px4Link
    sim: Px4Simulator
    port: int
    autopilots: list[Autopilot] = field(default_factory=list)

    def connect(self) -> Autopilot:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.05)

        def read() -> bytes:
            try:
                return sock.recv(65536)
            except TimeoutError:
                return b""
        ap = Autopilot(read, sock.sendall)
        ap.sock = sock  # type: ignore[attr-defined]
        self.autopilots.append(ap)
        return ap


def start(transport: Transport, settings: Px4Settings, start_pose: dict | None = None
          ) -> tuple[Px4Link, Px4Simulator, threading.Event, threading.Thread]:
    link = Px4Link(HilBody("multirotor", start=start_pose), settings)
    sim = Px4Simulator(link, transport)
    stop = threading.Event()
    thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)
    thread.start()
    return link, sim, stop, thread


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    settings = getattr(request, "param", Px4Settings(sensors=QUIET))
    server = TcpServer("127.0.0.1", 0)
    link, sim, stop, thread = start(server, settings)
    rig = Rig(link, sim, server.port)
    yield rig
    stop.set()
    thread.join(10)
    for ap in rig.autopilots:
        ap.sock.close()  # type: ignore[attr-defined]
    assert not thread.is_alive()


def lockstep(ap: Autopilot, steps: int, motors: list[float]) -> list[Any]:
    """Answer `steps` HIL_SENSORs as a lockstep autopilot; returns the sensors received."""
    sensor = ap.next("HIL_SENSOR")
    received = []
    for _ in range(steps):
        ap.actuators(sensor.time_usec, motors)
        sensor = ap.next("HIL_SENSOR")
        received.append(sensor)
    return received


def test_golden_actuator_packet_is_what_pymavlink_sends() -> None:
    mav = mavlink.MAVLink(None, 1, 1)
    packed = mav.hil_actuator_controls_encode(8000, [0.5] * 4 + [0.0] * 12, 129, 1).pack(mav)
    assert packed == GOLDEN_ACTUATORS
    assert packed[0] == 0xFD and packed[7:10] == bytes([93, 0, 0])  # MAVLink 2, id 93


def test_sensors_start_on_heartbeat_and_free_run(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    first = [ap.next("HIL_SENSOR") for _ in range(20)]
    times = [s.time_usec for s in first]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert all(t % DT_US == 0 for t in times)
    assert rig.link.lockstep is False
    assert rig.sim.counters["connections"] == 1


def test_lockstep_over_thousands_of_steps(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    ap.send(ap.mav.command_long_encode(1, 200, mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 0,
                                       mavlink.MAVLINK_MSG_ID_HIL_STATE_QUATERNION, 20000,
                                       0, 0, 0, 0, 0))
    ack = ap.next("COMMAND_ACK")
    assert ack.result == mavlink.MAV_RESULT_ACCEPTED
    sensors = lockstep(ap, 3000, [0.0] * 4)
    times = [s.time_usec for s in sensors]
    # one physics step per actuator message: the clock advances by exactly dt each time
    assert [b - a for a, b in itertools.pairwise(times)] == [DT_US] * 2999
    for s in sensors:
        assert s.fields_updated & (ACCEL | GYRO) == ACCEL | GYRO
        assert s.fields_updated & MAG in (0, MAG)  # a group is complete or absent
        assert s.fields_updated & BARO in (0, BARO)
        assert s.fields_updated & 0x400 == 0  # no airspeed sensor on a multirotor
        assert s.id == 0
    # the slower sensors at their rates over 12 s: mag 100 Hz, baro 50 Hz, GPS 10 Hz
    mags = sum(1 for s in sensors if s.fields_updated & MAG)
    baros = sum(1 for s in sensors if s.fields_updated & BARO)
    assert 1190 <= mags <= 1210 and 590 <= baros <= 610
    gps = ap.drain("HIL_GPS")
    assert 115 <= len(gps) <= 125
    assert all(b.time_usec - a.time_usec == 100_000 for a, b in
               itertools.pairwise(gps[1:]))  # the first is on the grid from where it began
    assert gps[0].time_usec > QUIET.utc_start_us  # UNIX epoch, as PX4 wants for UTC
    truths = ap.drain("HIL_STATE_QUATERNION")
    assert 590 <= len(truths) <= 610  # 50 Hz, as requested
    assert rig.sim.counters["actuators"] == 3000


def test_resting_vehicle_reads_one_g_and_the_earth_field(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    sensors = lockstep(ap, 50, [0.0] * 4)  # disarmed: all zeros, no thrust
    s = next(x for x in sensors if x.fields_updated & (MAG | BARO) == MAG | BARO)
    assert (s.xacc, s.yacc) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert s.zacc == pytest.approx(-G)  # FRD: specific force points up, z is down
    assert (s.xgyro, s.ygyro, s.zgyro) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    # start yaw 0 in ENU = heading east: the body's forward axis is east, right is south
    assert (s.xmag, s.ymag, s.zmag) == pytest.approx((FIELD[1], -FIELD[0], FIELD[2]),
                                                     abs=1e-6)
    assert s.abs_pressure == pytest.approx(isa_pressure_hpa(0.0), rel=1e-6)
    assert s.temperature == pytest.approx(15.0)
    gps = ap.next("HIL_GPS")
    assert (gps.lat, gps.lon) == (round(QUIET.origin_lat_deg * 1e7),
                                  round(QUIET.origin_lon_deg * 1e7))
    assert gps.fix_type == 3 and (gps.vn, gps.ve, gps.vd) == (0, 0, 0)


def test_thrust_lifts_the_vehicle_in_ned(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    sensors = lockstep(ap, 500, [0.6] * 4)  # 18 N on 1.5 kg: 2.19 m/s^2 up
    assert sensors[-1].zacc == pytest.approx(-18.0 / 1.5, rel=1e-6)
    baros = [s for s in sensors if s.fields_updated & BARO]
    assert baros[-1].pressure_alt > 1.0 and baros[-1].abs_pressure < baros[0].abs_pressure
    gps = ap.drain("HIL_GPS")
    assert gps[-1].vd < -300 and gps[-1].alt > gps[0].alt  # climbing: down velocity < 0


@pytest.mark.parametrize(("motors", "axis"), [
    ([0.5, 0.6, 0.6, 0.5], "xgyro"),  # left motors (2 rear-left, 3 front-left) up: roll right
    ([0.6, 0.5, 0.6, 0.5], "ygyro"),  # front motors (1, 3) up: nose up
    ([0.6, 0.6, 0.5, 0.5], "zgyro"),  # counter-clockwise rotors (1, 2) up: yaw clockwise
])
def test_motor_mixing_turns_the_body_the_px4_way(rig: Rig, motors: list[float],
                                                 axis: str) -> None:
    """PX4 quad-X: 1 front-right CCW, 2 rear-left CCW, 3 front-left CW, 4 rear-right CW;
    positive FRD rates are roll right, nose up and yaw clockwise."""
    ap = rig.connect()
    ap.heartbeat()
    last = lockstep(ap, 100, motors)[-1]
    rates = {"xgyro": last.xgyro, "ygyro": last.ygyro, "zgyro": last.zgyro}
    assert rates.pop(axis) > 0.05
    assert all(abs(r) < 1e-6 for r in rates.values())


def test_ground_truth_attitude_is_ned_frd(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    ap.send(ap.mav.command_long_encode(1, 200, mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 0,
                                       mavlink.MAVLINK_MSG_ID_HIL_STATE_QUATERNION, 0,
                                       0, 0, 0, 0, 0))
    lockstep(ap, 60, [0.5, 0.6, 0.6, 0.5])  # rolling right
    truth = ap.drain("HIL_STATE_QUATERNION")[-1]
    roll, pitch, yaw = euler_ned(truth.attitude_quaternion)
    assert roll > 0.01 and abs(pitch) < 1e-6
    assert yaw == pytest.approx(math.pi / 2, abs=1e-6)  # heading east
    assert truth.rollspeed > 0


def test_bad_bytes_are_counted_and_the_link_goes_on(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    sensor = ap.next("HIL_SENSOR")
    corrupt = bytearray(GOLDEN_ACTUATORS)
    corrupt[-1] ^= 0xFF  # the checksum's high byte
    ap._write(bytes(corrupt) + b"\x00garbage on the link\xff" * 3)
    ap.actuators(sensor.time_usec, [0.0] * 4)
    after = ap.next("HIL_SENSOR")
    assert after.time_usec > sensor.time_usec
    counters = rig.sim.counters
    assert counters["bad_crc"] == 1 and counters["garbage"] >= 1
    assert counters["actuators"] == 1  # only the good message stepped the physics
    assert "CRC" in rig.link.last_error or "prefix" in rig.link.last_error


def test_stale_and_non_finite_actuators_are_refused_or_zeroed(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    s1 = lockstep(ap, 3, [0.0] * 4)[-1]
    ap.actuators(s1.time_usec - 2 * DT_US, [0.9] * 4)  # older than the last one
    ap.actuators(s1.time_usec, [math.nan, 0.0, 0.0, 0.0])
    s2 = ap.next("HIL_SENSOR")
    assert s2.time_usec == s1.time_usec + DT_US  # the stale one did not step
    assert rig.sim.counters["stale_actuators"] == 1
    assert rig.sim.counters["bad_controls"] == 1
    assert s2.zacc == pytest.approx(-G)  # NaN taken as no thrust: still resting


@pytest.mark.parametrize("rig", [Px4Settings(sensors=QUIET, watchdog_s=0.2)], indirect=True)
def test_watchdog_pauses_and_resumes(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    last = lockstep(ap, 5, [0.0] * 4)[-1]
    wait_until(lambda: rig.sim.counters.get("watchdog_timeouts", 0) >= 2, 10,
               "repeated watchdog reports")
    assert rig.link.time_us == last.time_usec  # paused: the world held still
    assert "no actuator message" in rig.link.last_error
    ap.actuators(last.time_usec, [0.0] * 4)  # the autopilot is back
    assert ap.next("HIL_SENSOR").time_usec == last.time_usec + DT_US


@pytest.mark.parametrize("rig", [Px4Settings(sensors=QUIET, watchdog_s=0.2,
                                             watchdog_policy="freerun")], indirect=True)
def test_watchdog_freerun_keeps_the_world_going(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    last = lockstep(ap, 5, [0.0] * 4)[-1]
    wait_until(lambda: rig.sim.counters.get("watchdog_timeouts", 0) >= 1, 10, "a report")
    later = [ap.next("HIL_SENSOR") for _ in range(10)]
    assert later[-1].time_usec > last.time_usec + 5 * DT_US


def test_a_new_connection_is_a_new_autopilot(rig: Rig) -> None:
    ap = rig.connect()
    ap.heartbeat()
    lockstep(ap, 200, [0.6] * 4)
    ap.sock.close()  # type: ignore[attr-defined]
    wait_until(lambda: rig.sim.counters.get("disconnects") == 1, 10, "the disconnect")
    again = rig.connect()
    again.heartbeat()
    first = again.next("HIL_SENSOR")
    assert first.time_usec <= 3 * DT_US  # the clock starts over
    assert first.zacc == pytest.approx(-G)  # back on the ground at rest


def test_serial_transport_through_a_pseudo_terminal() -> None:
    controller, device = os.openpty()
    try:
        _, sim, stop, thread = start(SerialLink(os.ttyname(device)),
                                        Px4Settings(sensors=QUIET))

        def read() -> bytes:
            import select
            return os.read(controller, 65536) if select.select([controller], [], [],
                                                               0.05)[0] else b""
        ap = Autopilot(read, lambda data: os.write(controller, data))
        # garbage on the line first; its last byte looks like a MAVLink 1 start, so the
        # parser takes the heartbeats after it as that frame's body until the checksum
        # fails: as a flight controller does, keep sending heartbeats until sensors come
        ap._write(b"\x55\xaa boot noise \x00\xfe")
        for _ in range(50):
            ap.heartbeat()
            if sim.link.autopilot_seen:
                break
            time.sleep(0.05)
        sensors = lockstep(ap, 300, [0.0] * 4)
        times = [s.time_usec for s in sensors]
        assert [b - a for a, b in itertools.pairwise(times)] == [DT_US] * 299
        assert sim.counters["garbage"] >= 1
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        os.close(controller)
        os.close(device)


def test_only_a_multirotor_speaks_px4() -> None:
    with pytest.raises(ValueError, match="multirotor, not a car"):
        Px4Link(HilBody("car"))
    with pytest.raises(ValueError, match="watchdog_policy"):
        Px4Settings(watchdog_policy="hang")  # type: ignore[arg-type]


def test_command_line_serves_px4_and_reports_its_counters() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fleetbus.cli", "hil", "px4", "--port", "0",
                             "--seed", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("PX4 simulator listening on tcp 127.0.0.1:")
        rig = Rig(link=None, sim=None, port=int(line.rsplit(":", 1)[1]))  # type: ignore[arg-type]
        ap = rig.connect()
        ap.heartbeat()
        sensors = lockstep(ap, 100, [0.0] * 4)
        assert sensors[-1].zacc == pytest.approx(-G, abs=0.2)  # noisy, but resting
        ap.sock.close()  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    counters = json.loads(err.strip().splitlines()[-1])["counters"]
    assert counters["actuators"] == 100 and counters["connections"] == 1
