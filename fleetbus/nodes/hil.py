"""An autopilot in the loop, on the bus: the node serves one vehicle's physics to a PX4
(simulator MAVLink API, TCP or serial) or ArduPilot (SITL JSON, UDP) autopilot and puts
what happens on the bus, so recording, monitoring and the MAVLink ground-station face see
a HIL vehicle as they see a simulated one.

The adapter runs in its own thread at the autopilot's pace (lockstep); the node only
samples it. Parameters: `vehicle_id`, `vehicle_type` (quadrotor for PX4; quadrotor, car or
vessel for ArduPilot, as its quad, rover or boat frame), `protocol` (px4 | ardupilot),
`instance`, `host`, `port` (default the protocol's for the instance; 0 = any free one),
`serial` and `baud` (PX4 on a serial line), `start` {x, y, z, yaw}, `model` (the model's
parameters), `state_rate_hz`, and per protocol `physics_dt_s`, `watchdog_s`,
`watchdog_policy` (PX4) or `silence_s` (ArduPilot).
Topics: `/<id>/state` (VehicleState: ground truth, ENU) at `state_rate_hz`; `/diagnostics`
(1 Hz: the adapter's counters, its endpoint and its latest error); `/events` (a `hil`
Event whenever an error or watchdog counter grows).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fleetbus.messages import Diagnostic, Header, VehicleState
from fleetbus.nodes.simulator import vehicle_state
from fleetbus.nodes.vehicle_node import VehicleNode

FRAMES = {"quadrotor": "quad", "car": "rover", "vessel": "boat"}  # ArduPilot's
# counters that mean trouble: each increase is an Event
TROUBLE = ("bad_crc", "garbage", "bad_controls", "stale_actuators", "watchdog_timeouts",
           "disconnects", "bad_magic", "bad_length", "bad_frame_rate", "missing_channel",
           "nonfinite_state", "gaps", "restarts", "silences", "recv_errors", "send_errors")


class HilNode(VehicleNode):
    def setup(self) -> None:
        self.vehicle_params("serve to the autopilot", FRAMES)
        protocol = self.param("protocol", "px4", "px4 | ardupilot").value
        start = self.param("start", {}, "start pose {x, y, z, yaw}, ENU m and rad").value
        model = self.param("model", {}, "the model's parameters").value or None
        if protocol == "px4":
            self._serve, self.body, self.endpoint, self._counters, self._error = self._px4(
                start, model)
        elif protocol == "ardupilot":
            self._serve, self.body, self.endpoint, self._counters, self._error = (
                self._ardupilot(start, model))
        else:
            raise ValueError(f"{self.name}: unknown protocol {protocol!r} (px4 | ardupilot)")
        self.body.vehicle.id = self.vehicle
        self.protocol = protocol
        self._halt = threading.Event()
        self._adapter = threading.Thread(target=self._serve, args=(self._halt,),
                                        name=f"{self.name}-{protocol}", daemon=True)
        self._adapter.start()
        self.state = self.publisher(f"/{self.vehicle}/state", VehicleState)
        self.diagnostics = self.publisher("/diagnostics", Diagnostic, depth=100)
        self._reported: dict[str, int] = {}
        self.timer(1.0 / float(self.param("state_rate_hz", 50.0, "Hz").value), self._publish)
        self.timer(1.0, self._diagnose)

    def _px4(self, start: dict, model: dict | None) -> tuple[Any, ...]:
        from fleetbus.sim_bridge.px4 import BASE_PORT, Px4Settings, make_simulator

        if self.kind != "quadrotor":
            raise ValueError(f"{self.name}: PX4's simulator protocol flies a quadrotor, "
                             f"not a {self.kind}")
        instance = int(self.param("instance", 0).value)
        simulator, where = make_simulator(
            Px4Settings(
                physics_dt_s=float(self.param("physics_dt_s", 0.004, "s").value),
                watchdog_s=float(self.param("watchdog_s", 1.0, "s of autopilot silence")
                                 .value),
                watchdog_policy=self.param("watchdog_policy", "pause", "pause | freerun")
                .value),
            start, model, instance, self.param("host", "127.0.0.1").value,
            int(self.param("port", BASE_PORT + instance, "TCP port").value),
            self.param("serial", "", "serial device of a flight controller in HIL").value,
            int(self.param("baud", 921600).value))
        link = simulator.link
        return (simulator.run, link.body, where.replace(" ", ":"), lambda: link.counters,
                lambda: link.last_error)

    def _ardupilot(self, start: dict, model: dict | None) -> tuple[Any, ...]:
        from fleetbus.sim_bridge.ardupilot import make_backend, sitl_port

        instance = int(self.param("instance", 0).value)
        backend = make_backend(FRAMES[self.kind], model, start, instance,
                               host=self.param("host", "127.0.0.1").value,
                               port=int(self.param("port", sitl_port(instance)).value),
                               silence_s=float(self.param("silence_s", 2.0, "s").value))

        def serve(stop: threading.Event) -> None:
            with backend:
                backend.serve(stop)
        return (serve, backend.physics.body, f"udp:{backend.host}:{backend.port}",
                lambda: backend.physics.counters | backend.counters,
                lambda: backend.physics.last_error)

    def teardown(self) -> None:
        self._halt.set()
        self._adapter.join(5)
        super().teardown()

    def _publish(self) -> None:
        self.state.publish(vehicle_state(self.body.vehicle, self.now_ns()))

    def _diagnose(self) -> None:
        counters: dict[str, int] = dict(self._counters())
        error: Callable[[], str] = self._error
        for key in TROUBLE:
            grown = counters.get(key, 0) - self._reported.get(key, 0)
            if grown > 0:
                self.vehicle_event("hil", "warn", f"{self.protocol} {key} +{grown}: {error()}",
                                   {"counter": key, "total": str(counters[key])})
        self._reported = counters
        alive = self._adapter.is_alive()
        self.diagnostics.publish(Diagnostic(
            header=Header(stamp_ns=self.now_ns()), name=f"hil/{self.vehicle}",
            level="ok" if alive else "error",
            message=f"{self.protocol} on {self.endpoint}" + ("" if alive else ": stopped"),
            values={"endpoint": self.endpoint, "last_error": error(),
                    **{k: str(v) for k, v in counters.items()}}))
