"""A node graph: what to run, how, and how to keep it running.

The same `Graph` comes from a YAML file (`Graph.load`) or from Python:

    graph = fleetbus.Graph("demo")
    graph.add("talker", "fleetbus.nodes.demo:Talker", params={"rate_hz": 50})
    graph.add("echo", "fleetbus.nodes.demo:Echo", depends_on=["talker"])

The file format's JSON Schema (`fleetbus launch --schema`) is generated from the Structs
below, so the schema an editor checks against and the validation `launch` runs are one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Restart = Literal["never", "on-failure", "always"]
VehicleType = Literal["quadrotor", "vessel", "car"]
Positive = Annotated[float, msgspec.Meta(gt=0)]
LATENCY_MONITOR = "fleetbus.nodes.latency:LatencyMonitor"
"""The node the loader adds, named `latency`, when a file declares latency budgets."""
HEALTH_MONITOR = "fleetbus.monitoring.health:HealthMonitor"
"""The node that holds a graph's rate contracts; the loader adds one, named `health`, when
a file declares `rates` and runs none."""


class NodeSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One node of the graph: a Python node class or an executable command."""

    name: str
    node_class: str | None = msgspec.field(default=None, name="class")
    """`package.module:Class`, a fleetbus Node subclass."""
    cmd: list[str] | None = None
    """An executable and its arguments, for nodes that are not Python classes."""
    namespace: str = ""
    params: dict[str, Any] = {}
    remap: dict[str, str] = {}
    env: dict[str, str] = {}
    restart: Restart = "on-failure"
    max_restarts: int = 5
    """Restarts allowed within `restart_window_s` before the node is given up."""
    restart_window_s: float = 60.0
    health_timeout: float | None = None
    """Seconds without a registry heartbeat, once the node has registered, after which
    its process is restarted."""
    depends_on: list[str] = []
    """Nodes (names as written here) whose setup() must have finished first."""
    process: str | None = None
    """Nodes with the same group name share one process (and talk over inproc)."""
    required: bool = True
    """A required node that fails for good makes `launch` exit non-zero."""
    stop_timeout_s: float = 5.0
    """Grace after SIGINT, and again after SIGTERM, before SIGKILL."""

    @property
    def full_name(self) -> str:
        """The node's bus name, e.g. /drone1/fusion."""
        if self.name.startswith("/"):
            return self.name
        namespace = self.namespace.strip("/")
        return f"/{namespace}/{self.name}" if namespace else f"/{self.name}"


class Vehicle(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    type: VehicleType
    start: dict[str, float] = {}
    """Start pose: x, y, z (m, ENU) and yaw (rad)."""
    model: dict[str, Any] = {}
    """Vehicle model parameter overrides, e.g. {mass_kg: 2.0}."""
    params: dict[str, dict[str, Any]] = {}
    """Per-node parameter overlays: {node name: {param: value}}."""

    def simulated(self) -> dict[str, Any]:
        """This vehicle as the simulator's `vehicles` parameter lists it."""
        return {"id": self.id, "type": self.type, "start": self.start, "params": self.model}


class Include(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    file: str
    """Path relative to the including file."""
    args: dict[str, Any] = {}
    namespace: str = ""
    """Prefix for the included nodes' namespaces."""


class LatencyBudget(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How slow a chain of nodes may be, from a message on `source` to the first message
    on `sink` stamped at or after it (IMU -> fusion -> controller -> command); measured
    by the `latency` node, which reports on /diagnostics and warns on /events."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    """Reported as the diagnostic `latency/<name>`; in an included file
    `latency/<namespace>/<name>`, per vehicle `latency/<name>/<vehicle id>`."""
    source: Annotated[str, msgspec.Meta(min_length=1)]
    """Topic where the chain starts; a relative name is under the include's namespace
    and, per vehicle, under /<vehicle id>."""
    sink: Annotated[str, msgspec.Meta(min_length=1)]
    """Topic where the chain ends (same rules)."""
    p99_ms: Positive
    """The budget: the 99th percentile over the window may not exceed this."""
    p50_ms: Positive | None = None
    """Optionally, a budget for the median too."""
    window_s: Positive = 10.0
    """Wall-clock seconds of samples the percentiles are taken over."""
    per_vehicle: bool = False
    """One budget per vehicle of `vehicles:`, with `${vehicle_id}` (and the other
    vehicle_nodes arguments) substituted."""


class GraphFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The YAML graph file."""

    name: str = ""
    args: dict[str, Any] = {}
    """Defaults for `${name}` substitutions; overridden by include args and --set."""
    env: dict[str, str] = {}
    """Environment for every node."""
    include: list[Include] = []
    nodes: list[NodeSpec] = []
    vehicles: list[Vehicle] = []
    """The vehicles of the graph; `${vehicles}` is this list for the simulator's
    `vehicles` parameter."""
    vehicle_nodes: list[NodeSpec] = []
    """Template: these nodes run once per vehicle, in the namespace /<vehicle id>, with
    the parameters `vehicle_id`, `vehicle_type` and `start` added."""
    latency_budgets: list[LatencyBudget] = []
    """Chains whose latency the run measures against a budget (adds the node `latency`)."""
    rates: dict[str, Positive] = {}
    """Topic rate contracts, {topic glob: minimum Hz}: the health monitor rates each
    matching topic WARN below 80 % and STALE at zero, on the publishers' wall-clock rates.
    A relative glob is under the include's namespace."""


def schema() -> dict[str, Any]:
    """The JSON Schema of graph files."""
    return msgspec.json.schema(GraphFile)


class Graph:
    """A resolved node graph, from a file or built in Python."""

    def __init__(self, name: str = "graph", env: dict[str, str] | None = None) -> None:
        self.name = name
        self.env = dict(env or {})
        self.nodes: list[NodeSpec] = []
        self.origins: list[tuple[str, int, int]] = []
        """Where each node was written (file, line, column), parallel to `nodes`."""
        self.rates: dict[str, float] = {}
        """Rate contracts of the files, {absolute topic glob: Hz} (see GraphFile.rates)."""

    def add(self, name: str, node_class: str | None = None, **options: Any) -> NodeSpec:
        """Add a node; `options` are NodeSpec fields (cmd, namespace, params, ...)."""
        spec = msgspec.convert({"name": name, "class": node_class, **options}, NodeSpec)
        self.nodes.append(spec)
        self.origins.append(("<python>", 0, 0))
        return spec

    @classmethod
    def load(
        cls, path: str, args: dict[str, Any] | None = None, sets: list[str] | None = None
    ) -> Graph:
        """Load and expand a YAML graph file (see fleetbus.launch.loader)."""
        from fleetbus.launch.loader import load_graph

        return load_graph(path, args or {}, sets or [])

    def launch(self, duration: float | None = None, log_format: str = "text") -> int:
        """Run the graph like `fleetbus launch` (until `duration`, or until
        `KeyboardInterrupt` in a notebook); returns the same exit status."""
        from fleetbus.launch.supervisor import Supervisor

        supervisor = Supervisor(self, log_format=log_format)
        try:
            return supervisor.run(duration)
        except KeyboardInterrupt:
            supervisor.stop()
            return 0

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if name in (spec.name, spec.full_name):
                return spec
        raise KeyError(f"graph {self.name!r} has no node {name!r}")
