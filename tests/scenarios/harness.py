"""Build and run one scenario of the catalog on the whole stack: a graph file written into
the test's folder (it includes launch/stack.yaml), launched in lockstep by
`fleetbus.launch.mission_run.run_missions`, with a command recorder on the same bus and,
when the scenario asks for it, a kill -9 of the controller's process at a sim time."""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node
from fleetbus.bus.runner import start
from fleetbus.launch.graph import Graph
from fleetbus.launch.mission_run import MissionRun, run_missions
from fleetbus.messages import Event, MissionStatus
from fleetbus.nodes.conversions import COMMANDS
from tests.helpers import graph_nodes
from tests.scenarios.catalog import Scenario

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "launch" / "stack.yaml"
DATA = Path(__file__).resolve().parent / "data"
VEHICLE_IDS = {"quadrotor": "drone1", "vessel": "ship1", "car": "car1"}
CONTROL_SUFFIX = "-control"


def geofence_path(name: str) -> Path:
    """A fence by file name: our own data folder first, then launch/geofences."""
    own = DATA / name
    return own if own.is_file() else ROOT / "launch" / "geofences" / name


def vehicle_id(scenario: Scenario) -> str:
    return VEHICLE_IDS[scenario.vehicle_type]


def graph_document(scenario: Scenario, seed: int | None = None) -> dict[str, Any]:
    """The graph file of a scenario, as a YAML document."""
    x, y, z, yaw = scenario.start
    mission: dict[str, Any] = {
        "waypoints": [{"x": wx, "y": wy, "z": wz, "acceptance_radius_m": scenario.accept_m}
                      for wx, wy, wz in scenario.waypoints],
        "timeout_s": scenario.timeout_s,
    }
    params: dict[str, Any] = {"mission": mission}
    for node, overlay in scenario.node_params.items():
        params[node] = {**params.get(node, {}), **overlay}
    start_pose = {"x": x, "y": y, "yaw": yaw}
    if scenario.vehicle_type == "quadrotor":
        start_pose["z"] = z
    vehicle = {"id": vehicle_id(scenario), "type": scenario.vehicle_type,
               "start": start_pose, "model": dict(scenario.model), "params": params}
    return {
        "name": f"scenario-{scenario.name}",
        "include": [{
            "file": str(STACK),
            "args": {
                "seed": scenario.seed if seed is None else seed,
                "geofence": str(geofence_path(scenario.geofence)),
                "faults": [dict(f) for f in scenario.faults],
                "controller_process_suffix": CONTROL_SUFFIX,
                "fleet": [vehicle],
            },
        }],
    }


def load_graph(scenario: Scenario, folder: Path, seed: int | None = None) -> Graph:
    path = folder / f"{scenario.name}.yaml"
    path.write_text(yaml.safe_dump(graph_document(scenario, seed), sort_keys=False))
    return Graph.load(str(path))


class CommandRecorder(Node):
    """Records every command on `/<id>/cmd` and `/<id>/cmd_failsafe` (parameters
    `vehicle_id`, `vehicle_type`) as (topic, message)."""

    def setup(self) -> None:
        vid = self.param("vehicle_id", "").value
        kind = self.param("vehicle_type", "").value
        self.lock = threading.Lock()
        self.commands: list[tuple[str, Any]] = []
        self.fault_events: list[Event] = []
        for topic in (f"/{vid}/cmd", f"/{vid}/cmd_failsafe"):
            self.subscribe(topic, COMMANDS[kind], self._recorder(topic), depth=100_000)
        self.subscribe("/events", Event, self._on_event, depth=100_000)

    def _on_event(self, msg: Event) -> None:
        if msg.kind.startswith("fault_"):
            with self.lock:
                self.fault_events.append(msg)

    def _recorder(self, topic: str) -> Callable[[Any], None]:
        def record(msg: Any) -> None:
            with self.lock:
                self.commands.append((topic, msg))
        return record

    def recorded(self) -> tuple[list[tuple[str, Any]], list[Event]]:
        with self.lock:
            return list(self.commands), list(self.fault_events)


def numeric_fields(msg: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a message (nested structs flattened as a.b), headers left out."""
    out: dict[str, float] = {}
    for name in msg.__struct_fields__:
        if name == "header":
            continue
        value = getattr(msg, name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[prefix + name] = float(value)
        elif hasattr(value, "__struct_fields__"):
            out.update(numeric_fields(value, f"{prefix}{name}."))
    return out


def non_finite(commands: list[tuple[str, Any]]) -> list[str]:
    """Descriptions of the commands with a NaN or infinite field."""
    bad = []
    for topic, msg in commands:
        values = numeric_fields(msg)
        wrong = {k: v for k, v in values.items() if not math.isfinite(v)}
        if wrong:
            bad.append(f"{topic} @ {msg.header.stamp_ns / 1e9:.2f} s: {wrong}")
    return bad


@dataclass
class CrashPlan:
    """kill -9 of the controller's process once the sim clock passes `at_s`."""

    vehicle: str
    at_s: float
    config: BusConfig
    killed_pid: int | None = None
    killed_at_s: float = math.nan
    errors: list[str] = field(default_factory=list)

    restarted_pid: int | None = None  # the controller's pid once it registered again

    def __call__(self, status: dict[str, MissionStatus | None], sim_s: float) -> None:
        if self.restarted_pid is not None or sim_s < self.at_s:
            return
        node = graph_nodes(self.config).get(f"/{self.vehicle}/control")
        if self.killed_pid is not None:
            if node is not None and node.pid != self.killed_pid:
                self.restarted_pid = node.pid
            return
        if node is None:
            self.errors.append(f"/{self.vehicle}/control not in the registry at {sim_s:.1f} s")
            return
        if node.pid == os.getpid():
            raise AssertionError("the controller runs in the test process")
        os.kill(node.pid, signal.SIGKILL)
        self.killed_pid, self.killed_at_s = node.pid, sim_s


@dataclass
class Outcome:
    run: MissionRun
    commands: list[tuple[str, Any]]
    fault_events: list[Event]  # the simulator's fault_start / fault_end
    crash: CrashPlan | None
    log_path: Path

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no launch log)"
        return "\n".join(text[-lines:])


def run_scenario(scenario: Scenario, folder: Path, seed: int | None = None,
                 max_wall_s: float | None = None, record: Path | None = None) -> Outcome:
    """Launch the scenario's graph (bus from the environment: use the `bus_env` fixture),
    run it to the end of its mission or its sim-time limit, and return what happened;
    `record`: an MCAP file to record the run into."""
    graph = load_graph(scenario, folder, seed)
    config = BusConfig.from_env()
    vid = vehicle_id(scenario)
    recorder = CommandRecorder("/_scenario_commands", config=config,
                               params={"vehicle_id": vid,
                                       "vehicle_type": scenario.vehicle_type})
    crash = (CrashPlan(vid, scenario.crash_controller_at_s, config)
             if scenario.crash_controller_at_s is not None else None)
    log_path = folder / "launch.log"
    with open(log_path, "w") as log, start(recorder):
        run = run_missions(graph, config, log, max_sim_s=scenario.max_sim_s,
                           max_wall_s=max_wall_s or scenario.max_wall_s, progress=crash,
                           poll_s=0.2, record=record)
        commands, fault_events = recorder.recorded()
    return Outcome(run, commands, fault_events, crash, log_path)
