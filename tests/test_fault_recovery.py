"""Faults injected for real: a node killed with SIGKILL under the supervisor, a registry
killed while nodes start, a subscriber too slow for its publisher, a tcp link cut."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse

from fleetbus.bus.config import BusConfig
from fleetbus.messages import String
from tests.helpers import graph_nodes, read_jsonl, run_on, wait_until
from tests.tcp_relay import TcpRelay
from tests.test_launch import events, launch, write


def test_a_killed_node_comes_back_with_its_links_and_latched_inputs(bare_bus, tmp_path):
    """kill -9 the middle of latch -> relay -> (this test): the supervisor restarts it,
    the latched /config reaches the new instance, this subscriber resumes on its own, the
    other node never stops, and the dead instance's socket files are gone."""
    path = write(tmp_path, """
        nodes:
          - {name: latch, class: "tests.launch_nodes:Latch", params: {value: v1}}
          - {name: relay, class: "tests.launch_nodes:Relay"}
        """)
    proc = launch(str(path))
    got: list[tuple[str, str]] = []  # (publisher uid, text)
    try:
        def setup(node: Any) -> None:
            node.sub = node.subscribe("/relayed", String, lambda m: got.append(
                (node.sub.last_header.publisher, m.data)))
        bare_bus.node("watcher", setup)
        wait_until(lambda: got, timeout=30, what="the relay's first messages")
        nodes = graph_nodes(bare_bus.config)
        victim = nodes["/relay"]
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: any(uid != victim.uid for uid, _ in got), timeout=30,
                   what="messages from the restarted relay")
        after = graph_nodes(bare_bus.config)
        assert after["/relay"].uid != victim.uid
        assert after["/latch"].pid == nodes["/latch"].pid  # the rest kept running
        new = [text for uid, text in got if uid != victim.uid]
        assert new[0].startswith("v1 ")  # the latched value reached the new instance
        leftovers = [p.name for p in bare_bus.config.run_dir.iterdir()
                     if p.name.startswith(f"{victim.pid}-")]
        assert not leftovers
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert any("restarting" in e["text"] for e in events(out))


def test_a_node_started_while_the_registry_is_down_connects_once_it_is_back(bare_bus):
    bus = bare_bus
    registry = bus.registry_process()
    bus.spawn("talker", "--topic", "/chatter", "--rate", "50")
    wait_until(lambda: "/talker" in graph_nodes(bus.config), what="the talker registered")
    registry.kill()  # kill -9
    out = bus.out("late.jsonl")
    late = bus.spawn("listener", "--name", "late", "--out", str(out))
    time.sleep(1.0)  # the listener is up, with no registry to find the talker through
    assert late.proc.poll() is None and not read_jsonl(out)
    bus.registry_process()
    wait_until(lambda: len(read_jsonl(out)) >= 20, what="the late listener to receive")
    wait_until(lambda: graph_nodes(bus.config)["/late"].subscriptions[0].publishers == 1,
               what="the new registry to list the late listener's link")


