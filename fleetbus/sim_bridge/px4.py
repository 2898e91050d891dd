"""PX4's simulator MAVLink API: a PX4 autopilot (SITL build or a flight controller in HIL)
flies the rotor-level quadrotor of fleetbus's simulator.

The simulator listens on TCP 4560 + instance (loopback unless told otherwise); the
autopilot connects and sends a HEARTBEAT; sensors then free-run at the physics rate until
the first HIL_ACTUATOR_CONTROLS. From then on, if the autopilot runs the lockstep scheduler
(flag bit 0), physics advances exactly one step per actuator message and the HIL_SENSOR
`time_usec` is the autopilot's clock; without the flag, physics keeps real time and the
latest actuator values apply. A serial transport serves a flight controller in HIL.

Actuator outputs 0..1 are the four motors in PX4's quad-X order, thrust linear in the
output (PX4's THR_MDL_FAC = 0); all zeros (disarmed) means no thrust.

A lockstep autopilot that stops answering is reported after `watchdog_s` (counted,
logged, again every `watchdog_s`), then, per `watchdog_policy`, the simulator waits
("pause": the physics holds) or keeps the world going in real time on the last outputs
("freerun") until the autopilot answers again: it never hangs silently.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pymavlink.dialects.v20 import common as mavlink

from fleetbus.sim_bridge.hil_body import HilBody
from fleetbus.sim_bridge.px4_sensors import Px4Sensors, Px4SensorSettings

log = logging.getLogger(__name__)

BASE_PORT = 4560
SIM_SYSTEM_ID, SIM_COMPONENT_ID = 1, 200  # the simulator's own MAVLink address
LOCKSTEP_FLAG = 1  # HIL_ACTUATOR_CONTROLS_FLAGS_LOCKSTEP
ARMED_FLAG = 128  # MAV_MODE_FLAG_SAFETY_ARMED


@dataclass(frozen=True)
class Px4Settings:
    """How the simulator runs: physics step, watchdog and sensors."""

    physics_dt_s: float = 0.004  # 250 Hz: PX4's usual HIL_SENSOR rate
    watchdog_s: float = 1.0  # wall time a lockstep autopilot may stay silent
    watchdog_policy: Literal["pause", "freerun"] = "pause"
    sensors: Px4SensorSettings = field(default_factory=Px4SensorSettings)

    def __post_init__(self) -> None:
        if not self.physics_dt_s > 0 or round(self.physics_dt_s * 1e6) < 1:
            raise ValueError(f"Px4Settings.physics_dt_s must be at least 1 us, "
                             f"got {self.physics_dt_s}")
        if not self.watchdog_s > 0:
            raise ValueError(f"Px4Settings.watchdog_s must be positive, got {self.watchdog_s}")
        if self.watchdog_policy not in ("pause", "freerun"):
            raise ValueError(f"Px4Settings.watchdog_policy must be pause or freerun, "
                             f"got {self.watchdog_policy!r}")


class Px4Link:
    """The protocol without a transport: bytes from the autopilot in, bytes to it out.

    `counters` count what happened, bad input included: `bad_crc` and `garbage` (bytes the
    MAVLink parser rejected), `bad_controls` (non-finite outputs, taken as 0),
    `stale_actuators` (an actuator message stamped before the previous one: not stepped),
    `bad_command` (a non-finite message interval: refused), `ignored` (messages this
    protocol has no use for). `last_error` says the latest.
    """

    def __init__(self, body: HilBody, settings: Px4Settings | None = None) -> None:
        if body.kind != "multirotor":
            raise ValueError(f"the PX4 simulator protocol drives a multirotor, "
                             f"not a {body.kind}")
        self.body = body
        self.settings = settings or Px4Settings()
        self.mav = mavlink.MAVLink(None, SIM_SYSTEM_ID, SIM_COMPONENT_ID)
        self.mav.robust_parsing = True  # bad bytes become BAD_DATA messages, not exceptions
        self.dt_us = round(self.settings.physics_dt_s * 1e6)
        self.sensors = Px4Sensors(body, self.mav, self.dt_us / 1e6, self.settings.sensors)
        self.counters: dict[str, int] = {}
        self.last_error = ""
        self.reset()

    def reset(self) -> None:
        """A new autopilot: the world back to its start, the clock to one step."""
        self.body.reset()
        self.sensors.reset()
        self.time_us = self.dt_us  # strictly positive from the first message on
        self.outputs = [0.0] * 4
        self.autopilot_seen = False  # its first HEARTBEAT starts the sensors
        self.lockstep = False
        self.armed = False
        self.last_actuator_us = -1

    def count(self, key: str, message: str = "") -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
        if message:
            self.last_error = message

    def receive(self, data: bytes) -> bytes:
        """Handle bytes from the autopilot; returns what to send back (possibly nothing)."""
        out = bytearray()
        for msg in self.mav.parse_buffer(data) or ():
            kind = msg.get_type()
            if kind == "BAD_DATA":
                self._bad_data(msg)
            elif kind == "HIL_ACTUATOR_CONTROLS":
                out += self._actuators(msg)
            elif kind == "HEARTBEAT":
                self.autopilot_seen = True
                self.armed = bool(msg.base_mode & ARMED_FLAG)
            elif kind == "COMMAND_LONG":
                out += self._command(msg)
            else:
                self.count("ignored")
        return bytes(out)

    def advance(self) -> bytes:
        """One physics step on the current outputs, then that instant's sensor messages."""
        max_thrust = self.body.model.max_motor_thrust_n
        self.body.step([max_thrust * u for u in self.outputs], self.dt_us / 1e6)
        self.time_us += self.dt_us
        return self.sensor_bytes()

    def sensor_bytes(self) -> bytes:
        return b"".join(m.pack(self.mav) for m in self.sensors.messages(self.time_us))

    def _bad_data(self, msg: mavlink.MAVLink_bad_data) -> None:
        reason = str(msg.reason)
        key = "bad_crc" if "CRC" in reason else "garbage"
        self.count(key, f"PX4 link: {reason} ({len(msg.data)} bytes dropped)")

    def _actuators(self, msg: mavlink.MAVLink_hil_actuator_controls_message) -> bytes:
        if msg.time_usec < self.last_actuator_us:
            self.count("stale_actuators", f"PX4 link: HIL_ACTUATOR_CONTROLS stamped "
                       f"{msg.time_usec} us after one stamped {self.last_actuator_us} us; "
                       "not stepped")
            return b""
        self.last_actuator_us = msg.time_usec
        outputs = list(msg.controls[:4])
        if not all(math.isfinite(u) for u in outputs):
            self.count("bad_controls", f"PX4 link: non-finite motor outputs {outputs}; "
                       "taken as 0")
            outputs = [u if math.isfinite(u) else 0.0 for u in outputs]
        self.outputs = [min(max(u, 0.0), 1.0) for u in outputs]
        self.armed = bool(msg.mode & ARMED_FLAG)
        self.lockstep = bool(msg.flags & LOCKSTEP_FLAG)
        self.count("actuators")
        return self.advance() if self.lockstep else b""

    def _command(self, msg: mavlink.MAVLink_command_long_message) -> bytes:
        if (msg.command == mavlink.MAV_CMD_SET_MESSAGE_INTERVAL
                and math.isfinite(msg.param1)  # round() raises on NaN and infinity
                and round(msg.param1) == mavlink.MAVLINK_MSG_ID_HIL_STATE_QUATERNION):
            if math.isfinite(msg.param2):
                self.sensors.request_ground_truth(msg.param2)
                result = mavlink.MAV_RESULT_ACCEPTED
            else:  # an infinite interval made a rate of 0, and the sensors divide by it
                self.count("bad_command", f"PX4 link: message interval {msg.param2} us for "
                           "HIL_STATE_QUATERNION; refused")
                result = mavlink.MAV_RESULT_DENIED
        else:
            self.count("ignored")
            result = mavlink.MAV_RESULT_UNSUPPORTED
        return self.mav.command_ack_encode(msg.command, result).pack(self.mav)


