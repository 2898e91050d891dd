"""`fleetbus top`: a live terminal view of the bus, or one snapshot for scripts.

Nodes: state, heartbeat age (seconds since the registry last heard from the node), CPU
and resident memory of its process (psutil, for processes on this host; nodes that share
a process show the same figures), restarts seen while watching (same name, new instance)
and its problem counters. Topics: publishers and subscribers, the message rate and
bandwidth the publishers count, messages lost (sequence gaps), dropped as stale and
rejected that the subscribers count, the worst last latency, and a rating against an
expected rate (`--expect GLOB=HZ`, the health monitor's rules: WARN under 80 %, STALE at
zero).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field

import psutil
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from fleetbus.bus import protocol as p
from fleetbus.bus.config import BusConfig
from fleetbus.bus.introspect import topics, visible
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.cli_error import CliError
from fleetbus.monitoring.health import RateContract, contracts, rate_level


@dataclass
class NodeRow:
    name: str
    pid: int
    host: str
    state: str
    heartbeat_age_s: float
    cpu_percent: float | None
    rss_mib: float | None
    restarts: int
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class TopicRow:
    topic: str
    types: list[str]
    publishers: int
    subscribers: int
    rate_hz: float
    bandwidth_bps: float
    lost: int
    stale: int
    rejected: int
    latency_ms: float | None
    expected_hz: float | None
    level: str  # ok | warn | stale; ok without an expectation


CPU_SAMPLE_S = 0.5  # between the two readings a CPU percentage is taken from


class Top:
    """Snapshots of one bus; keeps process handles (CPU % needs two samples) and the
    instances seen under each name (restarts) between them."""

    def __init__(self, config: BusConfig, expect: list[RateContract],
                 include_hidden: bool = False) -> None:
        self.config, self.expect, self.include_hidden = config, expect, include_hidden
        self.processes: dict[int, psutil.Process] = {}
        self.instances: dict[str, set[str]] = {}

    def snapshot(self, timeout_s: float = 1.0) -> tuple[list[NodeRow], list[TopicRow]]:
        graph = fetch_graph(self.config, timeout_s)
        if graph is None:
            raise CliError(f"no registry answers at {self.config.registry}")
        return self.nodes(graph), self.topics(graph)

    def nodes(self, graph: p.Graph) -> list[NodeRow]:
        rows = []
        for node in sorted(visible(graph.nodes, self.include_hidden), key=lambda n: n.name):
            seen = self.instances.setdefault(node.name, set())
            seen.add(node.uid)
            cpu, rss = self._process(node)
            rows.append(NodeRow(node.name, node.pid, node.host, node.state,
                                round(graph.silent_s.get(node.uid, 0.0), 3), cpu, rss,
                                len(seen) - 1, dict(node.counters)))
        return rows

    def topics(self, graph: p.Graph) -> list[TopicRow]:
        rows = []
        for name, view in topics(graph, self.include_hidden).items():
            subs = [s for _, s in view.subscriptions]
            latencies = [s.latency_s for s in subs if s.latency_s is not None]
            contract = next((c for c in self.expect if c.matches(name)), None)
            rate = view.rate_hz
            rows.append(TopicRow(
                name, sorted(view.types), len(view.publishers), len(subs), round(rate, 2),
                round(view.bandwidth_bps, 1), sum(s.gaps for s in subs),
                sum(s.stale for s in subs), sum(s.rejected for s in subs),
                round(max(latencies) * 1e3, 3) if latencies else None,
                contract.min_hz if contract else None,
                rate_level(rate, contract.min_hz) if contract else "ok"))
        return rows

    def _process(self, node: p.NodeInfo) -> tuple[float | None, float | None]:
        if node.host != self.config.host:
            return None, None  # another machine's process
        try:
            proc = self.processes.get(node.pid)
            if proc is None:
                proc = self.processes[node.pid] = psutil.Process(node.pid)
                proc.cpu_percent()  # the first call only starts the measurement
            return proc.cpu_percent(), round(proc.memory_info().rss / 2**20, 1)
        except psutil.Error:
            self.processes.pop(node.pid, None)
            return None, None


def render(nodes: list[NodeRow], rows: list[TopicRow]) -> Group:
    node_table = Table(title="nodes")
    for column in ("node", "pid", "state", "heartbeat s", "CPU %", "RSS MiB", "restarts",
                   "problems"):
        node_table.add_column(column)
    for n in nodes:
        node_table.add_row(n.name, str(n.pid), n.state, f"{n.heartbeat_age_s:.1f}",
                           "-" if n.cpu_percent is None else f"{n.cpu_percent:.0f}",
                           "-" if n.rss_mib is None else f"{n.rss_mib:.0f}", str(n.restarts),
                           ", ".join(f"{k} {v}" for k, v in sorted(n.counters.items())))
    topic_table = Table(title="topics")
    for column in ("topic", "type", "pub", "sub", "Hz", "expected", "B/s", "lost", "stale",
                   "rejected", "latency ms"):
        topic_table.add_column(column)
    colour = {"ok": "", "warn": "yellow", "stale": "red"}
    for t in rows:
        hz = f"{t.rate_hz:.1f}" if t.level == "ok" else f"[{colour[t.level]}]{t.rate_hz:.1f} "
        hz += "" if t.level == "ok" else f"{t.level.upper()}[/]"
        topic_table.add_row(t.topic, ", ".join(t.types), str(t.publishers),
                            str(t.subscribers), hz,
                            "-" if t.expected_hz is None else f"{t.expected_hz:g}",
                            f"{t.bandwidth_bps:.0f}", str(t.lost), str(t.stale),
                            str(t.rejected),
                            "-" if t.latency_ms is None else f"{t.latency_ms:.2f}")
    return Group(node_table, topic_table)


def cmd_top(args: argparse.Namespace, config: BusConfig) -> int:
    expect: dict[str, float] = {}
    for item in args.expect:
        glob, sep, hz = item.partition("=")
        try:
            expect[glob] = float(hz)
        except ValueError:
            sep = ""
        if not sep:
            raise CliError(f"--expect takes TOPIC_GLOB=HZ, got {item!r}")
    try:
        rules = contracts(expect)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not args.interval > 0:
        raise CliError(f"--interval must be positive, got {args.interval}")
    top = Top(config, rules, args.all)
    top.snapshot()  # fails now without a bus; starts each process's CPU measurement,
    time.sleep(CPU_SAMPLE_S)  # which needs time between two readings
    if args.once or args.json:
        nodes, rows = top.snapshot()
        if args.json:
            print(json.dumps({"nodes": [asdict(n) for n in nodes],
                              "topics": [asdict(t) for t in rows]}, indent=1))
        else:
            Console().print(render(nodes, rows))
        return 0
    with Live(render(*top.snapshot()), refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(args.interval)
                try:
                    live.update(render(*top.snapshot()))
                except CliError as exc:  # the registry is away: say so, keep trying
                    live.update(f"[red]{exc}[/]: retrying")
        except KeyboardInterrupt:
            pass
    return 0


def add_top_command(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("top", help="nodes and topics of the running bus, live")
    c.add_argument("--interval", type=float, default=1.0, help="s between refreshes")
    c.add_argument("--once", action="store_true", help="one snapshot, then exit")
    c.add_argument("--json", action="store_true", help="as JSON (implies --once)")
    c.add_argument("--expect", action="append", default=[], metavar="GLOB=HZ",
                   help="a rate a topic should keep (repeatable)")
    c.add_argument("--all", action="store_true", help="include tool nodes (/_...)")
    c.set_defaults(func=cmd_top)
