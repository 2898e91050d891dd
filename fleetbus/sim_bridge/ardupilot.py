"""ArduPilot SITL's JSON physics backend: an ArduPilot autopilot built for SITL
(`sim_vehicle.py ... --model JSON:<this host>`) flies, drives or steers a vehicle of
fleetbus's simulator.

ArduPilot sends one binary servo packet per physics step over UDP to port 9002 (+10 per
SITL instance) and blocks until a JSON state comes back: lockstep, with ArduPilot's clock
slaved to the `timestamp` we send. The protocol engine (`JsonPhysics`) is pure, so its
rules (duplicates, restarts, gaps, bad packets) are tested without sockets; the UDP server
(`ArduPilotBackend`) only moves datagrams and watches for a silent autopilot.

Frames: ArduPilot's `quad` (QUAD X, servos 1-4 are motors 1-4), `rover` and `boat`
(steering on SERVO1, throttle on SERVO3) drive the HilBody kinds in `FRAME_KINDS`.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetbus.sim_bridge.frames import rotate_inverse
from fleetbus.sim_bridge.hil_body import HilBody, HilKind, Kinematics

log = logging.getLogger(__name__)

MAGIC_16 = 18458  # 16 servo channels
MAGIC_32 = 29569  # 32 servo channels (ArduPilot's SERVO_32_ENABLE = 1)
LAYOUTS: dict[int, struct.Struct] = {MAGIC_16: struct.Struct("<HHI16H"),
                                     MAGIC_32: struct.Struct("<HHI32H")}
MAX_CHANNELS = 32
BASE_PORT = 9002  # SITL's SIM_OUT_PORT
PORT_PER_INSTANCE = 10  # `sim_vehicle.py -I N` shifts every SITL port by 10 N
LOG_PERIOD_S = 1.0  # a flood of bad packets logs each kind of error at most this often
DEFAULT_SILENCE_S = 2.0  # SITL re-sends after ~1 s without an answer: 2 s is real silence

# the error kinds JsonPhysics counts (each also a key of `counters`)
ERRORS: tuple[str, ...] = ("bad_magic", "bad_length", "bad_frame_rate", "missing_channel",
                           "nonfinite_state")

FRAME_KINDS: dict[str, HilKind] = {"quad": "multirotor", "rover": "car", "boat": "vessel"}


def sitl_port(instance: int = 0) -> int:
    """The UDP port SITL instance `instance` sends its servo packets to."""
    if instance < 0:
        raise ValueError(f"SITL instance must not be negative, got {instance}")
    return BASE_PORT + PORT_PER_INSTANCE * instance


# -- servo packets ------------------------------------------------------------------------


class ServoPacketError(ValueError):
    """A datagram that is not a servo packet; `kind` is one of ERRORS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ServoPacket:
    """One physics step requested by ArduPilot."""

    frame_rate: int  # Hz: the step is 1 / frame_rate
    frame_count: int  # +1 per step; the same again = re-sent; smaller = SITL restarted
    pwm: tuple[int, ...]  # microseconds, channel 1 first (16 or 32 of them)


def decode_servo(packet: bytes) -> ServoPacket:
    """The servo packet in a datagram; ServoPacketError names what is wrong with it."""
    if len(packet) < 2:
        raise ServoPacketError("bad_length", f"{len(packet)}-byte datagram is too short for "
                                             f"a servo packet (40 or 72 bytes)")
    magic = int.from_bytes(packet[:2], "little")
    layout = LAYOUTS.get(magic)
    if layout is None:
        raise ServoPacketError("bad_magic", f"servo packet magic 0x{magic:04x} ({magic}) is "
                                            f"neither {MAGIC_16} (16 channels) nor "
                                            f"{MAGIC_32} (32 channels)")
    if len(packet) != layout.size:
        raise ServoPacketError("bad_length", f"servo packet with magic {magic} is "
                                             f"{len(packet)} bytes, expected {layout.size}")
    _, frame_rate, frame_count, *pwm = layout.unpack(packet)
    if frame_rate == 0:
        raise ServoPacketError("bad_frame_rate", f"servo packet frame {frame_count} has "
                                                 f"frame_rate 0 Hz: no physics step")
    return ServoPacket(frame_rate, frame_count, tuple(pwm))


