"""The simulator on the bus: physics, sensors and the sim clock for a mix of vehicles.

Parameters: `vehicles` (a list of {id, type, start: {x, y, z, yaw}, params}), `seed`,
`physics_rate_hz`, `mode` (realtime | lockstep), `speed` (realtime: 1 = real time, k = k
times faster), `command_timeout_s`, `imu_rate_hz`, `gnss_rate_hz`, `state_rate_hz`, origin
latitude/longitude/altitude; for lockstep `control_rate_hz`, `lockstep_vehicles` (whose
controllers are awaited; default all), `lockstep_timeout_s` (wall) and `lockstep_policy`
(continue | hold).

Lockstep: the simulator starts once every awaited controller is connected, then advances
one control period at a time — only after each awaited vehicle has sent a command stamped
at or after the current sim time. A run is then the same every time, and as fast as the
controllers allow.
Topics per vehicle: `/<id>/cmd` in (QuadrotorCommand, ShipCommand or CarCommand),
`/<id>/state` (VehicleState, ground truth), `/<id>/imu`, `/<id>/gnss`, `/<id>/heading`
and `/<id>/baro` (drones), `/<id>/wheel_speed` (cars) or `/<id>/speed_log` (ships) out;
`/clock` out.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from fleetbus.bus.node import Node
from fleetbus.messages import (
    BaroAltitude,
    CarCommand,
    Clock,
    GnssFix,
    Header,
    Heading,
    Imu,
    Pose,
    QuadrotorCommand,
    Quaternion,
    ShipCommand,
    SpeedLog,
    Twist,
    Vector3,
    VehicleState,
    WheelSpeed,
)
from fleetbus.sim_bridge.sensors import GnssModel, ImuModel, ScalarNoise, true_yaw
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model
from fleetbus.sim_bridge.world import CommandRejected, World

COMMANDS = {"quadrotor": QuadrotorCommand, "vessel": ShipCommand, "car": CarCommand}
AUX_TOPIC = {"quadrotor": ("baro", BaroAltitude), "vessel": ("speed_log", SpeedLog),
             "car": ("wheel_speed", WheelSpeed)}


def command_vector(msg: Any) -> list[float]:
    if isinstance(msg, QuadrotorCommand):
        return [msg.thrust_n, msg.body_rates.x, msg.body_rates.y, msg.body_rates.z]
    if isinstance(msg, ShipCommand):
        return [msg.surge_force_n, msg.yaw_moment_nm]
    return [msg.acceleration_mps2, msg.steering_rad]


def vehicle_state(vehicle: SimVehicle, stamp_ns: int) -> VehicleState:
    x = vehicle.state.tolist()  # Python floats: numpy scalars would cost an encoder hook each
    if vehicle.kind == "quadrotor":
        pose = Pose(position=Vector3(x=x[0], y=x[1], z=x[2]),
                    orientation=Quaternion(w=x[6], x=x[7], y=x[8], z=x[9]))
        twist = Twist(linear=Vector3(x=x[3], y=x[4], z=x[5]))
    else:
        yaw = x[2]
        cos, sin = math.cos(yaw), math.sin(yaw)
        pose = Pose(position=Vector3(x=x[0], y=x[1]),
                    orientation=Quaternion(w=math.cos(yaw / 2), z=math.sin(yaw / 2)))
        vx, vy = (x[3] * cos, x[3] * sin) if vehicle.kind == "car" else (
            x[3] * cos - x[4] * sin, x[3] * sin + x[4] * cos)
        twist = Twist(linear=Vector3(x=vx, y=vy))
    return VehicleState(header=Header(stamp_ns=stamp_ns, frame_id="map"),
                        vehicle_id=vehicle.id, vehicle_type=vehicle.kind, pose=pose,
                        twist=twist)


class Simulator(Node):
    def setup(self) -> None:
        specs = self.param("vehicles", [], "list of {id, type, start, params}").value
        rng_seed = self.param("seed", 0, "noise seed: the same seed gives the same run").value
        rate = self.param("physics_rate_hz", 100.0).value
        self.speed = self.param("speed", 1.0, "simulated seconds per wall second").value
        timeout = self.param("command_timeout_s", 0.5).value
        self.imu_every = max(1, round(rate / self.param("imu_rate_hz", 100.0).value))
        self.gnss_every = max(1, round(rate / self.param("gnss_rate_hz", 5.0).value))
        self.state_every = max(1, round(rate / self.param("state_rate_hz", 50.0).value))
        self.aux_every = max(1, round(rate / self.param("aux_rate_hz", 10.0).value))
        self.heading_noise = ScalarNoise(self.param("heading_sigma_rad", 0.01).value)
        self.baro_noise = ScalarNoise(self.param("baro_sigma_m", 0.3).value)
        self.speed_noise = ScalarNoise(self.param("speed_sigma_mps", 0.05).value)
        self.gnss = GnssModel(self.param("origin_lat_deg", 59.9).value,
                              self.param("origin_lon_deg", 10.7).value,
                              self.param("origin_alt_m", 0.0).value)
        if not specs:
            raise ValueError("simulator: parameter 'vehicles' lists no vehicle")
        vehicles = []
        for spec in specs:
            if not isinstance(spec, dict) or not spec.get("id"):
                raise ValueError(f"simulator: vehicle entry {spec!r} needs an id and a type")
            kind = spec.get("type")
            model = make_model(kind, spec.get("params"))
            vehicles.append(SimVehicle(spec["id"], kind, model,
                                       initial_state(kind, model, spec.get("start", {}))))
        self.world = World(vehicles, 1.0 / rate, timeout)
        self.rng = np.random.default_rng(rng_seed)
        self.imus = {v.id: ImuModel() for v in vehicles}
        self.clock_pub = self.publisher("/clock", Clock, latched=True)  # late joiners: now
        self.outputs = {}
        for v in vehicles:
            self.outputs[v.id] = (self.publisher(f"/{v.id}/state", VehicleState),
                                  self.publisher(f"/{v.id}/imu", Imu),
                                  self.publisher(f"/{v.id}/gnss", GnssFix),
                                  self.publisher(f"/{v.id}/heading", Heading),
                                  self.publisher(f"/{v.id}/{AUX_TOPIC[v.kind][0]}",
                                                 AUX_TOPIC[v.kind][1]))
            self.subscribe(f"/{v.id}/cmd", COMMANDS[v.kind],
                           lambda msg, vid=v.id: self.on_command(vid, msg))
        self.mode = self.param("mode", "realtime", "realtime | lockstep").value
        if self.mode == "lockstep":
            self._setup_lockstep(rate, [v.id for v in vehicles])
        elif self.mode == "realtime":
            # Wall-clock ticks of at most 10 ms; each advances `speed` times as much.
            self.steps_per_tick = max(1, round(self.speed * rate * 0.01))
            self.timer(self.steps_per_tick / (rate * self.speed), self.tick)
        else:
            raise ValueError(f"simulator: mode must be realtime or lockstep, not {self.mode!r}")

    def _setup_lockstep(self, rate: float, vehicle_ids: list[str]) -> None:
        control_rate = self.param("control_rate_hz", 20.0).value
        self.steps_per_tick = max(1, round(rate / control_rate))
        self.awaited = self.param("lockstep_vehicles", vehicle_ids).value
        unknown = set(self.awaited) - set(vehicle_ids)
        if unknown:
            raise ValueError(f"simulator: lockstep_vehicles names unknown {sorted(unknown)}")
        self.lockstep_timeout_s = self.param("lockstep_timeout_s", 1.0).value
        self.lockstep_policy = self.param("lockstep_policy", "continue").value
        self.waiting: set[str] | None = None  # None: not started (controllers connecting)
        self.waiting_since = 0.0
        self.lockstep_timeouts = 0
        self.timer(0.01, self._lockstep_watchdog)  # wall time: the node follows no /clock

    def on_command(self, vehicle_id: str, msg: Any) -> None:
        try:
            self.world.command(vehicle_id, command_vector(msg))
        except CommandRejected as exc:
            self._count("rejected_command", str(exc))
            return
        if self.mode == "lockstep" and self.waiting is not None:
            if msg.header.stamp_ns >= self._clock_ns():
                self.waiting.discard(vehicle_id)
            if not self.waiting:
                self._advance()

    def _clock_ns(self) -> int:
        return round(self.world.time_s * 1e9)

    def _advance(self) -> None:
        """One control period of physics, then the new time; wait for the answers."""
        self.tick()
        self.waiting = set(self.awaited)
        self.waiting_since = time.monotonic()

    def _lockstep_watchdog(self) -> None:
        if self.waiting is None:
            connected = all(sub.publishers for sub in self._subscriptions
                            if sub.topic.endswith("/cmd")
                            and sub.topic.split("/")[1] in self.awaited)
            if connected and self.clock_pub.subscribers >= 1:
                self._advance()  # nothing is expected at time zero: start
            return
        if time.monotonic() - self.waiting_since > self.lockstep_timeout_s:
            self.lockstep_timeouts += 1
            self._count("lockstep_timeout", f"no command from {sorted(self.waiting)} within "
                        f"{self.lockstep_timeout_s} s at sim time {self.world.time_s:.3f} s; "
                        f"policy: {self.lockstep_policy}")
            if self.lockstep_policy == "continue":
                self._advance()
            else:
                self.waiting_since = time.monotonic()

    def tick(self) -> None:
        for _ in range(self.steps_per_tick):
            self.world.step()
            self._sense()
        self.clock_pub.publish(Clock(stamp_ns=round(self.world.time_s * 1e9)))

    def _sense(self) -> None:
        step, stamp = self.world.steps, round(self.world.time_s * 1e9)
        for v in self.world.vehicles.values():
            state_pub, imu_pub, gnss_pub, heading_pub, aux_pub = self.outputs[v.id]
            u = v.command if v.command is not None else v.safe_command()
            if step % self.state_every == 0:
                state_pub.publish(vehicle_state(v, stamp))
            if step % self.imu_every == 0:
                force, rate = (a.tolist() for a in
                               self.imus[v.id].measure(v, u, self.world.dt, self.rng))
                imu_pub.publish(Imu(header=Header(stamp_ns=stamp, frame_id=f"{v.id}/base"),
                                    angular_velocity=Vector3(x=rate[0], y=rate[1], z=rate[2]),
                                    linear_acceleration=Vector3(x=force[0], y=force[1],
                                                                z=force[2])))
            if step % self.aux_every == 0:
                self._aux(v, stamp, heading_pub, aux_pub)
            if step % self.gnss_every == 0:
                lat, lon, alt = self.gnss.measure(v, self.rng)
                sigma2 = self.gnss.horizontal_sigma_m ** 2
                gnss_pub.publish(GnssFix(header=Header(stamp_ns=stamp, frame_id=f"{v.id}/gnss"),
                                         latitude_deg=lat, longitude_deg=lon, altitude_m=alt,
                                         fix_type=3, satellites=12,
                                         position_covariance=[sigma2, 0, 0, 0, sigma2, 0, 0, 0,
                                                              self.gnss.vertical_sigma_m ** 2]))

    def _aux(self, v: SimVehicle, stamp: int, heading_pub: Any, aux_pub: Any) -> None:
        """Heading for every vehicle, and the vehicle type's own speed or height sensor."""
        header = Header(stamp_ns=stamp, frame_id=f"{v.id}/base")
        yaw = float(self.heading_noise.measure(true_yaw(v), self.rng))
        heading_pub.publish(Heading(header=header, yaw_rad=math.remainder(yaw, math.tau),
                                    variance=self.heading_noise.sigma ** 2))
        if v.kind == "quadrotor":
            altitude = float(self.baro_noise.measure(v.state[2], self.rng))
            aux_pub.publish(BaroAltitude(header=header, altitude_m=altitude,
                                         variance=self.baro_noise.sigma ** 2))
        elif v.kind == "car":
            speed = float(self.speed_noise.measure(v.state[3], self.rng))
            aux_pub.publish(WheelSpeed(header=header, speed_mps=speed,
                                       variance=self.speed_noise.sigma ** 2))
        else:
            surge, sway = self.speed_noise.measure(v.state[3:5], self.rng).tolist()
            aux_pub.publish(SpeedLog(header=header, surge_mps=surge, sway_mps=sway,
                                     variance=self.speed_noise.sigma ** 2))
