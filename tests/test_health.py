"""The health monitor on a real bus: ratings of nodes, rate contracts and vehicles on
/diagnostics, and alerts on /alerts for a missed rate, a restarted node, a breach event,
a controller's overrun and a node that counted errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fleetbus.messages import Diagnostic, Event, Header, Imu
from fleetbus.monitoring.health import (
    SILENT_S,
    HealthMonitor,
    contracts,
    rate_level,
    vehicle_of,
)
from tests.helpers import FnNode, run_on, wait_until


def test_the_rating_rules():
    assert rate_level(0.0, 100.0) == "stale"
    assert rate_level(79.0, 100.0) == "warn" and rate_level(80.0, 100.0) == "ok"
    assert vehicle_of("/car1/fusion") == "car1" and vehicle_of("/sim") is None
    assert contracts({"/*/imu": 100})[0].matches("/car1/imu")
    with pytest.raises(ValueError, match="'/x': expected Hz > 0"):
        contracts({"/x": -1})


def test_health_ratings_and_alerts(bus):
    diagnostics: list[Diagnostic] = []
    alerts: list[Event] = []

    def watcher(node: Any) -> None:
        node.subscribe("/diagnostics", Diagnostic, diagnostics.append, depth=10000)
        node.subscribe("/alerts", Event, alerts.append, depth=1000)
        node.events = node.publisher("/events", Event)
        node.diag = node.publisher("/diagnostics", Diagnostic)
        node.subscribe("/car1/imu", Imu, lambda m: None)  # a publisher counts what it sends
    w = bus.node("watcher", watcher)

    def imu(node: Any) -> None:
        pub = node.publisher("/car1/imu", Imu)
        node.timer(0.02, lambda: pub.publish(Imu(header=Header(stamp_ns=node.now_ns()))))
    bus.start(FnNode("/car1/fusion", imu))
    bus.start(HealthMonitor("health", params={"rates": {"/*/imu": 1000}, "poll_s": 0.2}))

    def rated(name: str, level: str) -> Diagnostic | None:
        return next((d for d in reversed(diagnostics) if d.name == name
                     and d.level == level), None)
    # 50 Hz against a contract of 1000 Hz: the topic and its vehicle warn, and it is alerted
    topic = wait_until(lambda: rated("health/topic/car1/imu", "warn"), what="imu rated")
    assert "contract 1000 Hz" in topic.message
    assert wait_until(lambda: rated("health/vehicle/car1", "warn"), what="car1 rated")
    assert wait_until(lambda: rated("health/node/car1/fusion", "ok"), what="fusion ok")
    wait_until(lambda: [a for a in alerts if a.kind == "rate_warn"
                        and "/car1/imu" in a.message], what="the rate alert")

    # the node restarts under the same name: alerted
    fusion = next(n for n in bus.nodes if n.name == "/car1/fusion")
    fusion.stop()
    assert fusion.stopped.wait(10)
    bus.start(FnNode("/car1/fusion", imu))
    wait_until(lambda: [a for a in alerts if a.kind == "node_restart"], what="restart")

    # a breach event and a controller overrun become alerts; an info event does not
    run_on(w, lambda: (
        w.events.publish(Event(source="/car1/guard", kind="breach", severity="critical",
                               message="car1 left 'road'")),
        w.events.publish(Event(source="/car1/mission", kind="mission", severity="info")),
        w.diag.publish(Diagnostic(name="control/car1", values={"overrun": "0"})),
        w.diag.publish(Diagnostic(name="control/car1", values={"overrun": "2"}))))
    breach = wait_until(lambda: [a for a in alerts if a.kind == "breach"], what="breach")[0]
    assert breach.severity == "critical" and breach.source == "/car1/guard"
    overrun = wait_until(lambda: [a for a in alerts if a.kind == "deadline_miss"],
                         what="overrun")[0]
    assert "2 solve(s) overran" in overrun.message
    assert not [a for a in alerts if a.kind == "mission"]

    # a node that counts an error warns
    run_on(fusion := next(n for n in bus.nodes if n.name == "/car1/fusion"
                          and not n.stopped.is_set()),
           lambda: fusion._count("bad_input", "NaN gyro"))
    assert wait_until(lambda: rated("health/node/car1/fusion", "warn"), what="warn")


def test_a_node_whose_loop_is_blocked_goes_stale(bus):
    diagnostics: list[Diagnostic] = []
    bus.node("watcher", lambda n: n.subscribe("/diagnostics", Diagnostic,
                                              diagnostics.append, depth=10000))
    busy = bus.start(FnNode("/car1/planner"))
    bus.start(HealthMonitor("health", params={"poll_s": 0.2}))
    wait_until(lambda: any(d.name == "health/node/car1/planner" and d.level == "ok"
                           for d in diagnostics), what="planner ok")
    busy.call_soon_threadsafe(lambda: time.sleep(SILENT_S + 2.0))  # a long solve, say
    stale = wait_until(lambda: next((d for d in diagnostics if d.level == "stale" and
                                     d.name == "health/node/car1/planner"), None),
                       what="planner stale")
    assert "heartbeat" in stale.message or "left the graph" in stale.message
