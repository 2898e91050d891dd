"""The simulator on the bus: physics, sensors, faults and the sim clock for a mix of
vehicles.

Parameters: `vehicles` (a list of {id, type, start: {x, y, z, yaw}, params}), `seed`,
`physics_rate_hz`, `mode` (realtime | scaled | lockstep), `speed` (scaled: simulated
seconds per wall second), `command_timeout_s`, sensor rates, noise and `gnss_latency_s`,
origin latitude/longitude/altitude, and a fault plan: `fault_plan` (a YAML file) and/or
`faults` (the same list inline; see fleetbus.sim_bridge.faults); for lockstep `control_rate_hz`,
`lockstep_vehicles` (whose controllers are awaited; default all), `lockstep_topics`
(more topics to await, e.g. an estimator's output) and `lockstep_vehicle_topics` (the
same for every awaited vehicle, relative to /<id>), `lockstep_timeout_s`
(wall), `lockstep_startup_timeout_s` (wall, while a controller says it is not ready),
`lockstep_await_sensors` (start only once every sensor of the awaited vehicles has a
reader), `lockstep_await_nodes` (start only once each of these nodes, say a recorder of
every topic, subscribes to every topic of the graph and is linked to all its publishers)
and `lockstep_policy` (continue | hold).

Lockstep: the simulator starts once every awaited controller is connected, then advances
one control period at a time — only after each awaited vehicle has sent a command (and
each awaited topic a message) stamped at or after the current sim time. A run is then
the same every time, and as fast as the controllers allow. Controllers should publish
their commands `latched`: a command sent while the link to the simulator is still
forming is then re-sent when it forms, not lost (a lost one costs a lockstep timeout,
and the run its reproducibility).
Topics per vehicle: `/<id>/cmd` in (QuadrotorCommand, ShipCommand or CarCommand) and
`/<id>/cmd_failsafe` in (the same type, from a geofence guard: while it speaks, `/cmd`
is ignored and counted), `/<id>/control` in (lockstep: a controller's Diagnostic with
`command: none` answers a step it chose not to command; with `ready: false` as well the
step waits for it without a timeout),
`/<id>/state` (VehicleState, ground truth), `/<id>/imu`, `/<id>/gnss`, `/<id>/heading`
and `/<id>/baro` (drones), `/<id>/wheel_speed` (cars) or `/<id>/speed_log` (ships) out;
`/clock` and `/events` (every fault start and end) out.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleetbus.bus.introspect import HIDDEN_PREFIX
from fleetbus.bus.node import Node
from fleetbus.bus.pubsub import Publisher
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.messages import (
    BaroAltitude,
    Clock,
    Diagnostic,
    Event,
    GnssFix,
    Header,
    Heading,
    Imu,
    Message,
    Pose,
    Quaternion,
    SpeedLog,
    Twist,
    Vector3,
    VehicleState,
    WheelSpeed,
)
from fleetbus.nodes.conversions import COMMANDS, command_vector
from fleetbus.sim_bridge.faults import DelayLine, Fault, FaultInjector, load_plan
from fleetbus.sim_bridge.sensing import SensorSettings, SensorSuite
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model
from fleetbus.sim_bridge.world import CommandRejected, World

SENSOR_CHECK_S = 0.1  # how often the start asks the registry who reads the sensors


@dataclass
class Output:
    """Where one vehicle's sensor readings go: its message and publisher."""

    build: Callable[[Header, list[float]], Message]
    publisher: Publisher


