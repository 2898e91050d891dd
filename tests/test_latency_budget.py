"""Declared latency budgets: the graph file section, the chain matcher and its
percentiles, and the monitor node on a real bus (no timed assertions: the budgets are
either impossible to meet or impossible to miss)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fleetbus.bus.latency_chain import ChainLatency, LatencyHistogram, over_budget
from fleetbus.launch.graph import LATENCY_MONITOR, Graph, schema
from fleetbus.launch.loader import GraphError
from fleetbus.messages import Diagnostic, Event, Header, Imu, QuadrotorCommand
from fleetbus.nodes.latency import LatencyMonitor
from tests.helpers import FnNode, wait_until

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000  # ns


def write(tmp_path: Path, text: str, name: str = "graph.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- the graph file ---------------------------------------------------------------------------


def test_budgets_expand_per_vehicle_and_add_one_wall_clock_monitor(tmp_path):
    write(tmp_path, """
        latency_budgets:
          - {name: relay, source: in, sink: out, p99_ms: 3}
        """, "relay.yaml")
    path = write(tmp_path, """
        args: {budget: 20}
        include: [{file: relay.yaml, namespace: shared}]
        vehicles:
          - {id: drone1, type: quadrotor}
          - {id: ship2, type: vessel}
        nodes:
          - {name: talker, class: "fleetbus.nodes.demo:Talker"}
        latency_budgets:
          - {name: chatter, source: /chatter, sink: /echo, p99_ms: 5, window_s: 2}
          - name: imu_to_cmd
            source: /${vehicle_id}/imu
            sink: cmd
            p99_ms: "${budget}"
            p50_ms: 5
            per_vehicle: true
        """)
    graph = Graph.load(str(path))
    index = [n.full_name for n in graph.nodes].index("/latency")
    monitor = graph.nodes[index]
    assert monitor.node_class == LATENCY_MONITOR
    assert monitor.env == {"FLEETBUS_CLOCK": "wall"}
    budgets = {b["name"]: b for b in monitor.params["budgets"]}
    assert budgets == {
        "shared/relay": {"name": "shared/relay", "source": "/shared/in", "sink": "/shared/out",
                         "p99_ms": 3.0, "p50_ms": None, "window_s": 10.0, "per_vehicle": False},
        "chatter": {"name": "chatter", "source": "/chatter", "sink": "/echo", "p99_ms": 5.0,
                    "p50_ms": None, "window_s": 2.0, "per_vehicle": False},
        "imu_to_cmd/drone1": {"name": "imu_to_cmd/drone1", "source": "/drone1/imu",
                              "sink": "/drone1/cmd", "p99_ms": 20.0, "p50_ms": 5.0,
                              "window_s": 10.0, "per_vehicle": False},
        "imu_to_cmd/ship2": {"name": "imu_to_cmd/ship2", "source": "/ship2/imu",
                             "sink": "/ship2/cmd", "p99_ms": 20.0, "p50_ms": 5.0,
                             "window_s": 10.0, "per_vehicle": False},
    }
    assert graph.origins[index][1:] == (3, 5)  # problems with the monitor point at relay.yaml
    assert graph.origins[index][0].endswith("relay.yaml")


def test_a_graph_without_budgets_gets_no_monitor(tmp_path):
    path = write(tmp_path, "nodes:\n  - {name: talker, class: 'fleetbus.nodes.demo:Talker'}\n")
    assert [n.full_name for n in Graph.load(str(path)).nodes] == ["/talker"]


@pytest.mark.parametrize("text, expected", [
    ("latency_budgets:\n  - {name: a, source: /x, sink: /y}\n",
     ":2:5: Object missing required field `p99_ms`"),
    ("latency_budgets:\n  - {name: a, source: /x, sink: /y, p99_ms: 0}\n",
     ":2:45: Expected `float` > 0.0"),
    ("latency_budgets:\n  - {name: a, source: /x, sink: /y, p99_ms: 1, window_s: -1}\n",
     ":2:58: Expected `float` > 0.0"),
    ("latency_budgets:\n  - {name: a, source: /x, sink: /y, p99_ms: 1, colour: red}\n",
     ":2:5: Object contains unknown field `colour`"),
    ("latency_budgets:\n  - {name: a, source: '/${nope}/x', sink: /y, p99_ms: 1}\n",
     ":2:23: unknown argument ${nope}"),
    ("latency_budgets:\n  - {name: a, source: '/${vehicle_id}/x', sink: /y, p99_ms: 1}\n",
     ":2:23: unknown argument ${vehicle_id}"),
    ("latency_budgets:\n  - {name: a, source: /x, sink: /y, p99_ms: 1, per_vehicle: true}\n",
     ":2:61: per_vehicle, but this file lists no vehicles"),
    ("latency_budgets:\n  - {name: a, source: /x, sink: /y, p99_ms: 1}\n"
     "  - {name: a, source: /z, sink: /y, p99_ms: 1}\n",
     ":3:5: two latency budgets are named a"),
    ("latency_budgets: {name: a}\n", ":1:18: Expected `array`, got `object`"),
])
def test_budget_errors_name_file_line_and_column(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(GraphError) as err:
        Graph.load(str(path))
    assert f"{path}{expected}" in str(err.value)


def test_check_builds_the_monitor_from_the_file(tmp_path):
    path = write(tmp_path, """
        nodes:
          - {name: talker, class: "fleetbus.nodes.demo:Talker"}
          - {name: echo, class: "fleetbus.nodes.demo:Echo"}
        latency_budgets:
          - {name: chatter, source: /chatter, sink: /echo, p99_ms: 5}
        """)
    result = subprocess.run([sys.executable, "-m", "fleetbus.cli", "launch", "--check",
                             str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_has_the_section_and_the_published_file_too():
    definition = schema()["$defs"]["LatencyBudget"]
    assert definition["required"] == ["name", "source", "sink", "p99_ms"]
    assert definition["properties"]["p99_ms"]["exclusiveMinimum"] == 0
    assert schema()["$defs"]["GraphFile"]["properties"]["latency_budgets"]["items"] == {
        "$ref": "#/$defs/LatencyBudget"}
    published = json.loads((ROOT / "launch" / "fleetbus-graph.schema.json").read_text())
    assert published["$defs"]["LatencyBudget"] == definition


# -- the matcher ------------------------------------------------------------------------------


def chain(**kw) -> ChainLatency:
    """A chain whose sink has already answered once (stamp 0), so sources count."""
    latency = ChainLatency(window_s=10.0, **kw)
    latency.sink(0, 0, 0)
    return latency



def test_each_source_is_answered_by_the_first_sink_stamped_at_or_after_it():
    latency = chain()
    latency.source(10, 100 * MS, 0)
    latency.source(20, 110 * MS, 0)
    latency.source(30, 120 * MS, 0)  # the sink below is older: stays pending
    latency.sink(20, 150 * MS, 0)  # answers 10 (50 ms) and 20 (40 ms)
    latency.sink(25, 160 * MS, 0)  # answers nothing new
    summary = latency.summary(0)
    assert (summary.samples, summary.pending) == (2, 1)
    assert summary.max_ms == pytest.approx(50.0)
    assert summary.p50_ms == pytest.approx(45.0)
    latency.sink(31, 200 * MS, 0)
    assert latency.summary(0).max_ms == pytest.approx(80.0)
    assert latency.pending == 0


def test_sources_before_the_sink_first_answers_are_not_measured():
    latency = ChainLatency(window_s=10.0)
    latency.source(10, 0, 0)  # e.g. the controller still building its solver
    latency.sink(10, 5_000 * MS, 0)
    assert latency.summary(0).run_samples == 0
    latency.source(20, 5_010 * MS, 0)
    latency.sink(20, 5_012 * MS, 0)
    assert latency.summary(0).run_max_ms == pytest.approx(2.0)


def test_out_of_order_arrival_and_stamps():
    latency = chain()
    latency.sink(30, 200 * MS, 0)  # the sink reached the monitor before its source
    latency.source(30, 190 * MS, 0)
    assert latency.summary(0).max_ms == pytest.approx(10.0)
    latency.source(30, 210 * MS, 0)  # stamped as old, but sent after that sink: pending
    assert latency.pending == 1
    latency.source(50, 220 * MS, 0)
    latency.source(40, 221 * MS, 0)  # stamps out of order
    latency.sink(45, 230 * MS, 0)  # answers 30 and 40, not 50
    summary = latency.summary(0)
    assert (summary.samples, summary.pending) == (3, 1)
    assert summary.max_ms == pytest.approx(20.0)


def test_unanswered_sources_are_bounded_dropping_the_oldest():
    latency = chain(max_pending=5)
    for stamp in range(1, 9):
        latency.source(stamp, stamp * MS, 0)
    assert (latency.pending, latency.dropped) == (5, 3)
    latency.sink(100, 10 * MS, 0)  # the five newest (stamps 4..8) are answered
    summary = latency.summary(0)
    assert summary.run_samples == 5 and summary.run_max_ms == pytest.approx(6.0)
    assert summary.dropped == 3


def test_window_expires_by_time_and_count_but_the_run_keeps_everything():
    latency = chain(max_window=3)
    for i in range(5):
        latency.source(i + 1, 0, now_ns=i * 1_000 * MS)
        latency.sink(i + 1, (i + 1) * MS, now_ns=i * 1_000 * MS)
    assert latency.summary(4_000 * MS).samples == 3  # by count
    assert latency.summary(13_500 * MS).samples == 1  # by age: only the one made at 4 s
    summary = latency.summary(20_000 * MS)
    assert summary.samples == 0 and math.isnan(summary.p99_ms)
    assert summary.run_samples == 5 and summary.run_max_ms == pytest.approx(5.0)


def test_percentiles_of_window_and_run():
    latency = chain()
    values = np.random.default_rng(1).permutation(np.arange(1, 101))  # ms
    for stamp, value in enumerate(values, 1):
        latency.source(stamp, 0, 0)
        latency.sink(stamp, int(value) * MS, 0)
    summary = latency.summary(0)
    assert summary.p50_ms == pytest.approx(50.5)  # linear interpolation, as numpy
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == summary.run_max_ms == pytest.approx(100.0)
    assert summary.run_p50_ms == pytest.approx(50.0, rel=0.005)  # nearest rank, binned
    assert summary.run_p99_ms == pytest.approx(99.0, rel=0.005)


def test_the_run_histogram_stays_small_and_close():
    histogram = LatencyHistogram()
    samples = np.random.default_rng(2).lognormal(np.log(5 * MS), 1.0, 100_000).astype(int)
    for value in samples:
        histogram.add(int(value))
    assert len(histogram.bins) < 2_000
    for pct in (50, 90, 99, 99.9):
        exact = np.percentile(samples, pct, method="inverted_cdf")
        assert histogram.percentile_ns(pct) == pytest.approx(exact, rel=0.006)
    assert histogram.percentile_ns(100) == histogram.max_ns == samples.max()
    assert math.isnan(LatencyHistogram().percentile_ns(99))


def test_over_budget():
    assert over_budget(1.0, 21.0, 20.0, None)
    assert not over_budget(1.0, 20.0, 20.0, None)
    assert over_budget(6.0, 10.0, 20.0, 5.0)
    assert not over_budget(math.nan, math.nan, 20.0, 5.0)  # no samples break nothing


# -- the node on a real bus ---------------------------------------------------------------


def test_the_monitor_reports_each_chain_and_warns_once_when_over_budget(bus):
    budgets = [
        {"name": "tiny", "source": "/t/imu", "sink": "/t/cmd", "p99_ms": 0.001},
        {"name": "generous", "source": "/t/imu", "sink": "/t/cmd", "p99_ms": 1e6,
         "p50_ms": 1e6, "window_s": 2.0},
        {"name": "silent", "source": "/t/imu", "sink": "/t/nobody", "p99_ms": 1.0},
    ]
    monitor = bus.start(LatencyMonitor("latency", params={"budgets": budgets,
                                                          "report_period_s": 0.2}))
    diagnostics: dict[str, list[Diagnostic]] = {b["name"]: [] for b in budgets}
    events: list[Event] = []

    def watch(node: FnNode) -> None:
        node.subscribe("/diagnostics", Diagnostic,
                       lambda d: diagnostics[d.name.removeprefix("latency/")].append(d))
        node.subscribe("/events", Event, events.append)

    def relay(node: FnNode) -> None:  # the chain's processing: same stamp in, out
        pub = node.publisher("/t/cmd", QuadrotorCommand)
        node.subscribe("/t/imu", Imu, lambda m: pub.publish(QuadrotorCommand(
            header=m.header, thrust_n=m.linear_acceleration.z * 1.5)))

    def sensor(node: FnNode) -> None:
        pub = node.publisher("/t/imu", Imu)
        node.timer(0.01, lambda: pub.publish(Imu(header=Header(stamp_ns=node.now_ns()))))

    bus.node("watch", watch)
    bus.node("relay", relay)
    bus.node("sensor", sensor)
    wait_until(lambda: events, timeout=30, what="the tiny budget's event")
    seen = len(diagnostics["generous"])
    wait_until(lambda: [d for d in diagnostics["generous"][seen:]
                        if int(d.values["samples"])][2:], timeout=30,
               what="three more reports of the generous budget with samples")

    (event,) = events  # the tiny budget stays broken: one event, not one per report
    assert (event.kind, event.severity, event.source) == ("latency_budget", "warn",
                                                          monitor.name)
    assert "/t/imu -> /t/cmd" in event.message and "budget 0.001 ms" in event.message
    assert event.data["budget"] == "tiny" and float(event.data["p99_ms"]) > 0.001
    tiny = diagnostics["tiny"][-1]
    assert tiny.level == "warn" and tiny.values["violations"] == "1"
    assert tiny.values["run_within_budget"] == "false"
    generous = diagnostics["generous"][-1]
    assert generous.level == "ok" and generous.values["violations"] == "0"
    assert generous.values["run_within_budget"] == "true"
    assert int(generous.values["run_samples"]) >= int(generous.values["samples"]) > 0
    assert float(generous.values["p50_ms"]) <= float(generous.values["p99_ms"]) \
        <= float(generous.values["max_ms"])
    assert generous.values["budget_p50_ms"] == "1e+06"
    silent = diagnostics["silent"][-1]  # its sink never answered: nothing pending either
    assert silent.level == "stale" and silent.values["samples"] == "0"
    assert silent.values["pending"] == "0" and silent.values["run_within_budget"] == "unknown"


@pytest.mark.parametrize("budgets, match", [
    ([{"name": "a", "source": "/x", "sink": "/y"}], "missing required field `p99_ms`"),
    ([{"name": "a", "source": "/x", "sink": "/y", "p99_ms": 1, "per_vehicle": True}],
     "the graph loader expands those"),
    ([{"name": "a", "source": "/x", "sink": "/y", "p99_ms": 1}] * 2, "two budgets are named a"),
])
def test_bad_budgets_fail_setup_by_name(bus, budgets, match):
    node = bus.start(LatencyMonitor("latency", params={"budgets": budgets}), check=False)
    assert match in str(node.setup_error)
