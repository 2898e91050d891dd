"""Waiting and cross-thread helpers shared by the tests (no timed assertions: we wait for
conditions, with a generous timeout that only matters when something is broken)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.messages import Odometry, Pose, Quaternion, Twist, Vector3, VehicleState


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> Any:
    """Poll `predicate` until it returns something truthy and return that; fail with a
    message naming what was awaited (and the last value or exception) otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as exc:  # e.g. a file that does not exist yet
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout} s waiting for {name} (last: {last!r})")
        time.sleep(interval)


def run_on(node: fleetbus.Node, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run `fn()` on the node's own thread and return its result (or raise what it
    raised). Nodes are single-threaded: publishing and calling must happen there."""
    return node.call_soon_threadsafe(fn).result(timeout)


def barrier(node: fleetbus.Node) -> None:
    """Return once the node's loop has finished everything it was doing before."""
    run_on(node, lambda: None)


class FnNode(fleetbus.Node):
    """A node whose setup() is a function given at construction (tests declare inline)."""

    def __init__(self, name: str, setup: Callable[[FnNode], Any] | None = None, **kw: Any):
        super().__init__(name, **kw)
        self._setup_fn = setup
        self.got: list[Any] = []

    def setup(self) -> None:
        if self._setup_fn is not None:
            self._setup_fn(self)


class TruthOdometry(fleetbus.Node):
    """The simulator's ground truth of a car as its estimate (zero covariance): the node
    under test, not a filter. Parameter `vehicle_id` (default car1)."""

    def setup(self) -> None:
        vehicle = self.param("vehicle_id", "car1").value
        pub = self.publisher(f"/{vehicle}/odometry", Odometry)

        def relay(s: VehicleState) -> None:
            q = s.pose.orientation
            yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
            v = s.twist.linear
            surge = v.x * math.cos(yaw) + v.y * math.sin(yaw)
            pub.publish(Odometry(header=s.header, pose=Pose(position=s.pose.position,
                                                            orientation=Quaternion(
                                                                w=q.w, x=q.x, y=q.y, z=q.z)),
                                 twist=Twist(linear=Vector3(x=surge))))
        self.subscribe(f"/{vehicle}/state", VehicleState, relay)


def read_jsonl(path: Path) -> list[dict]:
    """Complete JSON lines written so far (a half-written last line is skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            rows.append(json.loads(line))
    return rows


def graph_nodes(config: BusConfig, timeout: float = 0.5) -> dict[str, Any]:
    """The registry's nodes by name ({} when no registry answers)."""
    graph = fetch_graph(config, timeout)
    return {} if graph is None else {node.name: node for node in graph.nodes}