class Transport(Protocol):
    """A byte stream to one autopilot."""

    def connect(self, timeout_s: float) -> bool: ...  # True once an autopilot is there
    def read(self, timeout_s: float) -> bytes | None: ...  # b"" on timeout, None if gone
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class TcpServer:
    """Listens on host:port for one autopilot at a time (PX4 SITL connects as a client);
    a new connection after the old one closed is a new autopilot."""

    def __init__(self, host: str = "127.0.0.1", port: int = BASE_PORT) -> None:
        self.listener = socket.create_server((host, port))
        self.port = self.listener.getsockname()[1]
        self.peer: socket.socket | None = None

    def connect(self, timeout_s: float) -> bool:
        if self.peer is None and _readable(self.listener, timeout_s):
            self.peer, address = self.listener.accept()
            self.peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.info("PX4 autopilot connected from %s:%d", *address[:2])
        return self.peer is not None

    def read(self, timeout_s: float) -> bytes | None:
        assert self.peer is not None
        if not _readable(self.peer, timeout_s):
            return b""
        try:
            data = self.peer.recv(65536)
        except OSError:
            data = b""
        if not data:  # closed by the autopilot
            self.peer.close()
            self.peer = None
            return None
        return data

    def write(self, data: bytes) -> None:
        if self.peer is not None and data:
            try:
                self.peer.sendall(data)
            except OSError:  # the autopilot went away; read() reports it
                pass

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        self.listener.close()