def encode_servo(packet: ServoPacket) -> bytes:
    """The datagram ArduPilot would send: what tests and benchmarks play back."""
    magic = MAGIC_16 if len(packet.pwm) == 16 else MAGIC_32
    return LAYOUTS[magic].pack(magic, packet.frame_rate, packet.frame_count, *packet.pwm)


# -- state replies ------------------------------------------------------------------------


def encode_state(time_s: float, kinematics: Kinematics) -> bytes:
    """The JSON state for one physics step, framed "\\n" + json + "\\n" so that both
    ArduPilot's old line parser and its one-datagram-one-record parser read it. ValueError
    when a value is not finite: ArduPilot would parse NaN as garbage and fly on it."""
    state = {
        "timestamp": time_s,
        "imu": {"gyro": kinematics.gyro_frd, "accel_body": kinematics.specific_force_frd},
        "position": kinematics.position_ned,
        "velocity": kinematics.velocity_ned,
        "quaternion": kinematics.attitude_ned,
    }
    return b"\n" + json.dumps(state, separators=(",", ":"), allow_nan=False).encode() + b"\n"


# -- servo outputs to model inputs --------------------------------------------------------

class Mixer(Protocol):
    """Servo outputs (us, channel 1 first) and the vehicle's kinematics before the step
    -> the model's inputs."""

    @property
    def channels(self) -> tuple[int, ...]:
        """The 1-based servo outputs it reads."""
        ...

    def __call__(self, pwm: Sequence[int], kinematics: Kinematics) -> list[float]: ...


def motor_fraction(pwm: int) -> float:
    """A motor output, 1000..2000 us -> 0..1, linear; below 1000 (0: output disabled,
    as when disarmed) is off."""
    return min(max((pwm - 1000) / 1000, 0.0), 1.0)


def centred(pwm: int) -> float:
    """A steering or throttle output, 1000..2000 us -> -1..1 about 1500; 0 means "no
    output" (ArduPilot before it drives the channel) and is neutral."""
    if pwm == 0:
        return 0.0
    return min(max((pwm - 1500) / 500, -1.0), 1.0)


def _check_channels(**channels: int) -> None:
    for name, channel in channels.items():
        if not 1 <= channel <= MAX_CHANNELS:
            raise ValueError(f"{name} channel {channel} is not a servo output "
                             f"(1..{MAX_CHANNELS})")


@dataclass(frozen=True)
class QuadMixer:
    """ArduPilot QUAD X: motor i's output (SERVOn = `motors[i - 1]`, 1-based) gives
    `motor_fraction` of the motor's maximum thrust. ArduPilot's numbering is fleetbus's:
    1 front-right CCW, 2 rear-left CCW, 3 front-left CW, 4 rear-right CW."""

    max_motor_thrust_n: float
    motors: tuple[int, int, int, int] = (1, 2, 3, 4)

    def __post_init__(self) -> None:
        if len(self.motors) != 4:
            raise ValueError(f"a quad has 4 motors, got channels {self.motors}")
        _check_channels(**{f"motor {i}": c for i, c in enumerate(self.motors, 1)})

    @property
    def channels(self) -> tuple[int, ...]:
        return self.motors

    def __call__(self, pwm: Sequence[int], kinematics: Kinematics) -> list[float]:
        return [motor_fraction(pwm[c - 1]) * self.max_motor_thrust_n for c in self.motors]


class _SteerAndThrottle:
    """What ArduPilot Rover's two outputs share, for the car and the boat mixers."""

    steering: int
    throttle: int

    def __post_init__(self) -> None:
        _check_channels(steering=self.steering, throttle=self.throttle)

    @property
    def channels(self) -> tuple[int, ...]:
        return (self.steering, self.throttle)


