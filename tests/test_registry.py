"""Discovery: registry restarts, nodes leaving and expiring, two hosts joined over tcp,
type mismatches reported to both sides and by the doctor."""

from __future__ import annotations

import signal
import time

from fleetbus.bus.config import BusConfig
from fleetbus.bus.doctor import diagnose
from fleetbus.bus.protocol import EXPIRY_S
from fleetbus.bus.registry_client import fetch_graph
from tests.helpers import barrier, graph_nodes, read_jsonl, wait_until
from tests.procs import Number, Text


def _subscriber(topic, cls):
    def setup(node):
        node.sub = node.subscribe(topic, cls, node.got.append)

    return setup


def _consecutive(rows):
    ns = [row["n"] for row in rows]
    return ns == list(range(ns[0], ns[0] + len(ns)))


def test_registry_restart_keeps_data_flowing_and_rebuilds_graph(bare_bus):
    bus = bare_bus
    registry = bus.registry_process()
    bus.spawn("talker", "--topic", "/chatter", "--rate", "100")  # publishes until stopped
    out_a = bus.out("a.jsonl")
    bus.spawn("listener", "--name", "listener_a", "--out", str(out_a))
    wait_until(lambda: len(read_jsonl(out_a)) >= 10, what="the first listener to receive")

    registry.kill()  # kill -9: no goodbye, stale socket file left behind
    assert fetch_graph(bus.config, 0.2) is None
    seen = len(read_jsonl(out_a))
    wait_until(lambda: len(read_jsonl(out_a)) >= seen + 30,
               what="data to keep flowing without a registry")

    bus.registry_process()
    out_b = bus.out("b.jsonl")
    bus.spawn("listener", "--name", "listener_b", "--out", str(out_b))
    wait_until(lambda: read_jsonl(out_b), what="a listener started after the restart to receive")
    nodes = bus.wait_for_nodes("/talker", "/listener_a", "/listener_b")
    assert nodes["/listener_a"].subscriptions[0].publishers == 1
    # Past the new registry's warm-up (EXPIRY_S): its view is now "complete", and links
    # must still stand (nobody may be dropped for not having re-announced yet).
    seen = len(read_jsonl(out_a))
    wait_until(lambda: len(read_jsonl(out_a)) >= seen + 400, what="4 more seconds of data")
    rows_a, rows_b = read_jsonl(out_a), read_jsonl(out_b)
    assert rows_a[-1]["gaps"] == 0 and _consecutive(rows_a)
    assert rows_b[-1]["gaps"] == 0 and _consecutive(rows_b)
    assert len(rows_b) > 100


def test_node_that_exits_leaves_the_graph(bus):
    child = bus.spawn("talker", "--topic", "/chatter")
    bus.wait_for_nodes("/talker")
    child.signal(signal.SIGTERM)
    assert child.proc.wait(10) == 0
    wait_until(lambda: "/talker" not in graph_nodes(bus.config), what="the talker to be gone")


def test_killed_publisher_expires_and_subscriber_disconnects(bus):
    listener = bus.node("listener", _subscriber("/chatter", Text))
    child = bus.spawn("talker", "--topic", "/chatter")
    wait_until(lambda: listener.got and listener.sub.publishers == 1, what="a connection")
    child.kill()  # no Bye: only the registry's expiry can tell
    wait_until(lambda: "/talker" not in graph_nodes(bus.config), what="the talker to expire")
    # Links outlive expiry by VANISHED_LINGER_S (a blocked publisher may come back).
    wait_until(lambda: listener.sub.publishers == 0, timeout=20,
               what="the listener to drop the link")


