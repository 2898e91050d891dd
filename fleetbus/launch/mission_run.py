"""Run a mission graph in lockstep to its end and judge it: the engine of `make demo` and
of the scenario suite.

The graph is launched under a Supervisor (its processes inherit this process's bus
environment, so FLEETBUS_RUN_DIR must name the bus to use), a RunObserver follows every
vehicle until each mission has ended or a limit is hit, and the observations become a
RunSummary.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from fleetbus.bus.config import BusConfig
from fleetbus.bus.runner import start
from fleetbus.launch.graph import Graph
from fleetbus.launch.supervisor import Supervisor
from fleetbus.messages import MissionStatus
from fleetbus.missions.report import RunSummary, VehicleRun, summarise
from fleetbus.nodes.run_observer import RunObserver
from fleetbus.recording.recorder import Recorder

ENDED = ("completed", "failed")
SIMULATOR = "fleetbus.nodes.simulator:Simulator"
RECORDER = "/_mission_run_recorder"

Progress = Callable[[dict[str, MissionStatus | None], float], None]


@dataclass
class MissionRun:
    summary: RunSummary
    runs: list[VehicleRun]


def graph_vehicles(graph: Graph) -> list[dict[str, Any]]:
    """The simulated vehicles of a graph (id and type), from its simulator node."""
    sim = next((n for n in graph.nodes if n.node_class == SIMULATOR), None)
    if sim is None:
        raise ValueError(f"graph {graph.name!r} has no simulator node ({SIMULATOR})")
    return [{"id": v["id"], "type": v["type"]} for v in sim.params["vehicles"]]


def run_missions(graph: Graph, config: BusConfig, log: TextIO, *, max_sim_s: float,
                 max_wall_s: float, progress: Progress | None = None,
                 poll_s: float = 0.5, record: Path | None = None) -> MissionRun:
    """Launch `graph`, follow it until every mission ended (or `max_sim_s` of sim time or
    `max_wall_s` of wall time passed), stop it, and summarise each vehicle's run.
    `progress` is called every `poll_s` with each vehicle's MissionStatus and the sim
    time. `record`: an MCAP file to record every topic into, on sim time, with the graph,
    its parameters, the seed and the fault plan."""
    vehicles = graph_vehicles(graph)
    sim = next(n for n in graph.nodes if n.node_class == SIMULATOR)
    if record is not None:  # the first step waits until the recorder hears everything
        sim.params = {**sim.params, "lockstep_await_nodes": [
            *sim.params.get("lockstep_await_nodes", []), RECORDER]}
    cpu0, wall0 = _cpu_s(), time.monotonic()
    supervisor = Supervisor(graph, config, out=log)
    runner = threading.Thread(target=supervisor.run, name="launch", daemon=True)
    runner.start()
    tools: list[Any] = [RunObserver("/_mission_run_observer", params={"vehicles": vehicles},
                                    config=config)]
    if record is not None:
        tools.append(Recorder(RECORDER, params={
            "output": str(record), "metadata": _run_metadata(graph, sim.params)},
            config=replace(config, clock="sim")))
    observer = tools[0]
    try:
        with start(*tools):
            why = _follow(observer, max_sim_s, max_wall_s, progress, poll_s)
            runs = observer.runs()
            sim_s = observer.sim_time_s()
    finally:
        supervisor.stop()
        runner.join(60)
    wall_s = time.monotonic() - wall0
    notes = [f"stopped: {why}"]
    if record is not None:
        status = tools[1].status()
        notes.append(f"recorded {tools[1].sink.messages} messages into {record.name}" + (
            "" if status["complete"] else f", INCOMPLETE: {status['dropped']} dropped"))
    summary = RunSummary(
        vehicles=[summarise(run) for run in runs], graph=graph.name,
        seed=sim.params.get("seed"), sim_time_s=sim_s, wall_time_s=wall_s,
        real_time_factor=sim_s / wall_s if wall_s > 0 else float("nan"),
        cpu_s=_cpu_s() - cpu0, notes=notes)
    return MissionRun(summary, runs)


def _run_metadata(graph: Graph, sim_params: dict[str, Any]) -> dict[str, str]:
    """What a recording of the run needs to say how it came about."""
    return {"graph": graph.name, "seed": json.dumps(sim_params.get("seed")),
            "faults": json.dumps(sim_params.get("faults", []), default=str),
            "nodes": json.dumps([{"name": n.name, "namespace": n.namespace,
                                  "class": n.node_class, "params": n.params,
                                  "remap": n.remap} for n in graph.nodes], default=str)}


def _follow(observer: RunObserver, max_sim_s: float, max_wall_s: float,
            progress: Progress | None, poll_s: float) -> str:
    """Wait until every mission ended or a limit is hit; returns why it stopped."""
    began = time.monotonic()
    while True:
        status = observer.progress()
        sim_s = observer.sim_time_s()
        if progress is not None:
            progress(status, sim_s)
        if all(s is not None and s.state in ENDED for s in status.values()):
            return "every mission ended"
        if sim_s >= max_sim_s:
            return f"sim time limit {max_sim_s:.0f} s"
        if time.monotonic() - began > max_wall_s:
            return f"wall time limit {max_wall_s:.0f} s"
        time.sleep(poll_s)


def _cpu_s() -> float:
    """CPU time of this process and its reaped children (the graph's processes)."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
