"""ArduPilot SITL's JSON physics backend over real UDP on loopback: a struct-based client
plays ArduPilot against the server running in a thread; the pure protocol engine is also
fed garbage directly."""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetbus.sim_bridge.ardupilot import (
    ArduPilotBackend,
    ServoPacket,
    ServoPacketError,
    centred,
    decode_servo,
    make_backend,
    make_mixer,
    make_physics,
    motor_fraction,
    sitl_port,
)
from fleetbus.sim_bridge.frames import euler_ned

LOOPBACK = "127.0.0.1"
RATE_HZ = 400
DT = 1.0 / RATE_HZ
IDLE = (1000, 1000, 1000, 1000)  # armed, motors stopped

# ArduPilot's datagrams, byte for byte: 16 channels at 400 Hz, frame 7, servos 1-4 at
# 1100, 1200, 1300, 1400 us, the rest 0 ...
GOLDEN_16 = (b"\x1a\x48\x90\x01\x07\x00\x00\x00"
             b"\x4c\x04\xb0\x04\x14\x05\x78\x05" + b"\x00\x00" * 12)
# ... and 32 channels at 50 Hz, frame 0x01020304, servo 1 at 1500, 3 at 2000, 32 at 1000
GOLDEN_32 = (b"\x81\x73\x32\x00\x04\x03\x02\x01"
             b"\xdc\x05\x00\x00\xd0\x07" + b"\x00\x00" * 28 + b"\xe8\x03")


def servo_packet(pwm: tuple[int, ...], frame: int, channels: int = 16,
                 rate_hz: int = RATE_HZ) -> bytes:
    """What ArduPilot sends, packed by hand: outputs not given are 0."""
    magic = {16: 18458, 32: 29569}[channels]
    padded = tuple(pwm) + (0,) * (channels - len(pwm))
    return struct.pack(f"<HHI{channels}H", magic, rate_hz, frame, *padded)