def _diagonal(variances: list[float]) -> list[float]:
    """A row-major 3x3 covariance with these variances on its diagonal."""
    a, b, c = variances
    return [a, 0.0, 0.0, 0.0, b, 0.0, 0.0, 0.0, c]


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
        seed = self.param("seed", 0, "noise seed: the same seed gives the same run").value
        rate = self.param("physics_rate_hz", 100.0).value
        timeout = self.param("command_timeout_s", 0.5).value
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
        # Two streams from one seed: a fault plan does not change the sensors' noise.
        self.rng, fault_rng = (np.random.default_rng(s)
                               for s in np.random.SeedSequence(seed).spawn(2))
        kinds = {v.id: v.kind for v in vehicles}
        plan_file = self.param("fault_plan", "", "YAML file of faults").value
        plan = load_plan(Path(plan_file), kinds) if plan_file else []
        plan += load_plan(self.param("faults", [], "faults given inline").value, kinds,
                          first_index=len({f.index for f in plan}))
        self.faults = FaultInjector(plan, fault_rng)
        self.delayed = DelayLine()
        self.state_every = max(1, round(rate / self.param("state_rate_hz", 50.0).value))
        self.clock_pub = self.publisher("/clock", Clock, latched=True)  # late joiners: now
        self.events = self.publisher("/events", Event, depth=1000)
        self.state_pubs = {v.id: self.publisher(f"/{v.id}/state", VehicleState)
                           for v in vehicles}
        defaults = SensorSettings()
        settings = SensorSettings(**{name: self.param(name, getattr(defaults, name)).value
                                     for name in SensorSettings.names()})
        self.suites = {v.id: SensorSuite(v, self.world.dt, settings) for v in vehicles}
        self.outputs = {v.id: self._outputs(v, self.suites[v.id]) for v in vehicles}
        for v in vehicles:
            self.subscribe(f"/{v.id}/cmd", COMMANDS[v.kind],
                           lambda msg, vid=v.id: self.on_command(vid, msg))
            self.subscribe(f"/{v.id}/cmd_failsafe", COMMANDS[v.kind],
                           lambda msg, vid=v.id: self.on_command(vid, msg, override=True))
        self.mode = self.param("mode", "realtime", "realtime | scaled | lockstep").value
        self.speed = self.param("speed", 1.0, "scaled: simulated seconds per wall second").value
        if self.mode == "lockstep":
            self._setup_lockstep(rate, [v.id for v in vehicles])
        elif self.mode in ("realtime", "scaled"):
            if self.mode == "realtime" and self.speed != 1.0:
                raise ValueError(f"simulator: speed {self.speed} needs mode 'scaled'")
            if not self.speed > 0:
                raise ValueError(f"simulator: speed must be positive, got {self.speed}")
            # Wall-clock ticks of at most 10 ms; each advances `speed` times as much.
            self.steps_per_tick = max(1, round(self.speed * rate * 0.01))
            self.timer(self.steps_per_tick / (rate * self.speed), self.tick)
        else:
            raise ValueError(f"simulator: mode must be realtime, scaled or lockstep, "
                             f"not {self.mode!r}")

    def _outputs(self, v: SimVehicle, suite: SensorSuite) -> dict[str, Output]:
        """A message and a topic for each sensor of one vehicle."""
        var = {sensor.name: sensor.variance for sensor in suite.sensors}

        def publisher(name: str, msg_type: type[Message]) -> Publisher:
            return self.publisher(f"/{v.id}/{name}", msg_type)

        def gnss(header: Header, enu: list[float]) -> GnssFix:
            lat, lon, alt = suite.gnss.geodetic(enu)
            h, _, up = var["gnss"]
            return GnssFix(header=Header(stamp_ns=header.stamp_ns, frame_id=f"{v.id}/gnss"),
                           latitude_deg=lat, longitude_deg=lon, altitude_m=alt, fix_type=3,
                           satellites=12, position_covariance=[h, 0, 0, 0, h, 0, 0, 0, up])

        outputs = {
            "imu": Output(lambda h, r: Imu(
                header=h, linear_acceleration=Vector3(x=r[0], y=r[1], z=r[2]),
                angular_velocity=Vector3(x=r[3], y=r[4], z=r[5]),
                linear_acceleration_covariance=_diagonal(var["imu"][:3]),
                angular_velocity_covariance=_diagonal(var["imu"][3:])), publisher("imu", Imu)),
            "gnss": Output(gnss, publisher("gnss", GnssFix)),
            "heading": Output(lambda h, r: Heading(
                header=h, yaw_rad=math.remainder(r[0], math.tau), variance=var["heading"][0]),
                publisher("heading", Heading)),
        }
        if v.kind == "quadrotor":
            outputs["baro"] = Output(lambda h, r: BaroAltitude(
                header=h, altitude_m=r[0], variance=var["baro"][0]),
                publisher("baro", BaroAltitude))
        elif v.kind == "car":
            outputs["wheel_speed"] = Output(lambda h, r: WheelSpeed(
                header=h, speed_mps=r[0], variance=var["wheel_speed"][0]),
                publisher("wheel_speed", WheelSpeed))
        else:
            outputs["speed_log"] = Output(lambda h, r: SpeedLog(
                header=h, surge_mps=r[0], sway_mps=r[1], variance=var["speed_log"][0]),
                publisher("speed_log", SpeedLog))
        return outputs

    def _setup_lockstep(self, rate: float, vehicle_ids: list[str]) -> None:
        control_rate = self.param("control_rate_hz", 20.0).value
        self.steps_per_tick = max(1, round(rate / control_rate))
        vehicles = self.param("lockstep_vehicles", vehicle_ids).value
        unknown = set(vehicles) - set(vehicle_ids)
        if unknown:
            raise ValueError(f"simulator: lockstep_vehicles names unknown {sorted(unknown)}")
        extra = self.param("lockstep_topics", [], "other topics a step waits for, e.g. an "
                                                  "estimator's output").value
        per_vehicle = self.param("lockstep_vehicle_topics", [], "the same per awaited "
                                 "vehicle, relative to /<id>: e.g. odometry").value
        extra = extra + [f"/{v}/{topic}" for v in vehicles for topic in per_vehicle]
        for topic in extra:
            self.subscribe(topic, None, lambda msg, t=topic: self._answered(
                t, msg.header.source_stamp_ns))
        # A step is complete when each of these topics has a message stamped at or after it.
        # The extra topics join once they first speak: an estimator that is not ready yet
        # has nothing to say, and must not stall the run.
        self.awaited = [f"/{v}/cmd" for v in vehicles]
        for v in vehicles:  # a controller that decides not to command says so
            self.subscribe(f"/{v}/control", Diagnostic,
                           lambda msg, v=v: self._declined(v, msg), depth=100)
        self.joining = set(extra)
        self.lockstep_timeout_s = self.param("lockstep_timeout_s", 1.0).value
        self.startup_timeout_s = self.param("lockstep_startup_timeout_s", 300.0, "wall s a "
                                            "controller not ready yet may hold a step").value
        self.preparing: set[str] = set()  # vehicles whose controllers are not ready yet
        self.lockstep_policy = self.param("lockstep_policy", "continue").value
        self.await_sensors = bool(self.param(
            "lockstep_await_sensors", False, "start only once each of the awaited vehicles' "
            "sensors has a reader (an estimator that joins late starts from other readings, "
            "and the run does not repeat)").value)
        self.await_nodes = list(self.param(
            "lockstep_await_nodes", [], "start only once these nodes subscribe to every "
            "topic and are linked to all its publishers (a recorder misses nothing)").value)
        self.awaited_vehicles = vehicles
        self.sensors_checked = -math.inf
        self.waiting: set[str] | None = None  # None: not started (controllers connecting)
        self.waiting_since = 0.0
        self.lockstep_timeouts = 0
        self.timer(0.01, self._lockstep_watchdog)  # wall time: the node follows no /clock

    def on_command(self, vehicle_id: str, msg: Any, override: bool = False) -> None:
        lost = self.faults.link_lost(vehicle_id, self.world.time_s)
        if lost is not None:  # the command never arrives: the vehicle goes stale, safely
            lost.affected += 1
        else:
            try:
                self.world.command(vehicle_id, command_vector(msg), override)
            except CommandRejected as exc:
                self._count("rejected_command", str(exc))
                return
        if self.mode == "lockstep" and not override:
            self.preparing.discard(vehicle_id)
            self._answered(f"/{vehicle_id}/cmd", msg.header.stamp_ns)  # link or not

    def _declined(self, vehicle_id: str, msg: Diagnostic) -> None:
        """A controller's tick that ended without a command (no estimate yet, its solver
        still building, a failsafe in charge) answers the step as a command would: the
        vehicle then runs on its safe command instead of the run stalling for the
        lockstep timeout. Only a tick without a command says so, so no command can be
        overtaken by its own report."""
        if msg.values.get("command") != "none":
            return
        if msg.values.get("ready") == "false":
            # alive but not ready to steer (its solver is being built, which can take
            # tens of seconds the first time): the world waits for it, up to the
            # startup timeout rather than the step's
            if msg.header.stamp_ns >= self._clock_ns():
                self.preparing.add(vehicle_id)
            return
        self.preparing.discard(vehicle_id)
        self._answered(f"/{vehicle_id}/cmd", msg.header.stamp_ns)

    def _answered(self, topic: str, stamp_ns: int) -> None:
        if topic in self.joining:
            self.joining.discard(topic)
            self.awaited.append(topic)
        if self.waiting is None:
            return
        if stamp_ns >= self._clock_ns():
            self.waiting.discard(topic)
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
                            if sub.topic in self.awaited or sub.topic in self.joining)
            if connected and self.clock_pub.subscribers >= 1 and self._sensors_read():
                self._advance()  # nothing is expected at time zero: start
            return
        timeout = self.startup_timeout_s if self.preparing else self.lockstep_timeout_s
        if time.monotonic() - self.waiting_since > timeout:
            self.lockstep_timeouts += 1
            self.preparing.clear()
            self._count("lockstep_timeout", f"nothing on {sorted(self.waiting)} within "
                        f"{timeout} s at sim time {self.world.time_s:.3f} s; "
                        f"policy: {self.lockstep_policy}")
            if self.lockstep_policy == "continue":
                self._advance()
            else:
                self.waiting_since = time.monotonic()

    def _sensors_read(self) -> bool:
        """With `lockstep_await_sensors`: whether every subscription the registry lists for
        an awaited vehicle's sensors has joined (an estimator that joined late would start
        from other readings, and the run would not repeat). Asked before the start only,
        once the awaited nodes are linked, so their subscriptions are registered too."""
        if not (self.await_sensors or self.await_nodes):
            return True
        if time.monotonic() < self.sensors_checked + SENSOR_CHECK_S:
            return False
        self.sensors_checked = time.monotonic()
        graph = fetch_graph(self.config, SENSOR_CHECK_S)
        if graph is None:
            return False
        readers = collections.Counter(s.topic for n in graph.nodes for s in n.subscriptions)
        return all(out.publisher.subscribers >= readers[out.publisher.topic]
                   for v in self.awaited_vehicles for out in self.outputs[v].values()
                   if self.await_sensors) and self._linked(graph)

    def _linked(self, graph: Any) -> bool:
        """Whether each awaited node subscribes to every topic the graph's (visible) nodes
        publish, linked to each of its publishers."""
        publishers = collections.Counter(
            pub.topic for n in graph.nodes if not n.name.startswith(HIDDEN_PREFIX)
            for pub in n.publishers)
        nodes = {n.name: n for n in graph.nodes}
        for name in self.await_nodes:
            node = nodes.get(name)
            if node is None:
                return False
            linked = {s.topic: s.publishers for s in node.subscriptions}
            if any(linked.get(topic, 0) < count for topic, count in publishers.items()):
                return False
        return True

    def tick(self) -> None:
        for _ in range(self.steps_per_tick):
            self.world.step()
            self._announce_faults()
            self._sense()
        self.clock_pub.publish(Clock(stamp_ns=self._clock_ns()))

    def _sense(self) -> None:
        step, t, stamp = self.world.steps, self.world.time_s, self._clock_ns()
        for v in self.world.vehicles.values():
            if step % self.state_every == 0 and self.state_pubs[v.id].subscribers:
                self.state_pubs[v.id].publish(vehicle_state(v, stamp))
            lost = self.faults.link_lost(v.id, t) is not None
            outputs = self.outputs[v.id]
            # Read even when nothing is sent: the noise stream must depend on the seed only.
            for sensor, reading in self.suites[v.id].sample(step, t, self.rng):
                out = None if lost else self.faults.apply(v.id, sensor.name, t, reading.values)
                output = outputs[sensor.name]
                if out is None or not output.publisher.subscribers:
                    continue
                values, delay = out
                msg = output.build(Header(stamp_ns=stamp, frame_id=f"{v.id}/base"), values)
                if delay + sensor.latency_s > 0:  # stamped when measured, sent when due
                    self.delayed.push(t + delay + sensor.latency_s,
                                      lambda pub=output.publisher, msg=msg: pub.publish(msg))
                else:
                    output.publisher.publish(msg)
        self.delayed.release(t)

    def _announce_faults(self) -> None:
        for fault, change in self.faults.transitions(self.world.time_s):
            self.events.publish(fault_event(fault, change, self._clock_ns(), self.name))
            self.log.info("%s: fault %d (%s on %s) %s at sim time %.3f s", self.name,
                          fault.index, fault.name, fault.target,
                          "starts" if change == "start" else "ends", self.world.time_s)

    def teardown(self) -> None:
        """The end-of-run summary of the fault plan, in the log."""
        for row in self.faults.summary():
            self.log.info("%s: fault %d %s on %s, %.3f-%s s: %s, %d readings/commands "
                          "affected", self.name, row["index"], row["type"], row["target"],
                          row["start_s"], f"{row['end_s']:.3f}" if math.isfinite(row["end_s"])
                          else "end", "ended" if row["ended"] else
                          "active at the end" if row["started"] else "never started",
                          row["affected"])
        for v in self.world.vehicles.values():
            if v.overridden_commands:
                self.log.info("%s: %s: %d controller commands ignored under a failsafe",
                              self.name, v.id, v.overridden_commands)
        super().teardown()


def fault_event(fault: Fault, change: str, stamp_ns: int, source: str) -> Event:
    return Event(header=Header(stamp_ns=stamp_ns), source=source, kind=f"fault_{change}",
                 severity="warn", message=f"fault {fault.index} ({fault.name}) on "
                 f"{fault.target} {'starts' if change == 'start' else 'ends'}",
                 data={"index": str(fault.index), "type": fault.type, "name": fault.name,
                       "vehicle_id": fault.vehicle, "sensor": fault.sensor or "",
                       "affected": str(fault.affected)})