def test_two_registries_joined_over_tcp(bare_bus):
    """Two "hosts" on loopback: each has its own socket directory and registry; B joins
    A over tcp; a publisher on A reaches a subscriber on B over tcp."""
    bus = bare_bus
    dir_a, dir_b = bus.run_dir, bus.new_run_dir()
    config_a = BusConfig.from_env(run_dir=dir_a, registry=f"ipc://{dir_a}/registry", host="hostA")
    config_b = BusConfig.from_env(run_dir=dir_b, registry=f"ipc://{dir_b}/registry", host="hostB")
    registry_a = bus.registry(config_a, tcp="tcp://127.0.0.1:*")
    tcp_a = registry_a.endpoints[-1]
    assert tcp_a.startswith("tcp://127.0.0.1:") and not tcp_a.endswith(":*")
    bus.registry(config_b, join=[tcp_a])
    env_a = {
        "FLEETBUS_RUN_DIR": str(dir_a),
        "FLEETBUS_HOST": "hostA",
        "FLEETBUS_TCP": "127.0.0.1",
        "FLEETBUS_REGISTRY": tcp_a,  # the node reaches its registry over tcp as well
    }
    env_b = {"FLEETBUS_RUN_DIR": str(dir_b), "FLEETBUS_HOST": "hostB"}
    bus.spawn("talker", "--topic", "/fleet", "--count", "30", "--wait-subscribers", "1",
              env=env_a)
    out = bus.out("b.jsonl")
    bus.spawn("listener", "--topic", "/fleet", "--out", str(out), env=env_b)
    rows = wait_until(lambda: len(r := read_jsonl(out)) >= 30 and r, what="30 messages on B")
    assert [row["n"] for row in rows] == list(range(30))
    assert rows[-1]["gaps"] == 0
    assert rows[-1]["urls"] == [rows[-1]["urls"][0]]
    assert rows[-1]["urls"][0].startswith("tcp://127.0.0.1:")
    for config in (config_a, config_b):  # both registries see both hosts
        nodes = wait_until(lambda c=config: len(n := graph_nodes(c)) == 2 and n,
                           what=f"both nodes in {config.registry}")
        assert {name: node.host for name, node in nodes.items()} == {
            "/talker": "hostA", "/listener": "hostB",
        }


def test_publisher_on_other_host_without_tcp_is_unreachable(bus):
    """Nodes in one process but configured as two hosts: no shared inproc/ipc, and the
    publisher exposes no tcp endpoint, so the subscriber cannot connect and says why."""
    pub = bus.node("pub", lambda n: n.publisher("/far", Text),
                   config=BusConfig.from_env(host="hostA"))
    sub = bus.node("sub", _subscriber("/far", Text), config=BusConfig.from_env(host="hostB"))
    wait_until(lambda: sub.counters["unreachable"] >= 1, what="the unreachable count")
    assert sub.sub.publishers == 0
    graph = fetch_graph(bus.config)
    errors = [f for f in diagnose(graph) if f.level == "error"]
    assert any(set(f.nodes) == {pub.name, sub.name} and "FLEETBUS_TCP" in f.text for f in errors)


def test_type_mismatch_is_refused_and_reported(bus):
    bus.spawn("talker", "--topic", "/mixed", "--rate", "100")  # publishes test/Text
    wrong = bus.node("wrong", _subscriber("/mixed", Number))
    right = bus.node("right", _subscriber("/mixed", Text))
    wait_until(lambda: len(right.got) >= 20, what="the matching subscriber to receive")
    wait_until(lambda: wrong.counters["type_mismatch"] >= 1, what="type_mismatch on /wrong")
    wait_until(lambda: wrong.counters["registry_notice"] >= 1, what="a notice to /wrong")
    wait_until(
        lambda: graph_nodes(bus.config)["/talker"].counters.get("registry_notice", 0) >= 1,
        what="a notice to the talker (seen in its announced counters)",
    )
    barrier(wrong)
    assert wrong.got == []
    assert wrong.sub.publishers == 0 and wrong.sub.rejected == 0
    assert right.counters["type_mismatch"] == 0
    graph = fetch_graph(bus.config)
    mismatches = [f for f in diagnose(graph) if f.level == "error" and "/mixed" in f.text]
    assert len(mismatches) == 1, mismatches
    finding = mismatches[0]
    assert set(finding.nodes) == {"/talker", "/wrong"}
    for word in ("/talker", "/wrong", "test/Text", "test/Number"):
        assert word in finding.text
    assert finding.text in graph.problems


def test_a_publisher_blocked_past_expiry_keeps_its_subscribers(bus):
    """A callback that blocks the loop longer than the registry's expiry silences the
    heartbeats of a live node; its subscribers must still get what it sends next."""
    got: list[str] = []

    def talker(node):
        node.pub = node.publisher("/slow", Text)

    def listener(node):
        node.sub = node.subscribe("/slow", Text, lambda m: got.append(m.data))

    slow = bus.node("slow", talker)
    sink = bus.node("sink", listener)
    wait_until(lambda: sink.sub.publishers == 1, what="the link")

    def block_then_publish():
        time.sleep(EXPIRY_S + 1.0)  # the registry forgets /slow meanwhile
        slow.pub.publish(Text(data="still here"))

    slow.call_soon_threadsafe(block_then_publish).result(30)
    wait_until(lambda: got, what="the message sent after the block")
    assert got == ["still here"]
