"""`fleetbus fleet status`: an operator station's view of several vehicle buses at once.

Each vehicle (or group of vehicles) runs a bus of its own, whose registry also listens on
tcp (`fleetbus up --tcp tcp://0.0.0.0:7400` on the vehicle; its nodes with FLEETBUS_TCP
set so their data can leave the host). The station names those registries; for each
one it reads the graph, and the latched mission status of every vehicle on it, and rates
the bus:

- STALE: its registry does not answer;
- ERROR: a node says it is in error, or a vehicle's mission failed;
- WARN: a node warns or counted errors, or a vehicle is in a failsafe;
- OK otherwise.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fleetbus.bus.config import BusConfig
from fleetbus.bus.introspect import visible
from fleetbus.bus.node import Node
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.runner import start
from fleetbus.messages import MissionStatus
from fleetbus.monitoring.health import worst

STATUS_TOPIC = "/mission_status"


@dataclass
class VehicleStatus:
    vehicle_id: str
    mission: str = "unknown"  # MissionStatus.state, "unknown" when none arrived in time
    waypoint: int = 0
    waypoints: int = 0
    message: str = ""


@dataclass
class BusStatus:
    registry: str
    level: str = "STALE"
    nodes: int = 0
    problems: list[str] = field(default_factory=list)  # why the level is not OK
    vehicles: list[VehicleStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _StatusReader(Node):
    """Subscribes to the vehicles' latched mission status: each arrives as it joins."""

    def __init__(self, topics: list[str], config: BusConfig) -> None:
        super().__init__("/_fleet_status", config=config)
        self.topics = topics
        self.latest: dict[str, MissionStatus] = {}
        self.all_in = threading.Event()

    def setup(self) -> None:
        for topic in self.topics:
            self.subscribe(topic, MissionStatus, lambda m, t=topic: self._on(t, m))
        if not self.topics:
            self.all_in.set()

    def _on(self, topic: str, msg: MissionStatus) -> None:
        self.latest[topic] = msg
        if len(self.latest) == len(self.topics):
            self.all_in.set()


def bus_status(registry: str, base: BusConfig, timeout_s: float = 2.0) -> BusStatus:
    """The status of the bus whose registry is at `registry` (an ipc:// or tcp:// URL)."""
    config = replace(base, registry=registry, auto_registry=False, clock="wall")
    status = BusStatus(registry)
    graph = fetch_graph(config, timeout_s)
    if graph is None:
        status.problems.append(f"no registry answers at {registry}")
        return status
    nodes = visible(graph.nodes)
    status.nodes = len(nodes)
    topics = sorted({pub.topic for n in nodes for pub in n.publishers
                     if pub.topic.endswith(STATUS_TOPIC) and pub.topic.count("/") == 2})
    reader = _StatusReader(topics, config)
    with start(reader):
        reader.all_in.wait(timeout_s)
        latest = dict(reader.latest)
    levels = ["ok"]
    for node in nodes:
        if node.state == "error":
            levels.append("error")
            status.problems.append(f"{node.name} is in error")
        elif node.state == "warn" or sum(node.counters.values()):
            levels.append("warn")
            counted = ", ".join(f"{k} {v}" for k, v in sorted(node.counters.items()))
            status.problems.append(f"{node.name}: {node.state}" + (f" ({counted})"
                                                                   if counted else ""))
    for topic in topics:
        vehicle = VehicleStatus(topic.split("/")[1])
        msg = latest.get(topic)
        if msg is None:
            levels.append("warn")
            status.problems.append(f"{vehicle.vehicle_id}: no mission status within "
                                   f"{timeout_s:g} s")
        else:
            vehicle.mission, vehicle.message = msg.state, msg.message
            vehicle.waypoint, vehicle.waypoints = msg.waypoint, msg.waypoints
            if msg.state == "failed":
                levels.append("error")
                status.problems.append(f"{vehicle.vehicle_id}: mission failed: {msg.message}")
            elif msg.state == "failsafe":
                levels.append("warn")
                status.problems.append(f"{vehicle.vehicle_id}: failsafe: {msg.message}")
        status.vehicles.append(vehicle)
    status.level = worst(levels).upper()
    return status


def cmd_fleet_status(args: Any, config: BusConfig) -> int:
    """Exit status: 0 when every bus is OK, 1 otherwise."""
    import json

    from rich.console import Console
    from rich.table import Table

    statuses = [bus_status(url, config, args.timeout) for url in args.registries]
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=1))
    else:
        table = Table(title="fleet")
        for column in ("bus", "health", "nodes", "vehicles", "problems"):
            table.add_column(column)
        colour = {"OK": "green", "WARN": "yellow", "ERROR": "red", "STALE": "magenta"}
        for s in statuses:
            vehicles = "\n".join(f"{v.vehicle_id}: {v.mission} {v.waypoint}/{v.waypoints}"
                                 for v in s.vehicles)
            table.add_row(s.registry, f"[{colour[s.level]}]{s.level}[/]", str(s.nodes),
                          vehicles, "\n".join(s.problems[:5]))
        Console().print(table)
    return 0 if all(s.level == "OK" for s in statuses) else 1

