"""Health of a running graph, and alerts when it changes.

The HealthMonitor node rates every node, every topic with a rate contract and every
vehicle OK / WARN / ERROR / STALE, from the registry's graph (read on wall time: see
GraphWatch) and the bus's own reports:

- a node: ERROR when it says so; WARN when it warns or counted new errors since the last
  look; STALE when its heartbeats stopped (a blocked loop) or it left the graph -- a node
  that is back under the same name was restarted;
- a topic: STALE when no publisher sends at all, WARN under 80 % of its contract's rate
  (the `rates` parameter, {topic glob: Hz}: a graph file's `rates:` section, which the
  loader passes on; the rates are the publishers' own counters, in wall-clock Hz);
- a vehicle (a namespace): the worst of its nodes and topics.

Each rating goes out as a Diagnostic on /diagnostics named health/node/<name>,
health/topic/<topic> or health/vehicle/<id>, every `poll_s`. Alerts go out as Events on
/alerts, and into the log, when something needs attention (a rating once it has held for
`confirm` looks in a row, so that one slow count raises none): a node
restarted, gone or in error, a contract's rate missed, a subscription that dropped stale
input, a controller's solve that overran its deadline (the `overrun` counter of a
control/<id> Diagnostic), and every Event of warn severity or worse on /events (a geofence
breach, a failsafe, a failed mission, a latency budget exceeded).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetbus.bus import protocol as p
from fleetbus.bus.graph_watch import GraphWatch
from fleetbus.bus.introspect import visible
from fleetbus.bus.node import Node
from fleetbus.messages import Diagnostic, Event, Header

LEVELS = ("ok", "warn", "error", "stale")
RATE_WARN = 0.8  # of the contract's rate
SILENT_S = 3 * p.HEARTBEAT_S  # a node whose heartbeats stopped this long ago is STALE
ALERT_SEVERITIES = ("warn", "error", "critical")


@dataclass(frozen=True)
class RateContract:
    pattern: str  # topic glob
    min_hz: float

    def matches(self, topic: str) -> bool:
        return fnmatch.fnmatchcase(topic, self.pattern)


def contracts(rates: Mapping[str, float]) -> list[RateContract]:
    """{glob: Hz} as contracts; ValueError naming a rate that is not a positive number."""
    out = []
    for pattern, hz in rates.items():
        if isinstance(hz, bool) or not isinstance(hz, int | float) or not hz > 0:
            raise ValueError(f"rate contract {pattern!r}: expected Hz > 0, got {hz!r}")
        out.append(RateContract(str(pattern), float(hz)))
    return out


def rate_level(rate_hz: float, expected_hz: float) -> str:
    """STALE when nothing is sent, WARN under RATE_WARN of the expected rate, else OK."""
    if rate_hz <= 0.0:
        return "stale"
    return "warn" if rate_hz < RATE_WARN * expected_hz else "ok"


def worst(levels: Iterable[str]) -> str:
    return max(levels, key=LEVELS.index, default="ok")


def vehicle_of(name: str) -> str | None:
    """The namespace of a node or topic name (/car1/fusion -> car1), None at the root."""
    parts = name.strip("/").split("/")
    return parts[0] if len(parts) > 1 else None


class HealthMonitor(Node):
    def setup(self) -> None:
        self.contracts = contracts(self.param("rates", {}, "{topic glob: Hz} each topic "
                                              "must keep up").value)
        self.health = self.publisher("/diagnostics", Diagnostic, depth=1000)
        self.alerts = self.publisher("/alerts", Event, depth=1000)
        self.confirm = int(self.param("confirm", 2, "ratings in a row a level must hold "
                                      "before it is alerted").value)
        self.levels: dict[str, str] = {}  # health/... name -> last level alerted (or ok)
        self.held: dict[str, tuple[str, int]] = {}  # name -> (level, ratings in a row)
        self.nodes: dict[str, p.NodeInfo] = {}  # name -> as last seen
        self.topics: set[str] = set()  # published at the last look
        self.stale_seen: dict[tuple[str, str], int] = {}  # (node, topic) -> stale count
        self.overruns: dict[str, int] = {}  # control/<id> -> overrun count
        self.subscribe("/events", Event, self._on_event, depth=1000)
        self.subscribe("/diagnostics", Diagnostic, self._on_diagnostic, depth=1000)
        self.graph_watch = GraphWatch(self, float(self.param("poll_s", 1.0, "wall s between "
                                                       "ratings").value), self._rate)

    def teardown(self) -> None:
        self.graph_watch.close()

    # -- ratings --------------------------------------------------------------------------

    def _rate(self, graph: p.Graph) -> None:
        nodes = {n.name: n for n in visible(graph.nodes) if n.name != self.name}
        ratings = {f"node{name}": self._node_level(name, node, graph.silent_s.get(node.uid, 0))
                   for name, node in nodes.items()}
        for name in self.nodes.keys() - nodes.keys():
            ratings[f"node{name}"] = ("stale", "left the graph")
        self.nodes.update(nodes)
        rates: dict[str, float] = {}
        for node in nodes.values():
            for pub in node.publishers:
                if pub.messages:  # one that never sent is starting (or waits), not stale
                    rates[pub.topic] = rates.get(pub.topic, 0.0) + pub.rate_hz
            for sub in node.subscriptions:
                self._check_stale(node.name, sub)
        known, self.topics = self.topics, set(rates)
        for topic, rate in sorted(rates.items()):
            contract = next((c for c in self.contracts if c.matches(topic)), None)
            # a rate needs a publisher's counting window: a new topic is rated next time
            if contract is not None and topic in known:
                level = rate_level(rate, contract.min_hz)
                ratings[f"topic{topic}"] = (level, f"{rate:.1f} Hz (contract "
                                                    f"{contract.min_hz:g} Hz)")
        vehicles: dict[str, list[str]] = {}
        for key, (level, _) in ratings.items():
            vehicle = vehicle_of(key.partition("/")[2])
            if vehicle is not None:
                vehicles.setdefault(vehicle, []).append(level)
        for vehicle, levels in vehicles.items():
            ratings[f"vehicle/{vehicle}"] = (worst(levels), "")
        stamp = Header(stamp_ns=self.now_ns())
        for key, (level, why) in sorted(ratings.items()):
            self.health.publish(Diagnostic(header=stamp, name=f"health/{key}", level=level,
                                           message=why))
            if key.startswith(("node/", "topic/")) and self._confirmed(key, level):
                kind = {"node/": "node", "topic/": "rate"}[key[:key.index("/") + 1]]
                self.alert(f"{kind}_{level}", "error" if level == "error" else "warn",
                           f"/{key.partition('/')[2]}: {level.upper()}: {why}")

    def _confirmed(self, key: str, level: str) -> bool:
        """Whether `level` is news to alert on: not OK, not alerted already, and held for
        `confirm` ratings in a row. A single bad look is often no fault: a rate counted
        across a pause, or nodes leaving a graph that is being stopped, this one too."""
        held = self.held.get(key)
        held = (level, held[1] + 1) if held and held[0] == level else (level, 1)
        self.held[key] = held
        if level == "ok":
            self.levels[key] = "ok"
            return False
        if level == self.levels.get(key, "ok") or held[1] < self.confirm:
            return False
        self.levels[key] = level
        return True

    def _node_level(self, name: str, node: p.NodeInfo, silent_s: float) -> tuple[str, str]:
        old = self.nodes.get(name)
        if old is not None and old.uid != node.uid:
            self.alert("node_restart", "warn", f"{name} restarted (pid {old.pid} -> "
                       f"{node.pid})")
        if silent_s > SILENT_S:
            return "stale", f"no heartbeat for {silent_s:.1f} s"
        if node.state == "error":
            return "error", "the node reports an error"
        new = {k: v - (old.counters.get(k, 0) if old and old.uid == node.uid else 0)
               for k, v in node.counters.items()}
        counted = {k: v for k, v in new.items() if v > 0}
        if counted:
            return "warn", "counted " + ", ".join(f"{v} {k}" for k, v in sorted(
                counted.items()))
        return ("warn", "the node warns") if node.state == "warn" else ("ok", "")

    def _check_stale(self, node: str, sub: p.SubscriptionInfo) -> None:
        key = (node, sub.topic)
        before = self.stale_seen.get(key, 0)
        self.stale_seen[key] = sub.stale
        if sub.stale > before:
            self.alert("stale_input", "warn", f"{node} dropped {sub.stale - before} stale "
                       f"message(s) on {sub.topic} (older than {sub.max_age_s} s)")

    # -- reports from the bus -------------------------------------------------------------

    def _on_event(self, msg: Event) -> None:
        if msg.severity in ALERT_SEVERITIES:
            self.alert(msg.kind, msg.severity, msg.message, msg.source, msg.data)

    def _on_diagnostic(self, msg: Diagnostic) -> None:
        if not msg.name.startswith("control/") or "overrun" not in msg.values:
            return
        try:
            count = int(msg.values["overrun"])
        except ValueError:
            self._count("bad_diagnostic", f"{msg.name}: overrun {msg.values['overrun']!r}")
            return
        before = self.overruns.get(msg.name, 0)
        self.overruns[msg.name] = count
        if count > before:
            self.alert("deadline_miss", "warn", f"{msg.name}: {count - before} solve(s) "
                       "overran the control period")

    def alert(self, kind: str, severity: str, message: str, source: str = "",
              data: Mapping[str, str] | None = None) -> None:
        """An alert on /alerts and in the log."""
        self.alerts.publish(Event(header=Header(stamp_ns=self.now_ns()),
                                  source=source or self.name, kind=kind, severity=severity,
                                  message=message, data=dict(data or {})))
        self.log.warning("%s: alert %s (%s): %s", self.name, kind, severity, message)
