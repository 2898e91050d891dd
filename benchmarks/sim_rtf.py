"""Real-time factor of a lockstep simulation: one quadrotor, one vessel and one car at
100 Hz physics and 20 Hz control, each with a trivial controller node on the sim clock.

    python -m benchmarks.sim_rtf [--sim-seconds 30] [--processes]

With --processes every controller runs in its own process (ipc); otherwise all nodes
share this process (inproc). The floor is the same simulator's physics and sensors
stepped in a plain loop: no bus traffic, no controllers to wait for.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from rich.console import Console

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.messages import (
    CarCommand,
    Header,
    QuadrotorCommand,
    ShipCommand,
    Vector3,
    VehicleState,
)
from fleetbus.nodes.simulator import Simulator

VEHICLES = [{"id": "drone1", "type": "quadrotor", "start": {"z": 5.0}},
            {"id": "ship1", "type": "vessel"}, {"id": "car1", "type": "car"}]
COMMANDS = {
    "drone1": lambda h: QuadrotorCommand(header=h, thrust_n=14.7, body_rates=Vector3()),
    "ship1": lambda h: ShipCommand(header=h, surge_force_n=4.0),
    "car1": lambda h: CarCommand(header=h, acceleration_mps2=0.5),
}


class Trivial(fleetbus.Node):
    """Reads its vehicle's state and answers every control period with a constant
    command. (Sensors nobody subscribes to are sampled, not sent.)"""

    def setup(self) -> None:
        vehicle = self.param("vehicle", "").value
        make = COMMANDS[vehicle]
        self.states = 0
        self.subscribe(f"/{vehicle}/state", VehicleState, self._on_state)
        pub = self.publisher(f"/{vehicle}/cmd", type(make(Header())), latched=True)
        self.timer(0.05, lambda: pub.publish(make(Header(stamp_ns=self.now_ns()))))

    def _on_state(self, msg: VehicleState) -> None:
        self.states += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-seconds", type=float, default=30.0)
    parser.add_argument("--processes", action="store_true")
    args = parser.parse_args()
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fbr-", dir="/tmp")
    sim = Simulator("sim", params={"vehicles": VEHICLES, "mode": "lockstep"})
    nodes: list[fleetbus.Node] = [sim]
    children = []
    if args.processes:
        env = dict(os.environ, FLEETBUS_CLOCK="sim", FLEETBUS_AUTOREGISTRY="0")
        children = [subprocess.Popen([sys.executable, "-m", "fleetbus.cli", "run",
                                      "benchmarks.sim_rtf:Trivial", "--name", f"ctl_{v['id']}",
                                      "-p", f"vehicle={v['id']}"], env=env,
                                     stderr=subprocess.DEVNULL) for v in VEHICLES]
    else:
        config = BusConfig.from_env(clock="sim")
        nodes += [Trivial(f"ctl_{v['id']}", params={"vehicle": v["id"]}, config=config)
                  for v in VEHICLES]
    with fleetbus.start(*nodes):
        while sim.world.time_s < 1.0:  # wait for the start (controllers connecting)
            time.sleep(0.005)
        sim_start, wall_start = sim.world.time_s, time.perf_counter()
        while sim.world.time_s < sim_start + args.sim_seconds:
            time.sleep(0.01)
        sim_done, wall = sim.world.time_s - sim_start, time.perf_counter() - wall_start
        timeouts = sim.lockstep_timeouts
    for child in children:
        child.send_signal(2)
        child.wait(10)
    floor = floor_rtf(args.sim_seconds)
    rtf = sim_done / wall
    where = "controllers in 3 processes (ipc)" if args.processes else "one process (inproc)"
    Console().print(f"lockstep, 3 vehicles, 100 Hz physics, 20 Hz control, {where}: "
                    f"{sim_done:.1f} sim s in {wall:.2f} wall s = real-time factor "
                    f"[bold]{rtf:.0f}x[/] (goal >= 50x); lockstep timeouts: {timeouts}; "
                    f"floor (physics and sensors alone) {floor:.0f}x, ratio {rtf / floor:.2f}")
    return 0


def floor_rtf(sim_seconds: float) -> float:
    """The simulator's own work per sim second, ticked in a plain loop (never started:
    its publishers have no subscribers, so only the clock is sent)."""
    sim = Simulator("floor", params={"vehicles": VEHICLES, "mode": "lockstep"})
    sim.setup()
    start = time.perf_counter()
    while sim.world.time_s < sim_seconds:
        sim.tick()
    return sim.world.time_s / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