class Sitl:
    """Plays ArduPilot: struct-packed servo packets out, JSON states back."""

    def __init__(self, port: int, channels: int = 16, rate_hz: int = RATE_HZ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(5.0)  # only a failing test waits this long
        self.addr = (LOOPBACK, port)
        self.channels = channels
        self.rate_hz = rate_hz
        self.frame = 0

    def packet(self, pwm: tuple[int, ...], frame: int) -> bytes:
        return servo_packet(pwm, frame, self.channels, self.rate_hz)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    def recv_raw(self) -> bytes:
        data, addr = self.sock.recvfrom(65536)
        assert addr == self.addr
        return data

    def step(self, pwm: tuple[int, ...] = IDLE, frame: int | None = None) -> dict[str, Any]:
        """One lockstep exchange; the next frame_count unless told."""
        frame = self.frame if frame is None else frame
        self.send_raw(self.packet(pwm, frame))
        self.frame = frame + 1
        return parse(self.recv_raw())

    def run(self, pwm: tuple[int, ...], steps: int) -> dict[str, Any]:
        for _ in range(steps - 1):
            self.step(pwm)
        return self.step(pwm)

    def close(self) -> None:
        self.sock.close()


def parse(data: bytes) -> dict[str, Any]:
    """One JSON record framed "\\n" + json + "\\n", with every mandatory field."""
    assert data[:1] == b"\n" and data[-1:] == b"\n" and data.count(b"\n") == 2, data
    state = json.loads(data[1:-1])
    assert set(state) == {"timestamp", "imu", "position", "velocity", "quaternion"}
    assert set(state["imu"]) == {"gyro", "accel_body"}
    for key, n in (("position", 3), ("velocity", 3), ("quaternion", 4)):
        assert len(state[key]) == n
    assert len(state["imu"]["gyro"]) == len(state["imu"]["accel_body"]) == 3
    return state


def roll_pitch_yaw(state: dict[str, Any]) -> tuple[float, float, float]:
    return euler_ned(state["quaternion"])


@pytest.fixture
def serve() -> Iterator[Callable[..., ArduPilotBackend]]:
    """Starts backends on ephemeral loopback ports, each served by its own thread, and
    stops them all afterwards."""
    running: list[tuple[ArduPilotBackend, threading.Event, threading.Thread]] = []

    def start(frame: str = "quad", **kw: Any) -> ArduPilotBackend:
        backend = make_backend(frame, host=LOOPBACK, port=0, **kw)
        stop = threading.Event()
        thread = threading.Thread(target=backend.serve, args=(stop,), daemon=True)
        thread.start()
        running.append((backend, stop, thread))
        return backend

    yield start
    for backend, stop, thread in running:
        stop.set()
        thread.join(5)
        backend.close()
        assert not thread.is_alive()


@pytest.fixture
def sitl() -> Iterator[Callable[..., Sitl]]:
    clients: list[Sitl] = []

    def connect(backend: ArduPilotBackend, **kw: Any) -> Sitl:
        clients.append(Sitl(backend.port, **kw))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


# -- packets --------------------------------------------------------------------------


def test_golden_packets_decode_exactly():
    assert GOLDEN_16[:8] == bytes.fromhex("1a 48 90 01 07 00 00 00")
    assert decode_servo(GOLDEN_16) == ServoPacket(400, 7, (1100, 1200, 1300, 1400) + (0,) * 12)
    assert decode_servo(GOLDEN_32) == ServoPacket(
        50, 0x01020304, (1500, 0, 2000) + (0,) * 28 + (1000,))


def test_golden_packet_drives_the_motors_over_udp(serve, sitl):
    backend = serve("quad")
    client = sitl(backend)
    client.send_raw(GOLDEN_16)
    state = parse(client.recv_raw())
    assert state["timestamp"] == DT  # 400 Hz
    max_thrust = backend.physics.body.model.max_motor_thrust_n
    assert backend.physics.body.vehicle.applied.tolist() == pytest.approx(
        [0.1 * max_thrust, 0.2 * max_thrust, 0.3 * max_thrust, 0.4 * max_thrust])


def test_32_channel_packets_and_a_servo_above_16(serve, sitl):
    rover = serve("rover", channels={"steering": 20, "throttle": 3})
    client = sitl(rover, channels=32)
    pwm = [1500] * 32
    pwm[2], pwm[19] = 2000, 2000  # full throttle, steering right on servo 20
    state = client.run(tuple(pwm), 100)
    assert state["timestamp"] == pytest.approx(100 * DT)
    assert rover.physics.body.vehicle.applied.tolist()[1] == pytest.approx(
        -rover.physics.body.model.max_steer_rad)
    assert state["imu"]["gyro"][2] > 0  # turning right: clockwise, +z in FRD
    # a 16-channel packet cannot carry servo 20: refused, named, counted
    sitl(rover, channels=16).send_raw(servo_packet((1500,) * 16, 500))
    state = client.step(tuple(pwm))  # the next packet is still answered
    assert rover.physics.counters["missing_channel"] == 1
    assert "servo output 20" in rover.physics.last_error
    assert "16 channels" in rover.physics.last_error
    assert state["timestamp"] == pytest.approx(101 * DT)


def test_state_fields_and_framing_at_rest(serve, sitl):
    client = sitl(serve("quad", start={"x": 3.0, "y": 4.0, "yaw": 0.0}))
    state = client.step((0,) * 16)  # disarmed: every output 0
    assert state["timestamp"] == DT
    assert state["position"] == pytest.approx([4.0, 3.0, 0.0])  # NED: north = our y
    assert state["velocity"] == pytest.approx([0.0, 0.0, 0.0])
    assert state["imu"]["accel_body"] == pytest.approx([0.0, 0.0, -9.81])
    assert state["imu"]["gyro"] == pytest.approx([0.0, 0.0, 0.0])
    # level, nose east: ArduPilot's yaw is 90 deg clockwise from north
    roll, pitch, yaw = roll_pitch_yaw(state)
    assert (roll, pitch) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert yaw == pytest.approx(math.pi / 2)


def test_resting_quad_heading_north_reads_identity_attitude(serve, sitl):
    client = sitl(serve("quad", start={"yaw": math.pi / 2}))
    state = client.run(IDLE, 10)
    assert state["quaternion"] == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-12)
    assert state["imu"]["accel_body"] == pytest.approx([0.0, 0.0, -9.81])


# -- lockstep --------------------------------------------------------------------------


def test_lockstep_time_is_exactly_steps_times_dt(serve, sitl):
    backend = serve("quad")
    client = sitl(backend)
    steps = 3000
    last = 0.0
    for k in range(1, steps + 1):
        state = client.step((1500,) * 4)  # a slow climb: the physics really runs
        assert state["timestamp"] == k * DT
        assert state["timestamp"] > last
        last = state["timestamp"]
    assert backend.physics.counters["steps"] == steps
    assert backend.physics.counters["duplicates"] == backend.physics.counters["gaps"] == 0
    assert wait_for(lambda: backend.counters["sent"] == steps)  # counted after sending
    assert state["position"][2] < 0  # 1500 us lifts the default quad: NED z goes up