def test_a_slow_subscriber_loses_only_its_own_messages(bus):
    """A publisher with a slow and a fast subscriber: the fast one gets everything, the
    slow one's bounded queues (the publisher's per-subscriber queue, then its own)
    overflow and it counts exactly what it lost; the publisher sends all of it. Gone and
    back, a subscriber gets the latched value again."""
    def source(node: Any) -> None:
        node.pub = node.publisher("/burst", String, depth=100)
        node.latched = node.publisher("/mode", String, latched=True)
        node.latched.publish(String(data="survey"))
    src = bus.node("source", source)
    fast: list[String] = []
    slow: list[String] = []
    fast_node = bus.node("fast", lambda n: setattr(n, "sub", n.subscribe(
        "/burst", String, fast.append, depth=100_000)))
    slow_node = bus.node("slow", lambda n: setattr(n, "sub", n.subscribe(
        "/burst", String, lambda m: (slow.append(m), time.sleep(0.002)), depth=10)))
    wait_until(lambda: src.pub.subscribers == 2, what="both subscribers")
    sent = 3000
    src.call_soon_threadsafe(lambda: [src.pub.publish(String(data=str(k)))
                                      for k in range(sent)]).result(30)
    wait_until(lambda: len(fast) == sent, what="the fast subscriber to get everything")
    # A loss shows at the next arrival: send markers until one gets through the queues.
    markers = iter(range(sent, sent + 10_000))

    def a_marker_arrived() -> bool:
        if slow and int(slow[-1].data) >= sent:
            return True
        k = next(markers)
        src.call_soon_threadsafe(lambda: src.pub.publish(String(data=str(k)))).result(10)
        return False
    wait_until(a_marker_arrived, interval=0.2, what="a marker through the slow queues")
    # every message up to the last one received was either delivered or counted lost
    assert len(slow) + slow_node.sub.gaps == int(slow[-1].data) + 1
    assert fast_node.sub.gaps == 0 and [m.data for m in fast[:sent]] == [
        str(k) for k in range(sent)]
    assert slow_node.sub.gaps > 0
    assert [int(m.data) for m in slow] == sorted(int(m.data) for m in slow)

    modes: list[String] = []
    first = bus.node("returning", lambda n: n.subscribe("/mode", String, modes.append))
    wait_until(lambda: modes, what="the latched value")
    first.stop()
    assert first.stopped.wait(10)
    bus.node("returning", lambda n: n.subscribe("/mode", String, modes.append))
    wait_until(lambda: len(modes) == 2, what="the latched value again after returning")
    assert [m.data for m in modes] == ["survey", "survey"]


def test_a_tcp_link_that_drops_reconnects_and_the_gap_shows_in_top(bus):
    """A publisher exposing tcp on loopback; a subscriber on a bus of its own (another
    host) wired to it through a relay that cuts every connection and refuses new ones for
    a while: the link comes back by itself, and what was sent meanwhile is counted lost,
    in the subscriber and in `fleetbus top` on its bus."""
    def talker(node: Any) -> None:
        node.pub = node.publisher("/chatter", String)
        node.k = 0

        def tick() -> None:
            node.pub.publish(String(data=str(node.k)))
            node.k += 1
        node.timer(0.01, tick)
    src = bus.node("talker", talker, config=BusConfig.from_env(tcp_interface="127.0.0.1"))
    target = urlparse(next(u for u in src._data_urls if u.startswith("tcp://")))
    relay = TcpRelay(target.hostname, target.port)
    bus.closers.append(relay.close)
    other = bus.new_run_dir()
    remote = BusConfig.from_env(run_dir=other, registry=f"ipc://{other}/registry",
                                host="another-host")
    bus.registry(remote)
    got: list[String] = []
    sub = bus.node("remote", lambda n: setattr(n, "sub", n.subscribe(
        "/chatter", String, got.append)), config=remote)
    run_on(sub, lambda: sub.sub.connect(relay.url))
    wait_until(lambda: len(got) > 20, what="messages over the relayed tcp link")
    relay.drop()
    cut_at = len(got)
    time.sleep(1.0)  # the outage: the talker goes on publishing into the cut link
    relay.resume()
    wait_until(lambda: len(got) > cut_at + 20, timeout=30, what="the link to come back")
    assert sub.sub.gaps > 0
    numbers = [int(m.data) for m in got]
    assert numbers == sorted(numbers)
    assert len(numbers) + sub.sub.gaps == numbers[-1] - numbers[0] + 1

    def lost_in_top() -> int:
        result = subprocess.run(
            [sys.executable, "-m", "fleetbus.cli", "top", "--once", "--json"],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, FLEETBUS_RUN_DIR=str(other),
                     FLEETBUS_REGISTRY=remote.registry))
        rows = json.loads(result.stdout)["topics"]
        return next(t["lost"] for t in rows if t["topic"] == "/chatter")
    wait_until(lambda: lost_in_top() > 0, timeout=30, what="the loss shown by fleetbus top")