@dataclass(frozen=True)
class RoverMixer(_SteerAndThrottle):
    """ArduPilot Rover (car steering): SERVO`steering` above 1500 steers right, which is
    negative in the bicycle's left-positive steering angle; SERVO`throttle` t in [-1, 1]
    drives like a motor with back-EMF, a = max_accel * (t - v / max_speed), so a steady
    throttle settles at t * max_speed (what ArduPilot's own SITL rover does)."""

    max_accel_mps2: float
    max_speed_mps: float
    max_steer_rad: float
    steering: int = 1
    throttle: int = 3

    def __call__(self, pwm: Sequence[int], kinematics: Kinematics) -> list[float]:
        speed = rotate_inverse(kinematics.attitude_ned, kinematics.velocity_ned)[0]
        t = centred(pwm[self.throttle - 1])
        return [self.max_accel_mps2 * (t - speed / self.max_speed_mps),
                -centred(pwm[self.steering - 1]) * self.max_steer_rad]


@dataclass(frozen=True)
class BoatMixer(_SteerAndThrottle):
    """ArduPilot Rover as a boat: SERVO`throttle` t gives a surge force of t times the
    hull's maximum ahead (t > 0) or astern (t < 0); SERVO`steering` s > 0 (right) turns
    clockwise, a negative yaw moment in the vessel's counter-clockwise-positive input."""

    ahead_force_n: float
    astern_force_n: float
    max_yaw_moment_nm: float
    steering: int = 1
    throttle: int = 3

    def __call__(self, pwm: Sequence[int], kinematics: Kinematics) -> list[float]:
        t = centred(pwm[self.throttle - 1])
        return [t * (self.ahead_force_n if t > 0 else self.astern_force_n),
                -centred(pwm[self.steering - 1]) * self.max_yaw_moment_nm]


def make_mixer(frame: str, model: Any, channels: dict[str, Any] | None = None
               ) -> QuadMixer | RoverMixer | BoatMixer:
    """The mixer of an ArduPilot frame for a model; `channels` overrides the SERVOn
    numbers (quad: `motors`; rover, boat: `steering`, `throttle`)."""
    channels = dict(channels or {})
    try:
        if frame == "quad":
            return QuadMixer(model.max_motor_thrust_n, **channels)
        if frame == "rover":
            return RoverMixer(model.max_accel_mps2, model.max_speed_mps, model.max_steer_rad,
                              **channels)
        if frame == "boat":
            lower, upper = model.input_bounds
            return BoatMixer(upper[0], -lower[0], upper[1], **channels)
    except TypeError as exc:  # an unknown channel name
        raise ValueError(f"ArduPilot frame {frame}: {exc}") from None
    raise ValueError(f"unknown ArduPilot frame {frame!r} (known: {', '.join(FRAME_KINDS)})")


# -- the protocol engine ------------------------------------------------------------------