def test_duplicate_is_answered_identically_without_a_step(serve, sitl):
    backend = serve("quad")
    client = sitl(backend)
    client.run((2000,) * 4, 3)  # frames 0, 1, 2
    client.send_raw(client.packet((2000,) * 4, 2))
    first = client.recv_raw()
    client.send_raw(client.packet((2000,) * 4, 2))  # SITL re-sent it
    again = client.recv_raw()
    assert again == first
    assert parse(again)["timestamp"] == 3 * DT
    assert backend.physics.counters["duplicates"] == 2
    assert backend.physics.counters["steps"] == 3
    assert client.step((2000,) * 4, frame=3)["timestamp"] == 4 * DT


def test_restart_resets_time_and_position(serve, sitl):
    backend = serve("quad", start={"x": 1.0, "y": 2.0})
    client = sitl(backend)
    flown = client.run((2000,) * 4, 200)
    assert flown["position"][2] < -1.0  # it climbed
    state = client.step(IDLE, frame=0)  # a new SITL counts from 0 again
    assert backend.physics.counters["restarts"] == 1
    assert state["timestamp"] == DT
    assert state["position"] == pytest.approx([2.0, 1.0, 0.0])
    assert state["velocity"] == pytest.approx([0.0, 0.0, 0.0])
    assert client.step(IDLE)["timestamp"] == 2 * DT


def test_gap_is_counted_and_stepped_once(serve, sitl):
    backend = serve("quad")
    client = sitl(backend)
    client.run(IDLE, 2)  # frames 0, 1
    state = client.step(IDLE, frame=5)  # 2, 3 and 4 were lost
    assert state["timestamp"] == 3 * DT
    assert backend.physics.counters["gaps"] == 1
    assert backend.physics.counters["frames_missed"] == 3


def test_frame_rate_change_keeps_time_going_forward():
    physics = make_physics("rover")
    for frame in range(10):
        physics.handle(servo_packet((1500,) * 4, frame))
    state = parse(physics.handle(servo_packet((1500,) * 4, 10, rate_hz=50)))
    assert state["timestamp"] == pytest.approx(10 * DT + 1 / 50)
    assert physics.counters["rate_changes"] == 1


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "kind", "named"), [
    (b"\x41\x42" + GOLDEN_16[2:], "bad_magic", "0x4241"),
    (GOLDEN_16[:-2], "bad_length", "38 bytes"),
    (GOLDEN_16 + b"\x00", "bad_length", "41 bytes"),
    (GOLDEN_32[:40], "bad_length", "40 bytes, expected 72"),
    (b"\x1a", "bad_length", "1-byte"),
    (b"", "bad_length", "0-byte"),
    (GOLDEN_16[:2] + b"\x00\x00" + GOLDEN_16[4:], "bad_frame_rate", "frame_rate 0"),
])
def test_bad_packet_is_counted_named_and_the_next_is_answered(serve, sitl, data, kind, named):
    backend = serve("quad")
    client = sitl(backend)
    client.step()
    client.send_raw(data)
    state = client.step()  # the first datagram back answers this packet, not the bad one
    assert state["timestamp"] == 2 * DT
    assert backend.physics.counters[kind] == 1
    assert named in backend.physics.last_error
    assert backend.physics.counters["steps"] == 2


