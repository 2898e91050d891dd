"""`fleetbus launch`: graph files, --check, supervision — with real processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import fleetbus
from fleetbus.launch.graph import Graph, schema
from fleetbus.launch.loader import GraphError
from fleetbus.launch.supervisor import Supervisor
from tests.helpers import graph_nodes, wait_until

ROOT = Path(__file__).resolve().parent.parent
NODES = "tests.launch_nodes"


def write(tmp_path: Path, text: str, name: str = "graph.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def launch(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetbus.cli", "launch", *args, "--log-format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, FLEETBUS_AUTOREGISTRY="1"), start_new_session=True, **kw)


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetbus.cli", "launch", "--check", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


# -- files and --check ------------------------------------------------------------------------


def test_vehicles_include_args_and_sets_expand(tmp_path):
    write(tmp_path, """
        args: {rate: 5}
        nodes:
          - {name: shared, class: "tests.launch_nodes:Ticker", params: {setup_delay: "${rate}"}}
        """, "shared.yaml")
    path = write(tmp_path, """
        include: [{file: shared.yaml, namespace: common, args: {rate: 2}}]
        vehicles:
          - {id: drone1, type: quadrotor, start: {x: 1.5}}
          - {id: ship2, type: vessel, params: {sim: {setup_delay: 0.5}}}
        vehicle_nodes:
          - name: sim
            class: tests.launch_nodes:Ticker
            params: {vehicle_id: "${vehicle_id}"}
          - {name: sink, class: "tests.launch_nodes:Ticker", depends_on: [sim]}
        """)
    graph = Graph.load(str(path), sets=["sink.setup_delay=0.25"])
    nodes = {n.full_name: n for n in graph.nodes}
    assert sorted(nodes) == ["/common/shared", "/drone1/sim", "/drone1/sink", "/ship2/sim",
                             "/ship2/sink"]
    assert nodes["/common/shared"].params == {"setup_delay": 2}
    assert nodes["/drone1/sim"].params == {"vehicle_id": "drone1"}
    assert nodes["/ship2/sim"].params == {"vehicle_id": "ship2", "setup_delay": 0.5}
    assert nodes["/ship2/sink"].depends_on == ["/ship2/sim"]
    assert nodes["/drone1/sink"].params == {"setup_delay": 0.25}


def test_the_simulator_takes_the_graph_vehicles_with_their_model_overrides(tmp_path):
    path = write(tmp_path, """
        args: {mass: 2.5}
        vehicles:
          - {id: drone1, type: quadrotor, start: {z: 3}, model: {mass_kg: "${mass}"}}
          - {id: car1, type: car}
        nodes:
          - {name: sim, class: "fleetbus.nodes.simulator:Simulator",
             params: {vehicles: "${vehicles}"}}
        """)
    (sim,) = Graph.load(str(path)).nodes
    assert sim.params["vehicles"] == [
        {"id": "drone1", "type": "quadrotor", "start": {"z": 3.0}, "params": {"mass_kg": 2.5}},
        {"id": "car1", "type": "car", "start": {}, "params": {}}]
    assert check(path).returncode == 0  # and the simulator accepts them


def test_rate_contracts_reach_the_health_monitor_or_bring_one(tmp_path):
    write(tmp_path, """
        rates: {tick: 10, "/abs": 2}
        nodes:
          - {name: t, class: "tests.launch_nodes:Ticker"}
        """, "part.yaml")
    own = "{name: health, class: 'fleetbus.monitoring.health:HealthMonitor', " \
          "params: {rates: {/imu: 100}}}"
    for nodes, monitor in (("", "/health"), (f"nodes:\n  - {own}\n", "/health")):
        path = write(tmp_path, "rates: {/imu: 50, /gps: 1}\ninclude:\n"
                     "  - {file: part.yaml, namespace: car1}\n" + nodes)
        graph = Graph.load(str(path))
        assert graph.rates == {"/car1/tick": 10, "/abs": 2, "/imu": 50, "/gps": 1}
        health = graph.node(monitor)
        expected = {**graph.rates, "/imu": 100} if nodes else graph.rates
        assert health.params["rates"] == expected  # a monitor's own contract wins
        assert check(path).returncode == 0


@pytest.mark.parametrize("text, expected", [
    ("vehicles:\n  - {id: b1, type: blimp}\n", ":2:20: Invalid enum value 'blimp'"),
    ("nodes:\n  - name: a\n   class: [\n", ":3:4: invalid YAML"),
    ("nodes:\n  - {name: a, class: 'x:Y', restart: sometimes}\n", ":2:38: Invalid enum value"),
    ("nodes:\n  - {name: a, class: 'x:Y', colour: red}\n", "unknown field `colour`"),
    ("nodes:\n  - {name: a, class: 'x:Y', params: {r: '${nope}'}}\n", "unknown argument ${nope}"),
    ("nodes:\n  - {name: a, class: 'x:Y'}\n  - {name: a, class: 'x:Y'}\n",
     ":3:5: two nodes are named /a"),
    ("nodes:\n  - {name: a, class: 'x:Y', depends_on: [b]}\n"
     "  - {name: b, class: 'x:Y', depends_on: [a]}\n", "depends_on cycle: /a -> /b -> /a"),
    ("nodes:\n  - {name: a, class: 'x:Y', depends_on: [zz]}\n", "depends on zz"),
    ("nodes:\n  - {name: a}\n", "give exactly one of `class`"),
    ("rates: {/car1/imu: -5}\n", ":1:20: the rate contract of '/car1/imu' must be"),
])
def test_file_errors_name_file_line_and_column(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(GraphError) as err:
        Graph.load(str(path))
    assert str(path) in str(err.value) and expected in str(err.value)
    result = check(path)  # the CLI reports the same and exits 2
    assert result.returncode == 2 and expected in result.stdout


@pytest.mark.parametrize("node, expected", [
    ("{name: a, class: 'tests.launch_nodes:Nope'}", "cannot import"),
    ("{name: a, class: 'tests.launch_nodes:Ticker', params: {setup_delay: fast}}",
     "parameter 'setup_delay' is float, got str"),
    ("{name: a, class: 'tests.launch_nodes:Ticker', params: {colour: 1}}",
     "unknown parameter 'colour'"),
    ("{name: a, class: 'tests.launch_nodes:Crashy'}", "this node cannot start"),
])
def test_check_runs_setup_to_find_class_and_parameter_errors(tmp_path, node, expected):
    result = check(write(tmp_path, f"nodes:\n  - {node}\n"))
    assert result.returncode == 2, result.stdout
    assert expected in result.stdout and ":2:5:" in result.stdout


def test_check_finds_publisher_subscriber_type_mismatch(tmp_path):
    result = check(write(tmp_path, """
        nodes:
          - {name: ticker, class: "tests.launch_nodes:Ticker"}
          - {name: sink, class: "tests.launch_nodes:TextSink"}
        """))
    assert result.returncode == 2
    assert "/tick: /ticker publishes fleetbus/Float64 but /sink subscribes with " \
           "fleetbus/String" in result.stdout


@pytest.mark.parametrize("name", ["demo.yaml", "sim.yaml"])
def test_the_shipped_graphs_pass_check(name):
    result = check(ROOT / "launch" / name)
    assert result.returncode == 0, result.stdout


def test_published_schema_matches_the_code():
    published = json.loads((ROOT / "launch" / "fleetbus-graph.schema.json").read_text())
    assert published == schema()


# -- supervision ---------------------------------------------------------------------------


def test_launch_starts_in_dependency_order_and_restarts_a_killed_node(bare_bus, tmp_path):
    path = write(tmp_path, """
        nodes:
          - {name: slow, class: "tests.launch_nodes:Ticker", params: {setup_delay: 1.0}}
          - {name: after, class: "tests.launch_nodes:Ticker", depends_on: [slow]}
          - name: pair_a
            class: tests.launch_nodes:Ticker
            process: pair
          - name: pair_b
            class: tests.launch_nodes:Ticker
            process: pair
        """)
    proc = launch(str(path))
    try:
        nodes = wait_until(lambda: (n := graph_nodes(bare_bus.config)) and len(n) == 4 and n,
                           timeout=30, what="all four nodes registered")
        assert nodes["/after"].started_ns > nodes["/slow"].started_ns
        assert nodes["/pair_a"].pid == nodes["/pair_b"].pid  # one process group
        victim = nodes["/slow"].pid
        os.kill(victim, signal.SIGKILL)
        restarted = wait_until(
            lambda: (n := graph_nodes(bare_bus.config)).get("/slow") and n["/slow"].pid != victim
            and n, timeout=30, what="/slow restarted")
        assert restarted["/after"].pid == nodes["/after"].pid  # the rest kept running
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert any("restarting" in e["text"] for e in events(out))


def test_a_node_that_keeps_failing_is_given_up_with_nonzero_exit(bare_bus, tmp_path):
    path = write(tmp_path, """
        nodes:
          - {name: quitter, class: "tests.launch_nodes:Quitter", max_restarts: 2}
          - {name: crashy, class: "tests.launch_nodes:Crashy", restart: never, required: false}
        """)
    proc = launch(str(path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    texts = [e["text"] for e in events(out)]
    assert any("giving up after 2 restarts" in t for t in texts)
    assert any("setup failed" in t and "this node cannot start" in t for t in texts)


def test_a_missing_command_fails_clearly(bare_bus, tmp_path):
    path = write(tmp_path, "nodes:\n  - {name: ghost, cmd: [/no/such/program]}\n")
    proc = launch(str(path))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "cannot start '/no/such/program'" in out


def test_health_timeout_restarts_a_frozen_node(bare_bus, tmp_path):
    path = write(tmp_path, """
        nodes:
          - {name: frozen, class: "tests.launch_nodes:Freezer", health_timeout: 1.5,
             stop_timeout_s: 1.0}
        """)
    proc = launch(str(path), "--duration", "60")
    try:
        first = wait_until(lambda: graph_nodes(bare_bus.config).get("/frozen"), timeout=30,
                           what="/frozen registered")
        wait_until(lambda: (n := graph_nodes(bare_bus.config).get("/frozen")) and
                   n.pid != first.pid, timeout=40, what="/frozen restarted for silence")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert any("no heartbeat" in e["text"] for e in events(out))


def test_sigint_during_startup_leaves_no_process_behind(bare_bus, tmp_path):
    marker = f"marker-{os.getpid()}-{time.monotonic_ns()}"  # in every worker's command line
    path = write(tmp_path, f"""
        nodes:
          - name: slow
            class: tests.launch_nodes:Ticker
            params: {{setup_delay: 5.0, vehicle_id: {marker}}}
          - name: after
            class: tests.launch_nodes:Ticker
            params: {{vehicle_id: {marker}}}
            depends_on: [slow]
        """)
    proc = launch(str(path))

    def workers() -> list[str]:
        found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
        return found.stdout.split()

    wait_until(workers, what="the slow node's process")  # it is inside its setup() now
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    wait_until(lambda: not workers(), what="every process of the launch gone")
    leftovers = [p.name for p in bare_bus.run_dir.iterdir() if p.name != "registry.lock"]
    assert leftovers == []


def test_a_graph_built_in_python_launches(bare_bus):
    graph = fleetbus.Graph("py")
    graph.add("ticker", "tests.launch_nodes:Ticker", namespace="boat3")
    graph.add("second", "tests.launch_nodes:Ticker", depends_on=["ticker"], namespace="boat3")
    log = io.StringIO()
    supervisor = Supervisor(graph, log_format="json", out=log)
    result = []
    runner = threading.Thread(target=lambda: result.append(supervisor.run()))
    runner.start()
    try:
        wait_until(lambda: {"/boat3/ticker", "/boat3/second"} <= set(graph_nodes(bare_bus.config)),
                   timeout=30, what="both nodes of the Python-built graph")
    finally:
        supervisor.stop()
        runner.join(60)
    assert result == [0], log.getvalue()
    assert graph_nodes(bare_bus.config) == {}  # stopped cleanly: its embedded registry too


def test_graph_renders_static_topology_as_mermaid_and_dot():
    out = subprocess.run([sys.executable, "-m", "fleetbus.cli", "graph", "launch/demo.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("flowchart LR")
    assert "n_talker --> t_chatter" in out and "t_chatter --> n_echo" in out
    assert "fleetbus/Blob" in out
    dot = subprocess.run([sys.executable, "-m", "fleetbus.cli", "graph", "launch/demo.yaml",
                          "--format", "dot"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    assert dot.startswith("digraph fleetbus") and "n_echo -> t_echo;" in dot


def test_a_process_ignoring_sigint_and_sigterm_is_killed_after_its_grace(bare_bus, tmp_path):
    path = write(tmp_path, """
        nodes:
          - name: stubborn
            cmd: [sh, -c, "trap '' INT TERM; echo started; while true; do sleep 0.1; done"]
            stop_timeout_s: 0.5
        """)
    proc = launch(str(path), "--duration", "2")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    texts = [e["text"] for e in events(out)]
    assert "started" in texts  # its output was streamed under its name
    assert any("sending SIGTERM" in t for t in texts)
    assert any("sending SIGKILL" in t for t in texts)


def test_check_finds_two_publishers_of_one_topic_with_different_types(tmp_path):
    result = check(write(tmp_path, """
        nodes:
          - {name: ticker, class: "tests.launch_nodes:Ticker", namespace: a}
          - {name: talker, class: "fleetbus.nodes.demo:Talker", remap: {chatter: /a/tick}}
        """))
    assert result.returncode == 2
    assert "/a/tick is published with different types" in result.stdout


def test_graph_live_draws_what_is_running(bare_bus, tmp_path):
    path = write(tmp_path, """
        nodes:
          - {name: talker, class: "fleetbus.nodes.demo:Talker", params: {rate_hz: 5.0}}
          - {name: echo, class: "fleetbus.nodes.demo:Echo"}
        """)
    proc = launch(str(path))
    try:
        wait_until(lambda: {"/talker", "/echo"} <= set(graph_nodes(bare_bus.config)),
                   timeout=30, what="the graph up")
        out = subprocess.run([sys.executable, "-m", "fleetbus.cli", "graph", "--live"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert "n_talker --> t_chatter" in out and "t_chatter --> n_echo" in out