class _Throttle:
    """Lets a kind of message through at most once per `period_s`: bad input arriving at
    the physics rate must not bury the log."""

    def __init__(self, period_s: float = LOG_PERIOD_S) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def ready(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < self.period_s:
            return False
        self._last[kind] = now
        return True


class JsonPhysics:
    """The JSON physics protocol without a transport: a servo packet in, the datagram to
    answer with out (None: nothing to send).

    One packet, one physics step of 1 / frame_rate. The same frame_count again is a
    re-send (SITL got no answer): the same reply, no step. A smaller one means SITL
    restarted: physics and time start over. A jump of more than one is a gap: counted,
    stepped once. `counters`: `packets`, `steps`, `duplicates`, `restarts`, `gaps`,
    `frames_missed`, `rate_changes` (SIM_RATE_HZ changed) and each rejection kind in
    ERRORS; `last_error` says the latest rejection.
    """

    def __init__(self, body: HilBody, mixer: Mixer) -> None:
        self.body = body
        self.mixer = mixer
        self.counters: dict[str, int] = dict.fromkeys(
            ("packets", "steps", "duplicates", "restarts", "gaps", "frames_missed",
             "rate_changes", *ERRORS), 0)
        self.last_error: str | None = None
        self._needed_channels = max(mixer.channels)
        self._throttle = _Throttle()
        self._last_frame: int | None = None
        self._reply: bytes | None = None
        self._restart_clock()

    def _restart_clock(self) -> None:
        """Physics time is steps x dt, exact, from the last frame rate change on."""
        self.time_s = 0.0
        self._dt: float | None = None
        self._time_base_s = 0.0
        self._steps_base = self.body.steps
        self._kinematics = self.body.kinematics()

    def reset(self) -> None:
        """Back to the start: SITL restarted."""
        self.body.reset()
        self._last_frame = None
        self._reply = None
        self._restart_clock()

    def handle(self, packet: bytes) -> bytes | None:
        """The answer to one datagram from SITL. Never raises: bad input is counted."""
        self.counters["packets"] += 1
        try:
            servo = decode_servo(packet)
            self._check_channel_count(servo)
        except ServoPacketError as exc:
            self._reject(exc.kind, str(exc))
            return None
        last = self._last_frame
        if last is not None:
            if servo.frame_count == last:
                self.counters["duplicates"] += 1
                return self._reply
            if servo.frame_count < last:
                self._restarted(servo.frame_count, last)
            elif servo.frame_count > last + 1:
                self.counters["gaps"] += 1
                self.counters["frames_missed"] += servo.frame_count - last - 1
        self._last_frame = servo.frame_count
        self._reply = self._step(servo)
        return self._reply

    def _check_channel_count(self, servo: ServoPacket) -> None:
        if len(servo.pwm) < self._needed_channels:
            raise ServoPacketError(
                "missing_channel", f"servo output {self._needed_channels} is mapped but the "
                f"packet has {len(servo.pwm)} channels: set SERVO_32_ENABLE = 1 in ArduPilot")

    def _restarted(self, frame_count: int, last: int) -> None:
        self.counters["restarts"] += 1
        log.info("ArduPilot restarted (frame %d after %d): physics reset", frame_count, last)
        self.reset()

    def _step(self, servo: ServoPacket) -> bytes | None:
        dt = 1.0 / servo.frame_rate
        if dt != self._dt:
            self._new_rate(dt)
        try:
            self.body.step(self.mixer(servo.pwm, self._kinematics), dt)
            self.counters["steps"] += 1
            self.time_s = self._time_base_s + (self.body.steps - self._steps_base) * dt
            self._kinematics = self.body.kinematics()
            return encode_state(self.time_s, self._kinematics)
        except (ArithmeticError, ValueError) as exc:  # the state left the real numbers
            self._reject("nonfinite_state", f"physics state at frame {servo.frame_count} "
                                            f"(t = {self.time_s} s) is not finite: {exc}")
            return None

    def _new_rate(self, dt: float) -> None:
        """SIM_RATE_HZ changed: time goes on from here at the new step, never backwards
        (ArduPilot takes a timestamp going back as a physics reset)."""
        if self._dt is not None:
            self.counters["rate_changes"] += 1
            log.info("ArduPilot frame rate now %.0f Hz", 1.0 / dt)
        self._dt = dt
        self._time_base_s = self.time_s
        self._steps_base = self.body.steps

    def _reject(self, kind: str, message: str) -> None:
        self.counters[kind] += 1
        self.last_error = message
        if self._throttle.ready(kind):
            log.warning("%s (%d so far)", message, self.counters[kind])


# -- the UDP server -----------------------------------------------------------------------


class ArduPilotBackend:
    """JsonPhysics on a UDP socket: answers each servo packet to the address it came
    from (so SITL needs no target), and warns when SITL goes silent for `silence_s` of
    wall time (once per silence; again when it comes back), since a lockstep physics
    that just waits looks exactly like a hung one.

    `port` None binds SITL's port for `instance`; 0 binds an ephemeral one (`port` then
    says which). `counters`: `sent`, `send_errors`, `recv_errors`, `silences`, `resumed`.
    """

    def __init__(self, physics: JsonPhysics, host: str = "127.0.0.1", port: int | None = None,
                 instance: int = 0, silence_s: float = DEFAULT_SILENCE_S) -> None:
        if not silence_s > 0:
            raise ValueError(f"silence_s must be positive, got {silence_s}")
        self.physics = physics
        self.silence_s = silence_s
        self.counters: dict[str, int] = dict.fromkeys(
            ("sent", "send_errors", "recv_errors", "silences", "resumed"), 0)
        self.silent = False
        self.peer: tuple[str, int] | None = None
        port = sitl_port(instance) if port is None else port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:  # most often another physics backend holds the port
            self.sock.close()
            raise OSError(exc.errno, f"ArduPilot backend cannot bind UDP {host}:{port}: "
                                     f"{exc.strerror}") from exc
        self.host, self.port = self.sock.getsockname()[:2]
        self._timeout: float | None = None
        self._last_heard = time.monotonic()
        self._throttle = _Throttle()

    def poll_once(self, timeout: float) -> bool:
        """Answers one packet if one arrives within `timeout` s; False when none did."""
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout
        try:
            packet, addr = self.sock.recvfrom(4096)  # longer than any servo packet
        except TimeoutError:
            self._watch()
            return False
        except OSError as exc:
            self._error("recv_errors", f"receiving from SITL: {exc}")
            return False
        self._heard(addr)
        reply = self.physics.handle(packet)
        if reply is not None:
            self._send(reply, addr)
        return True

    def serve(self, stop: threading.Event) -> None:
        """Answers SITL until `stop` is set (checked several times per silence_s)."""
        timeout = min(0.1, self.silence_s / 4)
        while not stop.is_set():
            self.poll_once(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ArduPilotBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(reply, addr)
            self.counters["sent"] += 1
        except OSError as exc:
            self._error("send_errors", f"answering SITL at {addr[0]}:{addr[1]}: {exc}")

    def _heard(self, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if self.silent:
            self.silent = False
            self.counters["resumed"] += 1
            log.info("ArduPilot SITL is back after %.1f s of silence", now - self._last_heard)
        if addr != self.peer:
            log.info("ArduPilot SITL at %s:%d", *addr)
            self.peer = addr
        self._last_heard = now

    def _watch(self) -> None:
        silence = time.monotonic() - self._last_heard
        if self.silent or silence < self.silence_s:
            return
        self.silent = True
        self.counters["silences"] += 1
        waiting = "for the first servo packet" if self.peer is None else "since its last packet"
        log.warning("no servo packet from ArduPilot SITL on %s:%d for %.1f s, waiting %s "
                    "(is SITL running with --model JSON:<this host>?)",
                    self.host, self.port, silence, waiting)

    def _error(self, kind: str, message: str) -> None:
        self.counters[kind] += 1
        if self._throttle.ready(kind):
            log.warning("%s (%d so far)", message, self.counters[kind])


# -- factories ----------------------------------------------------------------------------


def make_physics(frame: str, params: dict[str, Any] | None = None,
                 start: dict[str, float] | None = None,
                 channels: dict[str, Any] | None = None) -> JsonPhysics:
    """The protocol engine for an ArduPilot frame ("quad", "rover" or "boat"): `params`
    override the model's, `start` is the pose {x, y, z, yaw} (ENU m, rad)."""
    if frame not in FRAME_KINDS:
        raise ValueError(f"unknown ArduPilot frame {frame!r} "
                         f"(known: {', '.join(FRAME_KINDS)})")
    body = HilBody(FRAME_KINDS[frame], params, start)
    return JsonPhysics(body, make_mixer(frame, body.model, channels))


def make_backend(frame: str, params: dict[str, Any] | None = None,
                 start: dict[str, float] | None = None, instance: int = 0,
                 host: str = "127.0.0.1", port: int | None = None,
                 channels: dict[str, Any] | None = None,
                 silence_s: float = DEFAULT_SILENCE_S) -> ArduPilotBackend:
    """A bound UDP backend for an ArduPilot frame; run it with `serve(stop)`."""
    return ArduPilotBackend(make_physics(frame, params, start, channels), host, port,
                            instance, silence_s)