def test_random_garbage_over_udp_is_counted_and_survived(serve, sitl):
    backend = serve("quad")
    client = sitl(backend)
    rng = random.Random(8)
    garbage = [rng.randbytes(rng.randrange(0, 200)) for _ in range(200)]
    for frame, data in enumerate(garbage):
        client.send_raw(data)
        assert client.step(frame=frame)["timestamp"] == (frame + 1) * DT
    errors = sum(backend.physics.counters[k] for k in ("bad_magic", "bad_length"))
    assert errors == len(garbage)
    assert backend.physics.counters["steps"] == len(garbage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_handle_never_raises_and_keeps_answering(data):
    physics = make_physics("quad")
    assert physics.handle(GOLDEN_16) is not None
    try:
        decode_servo(data)
        valid = True
    except ServoPacketError:
        valid = False
    reply = physics.handle(data)
    if not valid:
        assert reply is None
        assert physics.last_error is not None
        assert sum(physics.counters[k] for k in ("bad_magic", "bad_length",
                                                  "bad_frame_rate")) == 1
    assert physics.handle(GOLDEN_32) is not None  # a restart, a gap or a duplicate: answered


def test_nonfinite_state_is_counted_and_not_sent():
    physics = make_physics("quad")
    physics.body.vehicle.state[:] = math.nan
    assert physics.handle(GOLDEN_16) is None
    assert physics.handle(GOLDEN_16) is None  # the duplicate has nothing to repeat either
    assert physics.counters["nonfinite_state"] == 1
    assert "not finite" in physics.last_error
    physics.handle(GOLDEN_16[:4] + b"\x00\x00\x00\x00" + GOLDEN_16[8:])  # SITL restarted
    assert physics.counters["restarts"] == 1 and physics.counters["nonfinite_state"] == 1


def test_bad_packets_are_logged_at_most_once_a_second(caplog):
    physics = make_physics("quad")
    with caplog.at_level(logging.WARNING, logger="fleetbus.sim_bridge.ardupilot"):
        for _ in range(100):
            physics.handle(b"junk")
    assert physics.counters["bad_magic"] == 100
    assert len([r for r in caplog.records if "magic" in r.getMessage()]) == 1


# -- vehicles and frames ----------------------------------------------------------------


def test_full_throttle_lifts_the_quad(serve, sitl):
    client = sitl(serve("quad"))
    states = [client.step((2000,) * 4) for _ in range(100)]
    assert states[-1]["position"][2] < states[50]["position"][2] < 0  # NED z: up is negative
    assert states[-1]["velocity"][2] < 0
    assert states[-1]["imu"]["accel_body"][2] < -9.81  # more than 1 g of thrust


def test_more_thrust_on_the_right_motors_rolls_left(serve, sitl):
    """ArduPilot QUAD X: motors 1 (front right) and 4 (rear right) are the right side;
    pushing them harder lifts the right side: a negative FRD roll."""
    client = sitl(serve("quad"))
    state = client.run((1600, 1550, 1550, 1600), 40)
    roll, pitch, _ = roll_pitch_yaw(state)
    assert roll < -0.01
    assert abs(pitch) < 1e-9
    assert state["imu"]["gyro"][0] < 0


def test_more_thrust_on_the_front_motors_pitches_up(serve, sitl):
    client = sitl(serve("quad"))
    state = client.run((1600, 1550, 1600, 1550), 40)  # 1 front right, 3 front left
    roll, pitch, _ = roll_pitch_yaw(state)
    assert pitch > 0.01
    assert abs(roll) < 1e-9


def test_rover_throttle_forward_heading_north_drives_north(serve, sitl):
    client = sitl(serve("rover", start={"yaw": math.pi / 2}), rate_hz=50)
    state = client.run((1500, 0, 2000), 100)  # steering centred, full throttle, 2 s
    assert state["position"][0] > 1.0
    assert abs(state["position"][1]) < 1e-9
    assert state["velocity"][0] > 1.0
    assert roll_pitch_yaw(state)[2] == pytest.approx(0.0, abs=1e-9)


def test_rover_steering_right_turns_clockwise(serve, sitl):
    client = sitl(serve("rover"), rate_hz=50)
    yaws = [roll_pitch_yaw(client.step((2000, 0, 2000)))[2] for _ in range(100)]
    assert yaws[0] == pytest.approx(math.pi / 2, abs=1e-3)  # nose east
    assert all(b > a for a, b in itertools.pairwise(yaws))
    assert yaws[-1] > math.pi / 2 + 0.1


def test_rover_settles_at_throttle_times_max_speed():
    physics = make_physics("rover", params={"max_speed_mps": 4.0})
    for frame in range(1000):
        state = parse(physics.handle(servo_packet((1500, 0, 1750), frame, rate_hz=50)))
    assert math.hypot(*state["velocity"][:2]) == pytest.approx(0.5 * 4.0, rel=1e-3)


def test_boat_throttle_forward_moves_ahead_and_right_turns_clockwise(serve, sitl):
    client = sitl(serve("boat"), rate_hz=50)
    state = client.run((1500, 0, 2000), 100)  # nose east: ahead is NED +y
    assert state["position"][1] > 0.5
    assert abs(state["position"][0]) < 1e-6
    yaw_before = roll_pitch_yaw(state)[2]
    state = client.run((2000, 0, 2000), 25)
    assert state["imu"]["gyro"][2] > 0
    assert roll_pitch_yaw(state)[2] > yaw_before


# -- mappings ---------------------------------------------------------------------------


def test_pwm_scales():
    assert [motor_fraction(p) for p in (0, 900, 1000, 1500, 2000, 2200)] == [
        0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert [centred(p) for p in (0, 900, 1000, 1250, 1500, 2000, 2200)] == [
        0.0, -1.0, -1.0, -0.5, 0.0, 1.0, 1.0]


def test_no_output_is_neutral_for_rover_and_boat():
    for frame in ("rover", "boat"):
        physics = make_physics(frame)
        kinematics = physics.body.kinematics()
        assert physics.mixer((0,) * 16, kinematics) == [0.0, 0.0], frame


def test_boat_uses_the_hulls_own_ahead_and_astern_limits():
    physics = make_physics("boat", params={"hull": "otter"})
    lower, upper = physics.body.model.input_bounds
    kinematics = physics.body.kinematics()
    assert physics.mixer((1500, 0, 2000), kinematics)[0] == pytest.approx(upper[0])
    assert physics.mixer((1500, 0, 1000), kinematics)[0] == pytest.approx(lower[0])
    assert physics.mixer((1000, 0, 1500), kinematics)[1] == pytest.approx(upper[1])  # left


def test_configuration_errors_name_the_offender():
    with pytest.raises(ValueError, match="'plane'"):
        make_physics("plane")
    with pytest.raises(ValueError, match="channel 33"):
        make_physics("rover", channels={"steering": 33})
    with pytest.raises(ValueError, match=r"4 motors, got channels \(1, 2, 3\)"):
        make_physics("quad", channels={"motors": (1, 2, 3)})
    with pytest.raises(ValueError, match="rudder"):
        make_mixer("boat", make_physics("boat").body.model, {"rudder": 2})
    with pytest.raises(ValueError, match="-1"):
        sitl_port(-1)


def test_default_ports_follow_sitl_instances():
    assert [sitl_port(i) for i in (0, 1, 3)] == [9002, 9012, 9032]


def test_a_taken_port_is_named(serve):
    taken = serve("quad").port
    with pytest.raises(OSError, match=f"127.0.0.1:{taken}"):
        make_backend("quad", port=taken)


# -- the watchdog -----------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_silence_is_reported_once_and_the_return_too(serve, sitl, caplog):
    caplog.set_level(logging.INFO, logger="fleetbus.sim_bridge.ardupilot")
    backend = serve("quad", silence_s=0.1)
    assert wait_for(lambda: backend.counters["silences"] == 1)
    assert "first servo packet" in caplog.text
    client = sitl(backend)
    client.step()
    assert not backend.silent and backend.counters["resumed"] == 1
    assert wait_for(lambda: backend.counters["silences"] == 2)
    time.sleep(0.5)  # five more silence periods: still one report for this silence
    assert backend.counters["silences"] == 2
    assert "since its last packet" in caplog.text
    client.step()
    assert backend.counters["resumed"] == 2
    assert "back after" in caplog.text


def test_poll_once_answers_one_packet_or_times_out():
    with make_backend("quad", port=0) as backend:
        client = Sitl(backend.port)
        try:
            assert backend.poll_once(0.01) is False
            client.send_raw(GOLDEN_16)
            assert backend.poll_once(5.0) is True
            assert parse(client.recv_raw())["timestamp"] == DT
        finally:
            client.close()



def test_command_line_serves_a_rover_and_reports_its_counters():
    proc = subprocess.Popen([sys.executable, "-m", "fleetbus.cli", "hil", "ardupilot",
                             "--frame", "rover", "--port", "0", "--start", "0,0,0,1.5708"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ArduPilot JSON physics (rover) listening on udp 127.0.0.1:")
        client = Sitl(int(line.rsplit(":", 1)[1]), rate_hz=50)
        state = client.run((1500, 1500, 1800, 1500), 100)  # throttle forward, heading north
        assert state["position"][0] > 0.5 and abs(state["position"][1]) < 0.01
        client.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    counters = json.loads(err.strip().splitlines()[-1])["counters"]
    assert counters["steps"] == 100 and counters["sent"] == 100
