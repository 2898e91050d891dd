"""Lockstep steps per second through the PX4 simulator adapter (`python -m pytest
benchmarks/test_hil_px4.py --benchmark-only -s`; issue 8, goal >= 2 000 steps/s).

pymavlink plays a lockstep PX4 over TCP on loopback: it sends HIL_ACTUATOR_CONTROLS and
waits for the HIL_SENSOR that answers it, 5 000 times per round. Side by side in the same
run, against two servers in their own processes:

- ours: `fleetbus hil px4` (rotor-level quadrotor, RK4, sensors with noise, GPS at 10 Hz,
  the MAVLink encoding and parsing of both directions);
- floor: a raw socket server that answers each 93-byte actuator message with a ready-made
  HIL_SENSOR: the transport and the client's own MAVLink work, nothing else.

Only correctness is asserted (every step answered, the clock one step further each time).
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pymavlink.dialects.v20 import common as mavlink

STEPS = 5000
GOAL_STEPS_PER_S = 2000
RESULTS: dict[str, float] = {}

FLOOR_SERVER = """
import socket, sys
from pymavlink.dialects.v20 import common as mavlink
mav = mavlink.MAVLink(None, 1, 200)
reply = mav.hil_sensor_encode(4000, 0, 0, -9.81, 0, 0, 0, 0.1, 0, 0.5, 1013.25, 0, 0, 15,
                              0x1FFF, 0).pack(mav)
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
peer, _ = listener.accept()
peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
peer.sendall(reply)  # the free-run sensor a lockstep autopilot answers first
pending = 0
while True:
    data = peer.recv(65536)
    if not data:
        break
    pending += len(data)
    while pending >= 93:  # one actuator message, one sensor message
        pending -= 93
        peer.sendall(reply)
"""


def _server(command: list[str]) -> Iterator[int]:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        yield int(line.rsplit(":", 1)[-1])
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def ours() -> Iterator[int]:
    yield from _server([sys.executable, "-m", "fleetbus.cli", "hil", "px4", "--port", "0"])


@pytest.fixture
def floor() -> Iterator[int]:
    yield from _server([sys.executable, "-c", FLOOR_SERVER])


class Autopilot:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.mav = mavlink.MAVLink(None, 1, 1)
        self.inbox: list = []
        self.sock.sendall(self.mav.heartbeat_encode(2, 12, 1, 0, 3).pack(self.mav))
        self.last = self.sensor()  # free-running until the first answer

    def sensor(self) -> mavlink.MAVLink_hil_sensor_message:
        while True:
            while self.inbox:
                msg = self.inbox.pop(0)
                if msg.get_type() == "HIL_SENSOR":
                    return msg
            self.inbox = self.mav.parse_buffer(self.sock.recv(65536)) or []

    def steps(self, n: int) -> list[int]:
        times = []
        sensor = self.last
        for _ in range(n):
            self.sock.sendall(self.mav.hil_actuator_controls_encode(
                sensor.time_usec, [0.55] * 4 + [0.0] * 12, 129, 1).pack(self.mav))
            sensor = self.sensor()
            times.append(sensor.time_usec)
        self.last = sensor
        return times


def _measure(benchmark, port: int, label: str) -> list[int]:
    autopilot = Autopilot(port)
    times: list[int] = []

    def round_() -> None:
        times[:] = autopilot.steps(STEPS)

    start = time.perf_counter()
    benchmark.pedantic(round_, rounds=3, iterations=1)
    RESULTS[label] = STEPS * 3 / (time.perf_counter() - start)
    autopilot.sock.close()
    return times


@pytest.mark.benchmark(group="px4 lockstep, 5000 steps")
def test_ours(benchmark, ours: int) -> None:
    times = _measure(benchmark, ours, "ours")
    assert all(b - a == 4000 for a, b in itertools.pairwise(times))
    _report()


@pytest.mark.benchmark(group="px4 lockstep, 5000 steps")
def test_floor(benchmark, floor: int) -> None:
    assert len(_measure(benchmark, floor, "floor")) == STEPS
    _report()


def _report() -> None:
    if len(RESULTS) < 2:
        return
    ours, floor = RESULTS["ours"], RESULTS["floor"]
    met = "met" if ours >= GOAL_STEPS_PER_S else "NOT met"
    print(f"\nPX4 lockstep: ours {ours:,.0f} steps/s, floor (raw socket answering a ready "
          f"message) {floor:,.0f} steps/s, ours/floor {ours / floor:.2f}; goal "
          f">= {GOAL_STEPS_PER_S} steps/s {met}")