def _readable(source: socket.socket | object, timeout_s: float) -> bool:
    """Whether `source` (anything with fileno()) has data within `timeout_s`. poll, not
    select: a process with many sockets has descriptors past select's 1024."""
    poller = select.poll()
    poller.register(source, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


class SerialLink:
    """A flight controller in HIL on a serial line (pyserial): always "connected"; its
    HEARTBEAT starts the sensors as on TCP."""

    def __init__(self, port: str, baudrate: int = 921600) -> None:
        import serial  # the hil extra; only a serial set-up needs it

        self.serial = serial.Serial(port, baudrate, timeout=0)

    def connect(self, timeout_s: float) -> bool:
        return True

    def read(self, timeout_s: float) -> bytes | None:
        if not _readable(self.serial, timeout_s):
            return b""
        return self.serial.read(max(1, self.serial.in_waiting))

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def close(self) -> None:
        self.serial.close()


class Px4Simulator:
    """Runs a Px4Link over a transport until `stop` is set: connection, free-run,
    lockstep, watchdog. `counters` adds `connections`, `disconnects` and
    `watchdog_timeouts` to the link's."""

    def __init__(self, link: Px4Link, transport: Transport) -> None:
        self.link, self.transport = link, transport

    @property
    def counters(self) -> dict[str, int]:
        return self.link.counters

    def run(self, stop: threading.Event) -> None:
        link, transport = self.link, self.transport
        dt_s = link.dt_us / 1e6
        watchdog_s = link.settings.watchdog_s
        next_tick = last_answer = time.monotonic()
        silent = False
        try:
            while not stop.is_set():
                if not transport.connect(0.1):
                    continue
                now = time.monotonic()
                free_running = link.autopilot_seen and (
                    not link.lockstep
                    or (silent and link.settings.watchdog_policy == "freerun"))
                wait = (max(0.0, next_tick - now) if free_running
                        else max(0.0, min(0.1, last_answer + watchdog_s - now)))
                data = transport.read(wait)
                if data is None:
                    link.count("disconnects", "PX4 link: the autopilot disconnected")
                    log.warning("PX4 autopilot disconnected; waiting for a new one")
                    link.reset()
                    silent = False
                    continue
                if data:
                    was_seen = link.autopilot_seen
                    actuators = link.counters.get("actuators", 0)
                    transport.write(link.receive(data))
                    if link.autopilot_seen and not was_seen:
                        link.count("connections")
                        next_tick = last_answer = time.monotonic()
                    if link.counters.get("actuators", 0) != actuators:
                        last_answer = time.monotonic()
                        if silent:
                            log.warning("PX4 autopilot answers again at %d us", link.time_us)
                            silent = False
                now = time.monotonic()
                if free_running and now >= next_tick:
                    transport.write(link.advance())
                    next_tick = max(next_tick + dt_s, now - dt_s)  # no burst after a stall
                elif link.lockstep and now - last_answer >= watchdog_s:
                    link.count("watchdog_timeouts",
                               f"PX4 link: no actuator message for {now - last_answer:.1f} s "
                               f"(sim time {link.time_us} us); policy "
                               f"{link.settings.watchdog_policy}")
                    log.warning(link.last_error)
                    silent, last_answer, next_tick = True, now, now
        finally:
            transport.close()


def make_simulator(settings: Px4Settings | None = None, start: dict[str, float] | None = None,
                   params: dict | None = None, instance: int = 0, host: str = "127.0.0.1",
                   port: int | None = None, serial: str = "",
                   baudrate: int = 921600) -> tuple[Px4Simulator, str]:
    """A PX4 simulator for a multirotor (model `params`, `start` pose) on TCP 4560 +
    instance (`port` 0: any free one) or, with `serial`, on that serial device; and where
    it listens, e.g. "tcp 127.0.0.1:4560"."""
    link = Px4Link(HilBody("multirotor", params, start), settings)
    if serial:
        return Px4Simulator(link, SerialLink(serial, baudrate)), f"serial {serial}"
    server = TcpServer(host, BASE_PORT + instance if port is None else port)
    return Px4Simulator(link, server), f"tcp {host}:{server.port}"
