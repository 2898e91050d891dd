"""What serving a topic to the Foxglove app costs its publisher
(`python -m pytest benchmarks/test_bridge_overhead.py --benchmark-only`).

One publisher node (in this process) sends the same Odometry on three topics, side by
side in one run:

- plain: one plain subscriber (its own process) decodes every message;
- watched: that subscriber, plus the Foxglove bridge (another process), which serves the
  topic to a WebSocket client subscribed to its channel: it turns every message into JSON
  and sends it on;
- two plain, the control: that subscriber plus a second plain one (another process), to
  tell what any second subscriber costs from what the bridge costs.

A burst is BURST publish() calls back to back on the publisher's own thread, timed there
twice: the thread's CPU time (the publisher's work) and the elapsed time (which also holds
the moments other processes had the core). Every round bursts on each topic, the order
turning round by round; between rounds, untimed, the subscribers have PAUSE_S to drain.
The pytest-benchmark rows are one publish() on their topic in CPU time (their timer,
PUBLISH_CLOCK, advances by the time measured on the publisher's thread), from that test's
own rounds. The table after the module gives the medians over all the interleaved bursts
of all three tests, and the ratios to plain and to the control: the figures to quote. The
goal: watched / plain is 1 within noise in CPU time, and in elapsed time no worse than the
control, since the publisher's PUB socket hands each frame to one more pipe per
subscriber and never waits for any of them.

    python -m benchmarks.test_bridge_overhead subscriber|extra|bridge --run-dir D --out F

runs a peer process (the fixture starts them; each runs until its stdin closes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry import Registry
from fleetbus.bus.runner import start
from fleetbus.messages import Header, Odometry

ROOT = Path(__file__).resolve().parent.parent
PLAIN = "/bench/plain/odometry"
WATCHED = "/bench/watched/odometry"
CONTROL = "/bench/two_plain/odometry"
TOPICS = (PLAIN, WATCHED, CONTROL)
SUBSCRIBERS = {PLAIN: "1 plain", WATCHED: "1 plain + Foxglove bridge", CONTROL: "2 plain"}
PEER_TOPICS = {"subscriber": list(TOPICS), "extra": [CONTROL]}  # plain subscriber processes
BURST = 50  # publish() calls a burst
ROUNDS = 150  # per test; each round bursts on every topic
WARMUP_ROUNDS = 10
PAUSE_S = 0.02  # between rounds: the bridge keeps up (JSON and WebSocket take it ~50 us)
READY_TIMEOUT_S = 30.0
MESSAGE = Odometry(header=Header(frame_id="map"), child_frame_id="base_link",
                   pose_covariance=[0.1] * 36, twist_covariance=[0.2] * 36)

# Filled by the benchmarks, reported after the module, by topic: ns per publish() on the
# publisher's thread, CPU time of that thread and elapsed time.
CPU_NS: dict[str, list[float]] = {topic: [] for topic in TOPICS}
ELAPSED_NS: dict[str, list[float]] = {topic: [] for topic in TOPICS}
REPORT: dict[str, Any] = {}  # what was sent, and what the peers received


class BenchPublisher(fleetbus.Node):
    def setup(self) -> None:
        self.pubs = {topic: self.publisher(topic, Odometry) for topic in TOPICS}
        self.sent = dict.fromkeys(TOPICS, 0)

    def burst(self, topic: str, count: int) -> tuple[float, float]:
        """`count` publish() calls on `topic`, on this node's thread: (CPU time of this
        thread, elapsed time) per call, ns."""
        publish = self.pubs[topic].publish
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(count):
            publish(MESSAGE)
        cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
        self.sent[topic] += count
        return cpu / count, wall / count


@dataclass
class Rig:
    publisher: BenchPublisher
    run_dir: Path
    peers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def on_thread(self, fn: Any) -> Any:
        return self.publisher.call_soon_threadsafe(fn).result(10)


def _spawn(role: str, run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, FLEETBUS_RUN_DIR=str(run_dir), FLEETBUS_AUTOREGISTRY="0")
    env.pop("FLEETBUS_REGISTRY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.test_bridge_overhead", role,
         "--run-dir", str(run_dir), "--out", str(run_dir / f"{role}.json")],
        env=env, cwd=ROOT, stdin=subprocess.PIPE)


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark set-up: no {what} in {READY_TIMEOUT_S} s")
        time.sleep(0.02)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    run_dir = Path(tempfile.mkdtemp(prefix="fbb-", dir="/tmp"))  # ipc paths are short
    config = BusConfig.from_env(run_dir=run_dir, registry=f"ipc://{run_dir}/registry",
                                auto_registry=False)
    registry = Registry(config).start()
    rig = Rig(BenchPublisher("bench_publisher", config=config), run_dir)
    running = start(rig.publisher)
    try:
        rig.peers = {role: _spawn(role, run_dir) for role in ("subscriber", "extra", "bridge")}

        def linked() -> bool:
            counts = rig.on_thread(lambda: {t: p.subscribers
                                            for t, p in rig.publisher.pubs.items()})
            return counts == {PLAIN: 1, WATCHED: 2, CONTROL: 2}

        _wait(linked, "subscribers and bridge linked to the publisher")

        # The bridge's client reports ready once a frame of the topic has reached it.
        def client_ready() -> bool:
            rig.on_thread(lambda: rig.publisher.burst(WATCHED, 1))
            return (run_dir / "bridge.ready").exists()

        _wait(client_ready, "frame at the bridge's WebSocket client")
        yield rig
    finally:
        for proc in rig.peers.values():
            proc.stdin.close()  # type: ignore[union-attr]
        for proc in rig.peers.values():
            proc.wait(30)
        running.stop()
        registry.stop()
        REPORT["stats"] = {role: _read_json(run_dir / f"{role}.json") for role in rig.peers}
        REPORT["sent"] = rig.publisher.sent
        shutil.rmtree(run_dir, ignore_errors=True)


class _PublisherThreadClock:
    """pytest-benchmark's timer here: the CPU time of publish() on the publisher's thread,
    advanced by each round, so that a row is one publish() and nothing else."""

    def __init__(self) -> None:
        self.ns = 0.0

    def __call__(self) -> float:
        return self.ns * 1e-9


PUBLISH_CLOCK = _PublisherThreadClock()


def _rounds(benchmark: Any, rig: Rig, topic: str) -> None:
    """Every round bursts on every topic, so all tests load the machine alike and the table
    compares interleaved samples; the row's timer counts the burst on `topic` only."""
    rounds = 0

    def burst(on: str) -> float:
        cpu, elapsed = rig.on_thread(lambda: rig.publisher.burst(on, BURST))
        if rounds > WARMUP_ROUNDS:
            CPU_NS[on].append(cpu)
            ELAPSED_NS[on].append(elapsed)
        return cpu

    def round_() -> None:
        nonlocal rounds
        rounds += 1
        turn = rounds % len(TOPICS)
        for on in TOPICS[turn:] + TOPICS[:turn]:
            cpu = burst(on)
            if on == topic:
                PUBLISH_CLOCK.ns += cpu

    benchmark.pedantic(round_, setup=lambda: time.sleep(PAUSE_S), rounds=ROUNDS,
                       warmup_rounds=WARMUP_ROUNDS, iterations=1)


GROUP = "one publish() of an Odometry (CPU time of the publisher's thread)"


@pytest.mark.benchmark(group=GROUP, timer=PUBLISH_CLOCK)
def test_publish_to_one_subscriber(benchmark, rig) -> None:
    _rounds(benchmark, rig, PLAIN)


@pytest.mark.benchmark(group=GROUP, timer=PUBLISH_CLOCK)
def test_publish_to_one_subscriber_and_the_foxglove_bridge(benchmark, rig) -> None:
    _rounds(benchmark, rig, WATCHED)


@pytest.mark.benchmark(group=GROUP, timer=PUBLISH_CLOCK)
def test_publish_to_two_subscribers(benchmark, rig) -> None:
    _rounds(benchmark, rig, CONTROL)


# -- the report -----------------------------------------------------------------------------


def table() -> Table:
    cpu = {t: float(np.median(CPU_NS[t])) for t in TOPICS}
    elapsed = {t: float(np.median(ELAPSED_NS[t])) for t in TOPICS}
    out = Table(title=f"publish() of an Odometry on the publisher's thread: medians of "
                      f"{len(CPU_NS[PLAIN])} interleaved bursts of {BURST} a topic, one run")
    for column in ("subscribers", "CPU", "/ plain", "/ 2 plain", "elapsed", "/ plain ",
                   "/ 2 plain "):
        out.add_column(column, justify="left" if column == "subscribers" else "right")
    for t in TOPICS:
        out.add_row(SUBSCRIBERS[t], f"{cpu[t] / 1e3:.2f} us", f"{cpu[t] / cpu[PLAIN]:.2f}",
                    f"{cpu[t] / cpu[CONTROL]:.2f}", f"{elapsed[t] / 1e3:.2f} us",
                    f"{elapsed[t] / elapsed[PLAIN]:.2f}",
                    f"{elapsed[t] / elapsed[CONTROL]:.2f}")
    stats, sent = REPORT.get("stats", {}), REPORT.get("sent", {})
    received = stats.get("subscriber", {}).get("received", {})
    out.caption = (f"on {WATCHED}: published {sent.get(WATCHED, '?')}, the plain subscriber "
                   f"received {received.get(WATCHED, '?')}, the bridge's WebSocket client "
                   f"{stats.get('bridge', {}).get('frames', '?')}")
    return out


@pytest.fixture(scope="module", autouse=True)
def report(request: Any) -> Iterator[None]:
    yield
    if not all(CPU_NS.values()):
        return
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        Console(width=max(Console().width, 110)).print(table())


# -- peer processes ---------------------------------------------------------------------------


class CountingSubscriber(fleetbus.Node):
    """Decodes every Odometry of its `topics` and counts them."""

    def setup(self) -> None:
        self.received: dict[str, int] = {}
        for topic in self.param("topics", [PLAIN]).value:
            self.received[topic] = 0
            self.subscribe(topic, Odometry, lambda msg, t=topic: self._got(t))

    def _got(self, topic: str) -> None:
        self.received[topic] += 1


def run_subscriber(role: str, out: Path) -> None:
    node = CountingSubscriber(f"bench_{role}", params={"topics": PEER_TOPICS[role]})
    with start(node):
        sys.stdin.read()  # until the benchmark closes our stdin
        received = node.call_soon_threadsafe(lambda: dict(node.received)).result(10)
    out.write_text(json.dumps({"received": received}))


def run_bridge(run_dir: Path, out: Path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from fleetbus.monitoring.foxglove_bridge import FoxgloveBridge

    node = FoxgloveBridge("bench_foxglove",
                          params={"port": 0, "topics": ["/bench/watched/*"], "poll_s": 0.1})
    frames = 0
    with start(node), connect(node.url, subprotocols=["foxglove.sdk.v1"]) as ws:
        channel = None
        while channel is None:
            message = ws.recv()
            if isinstance(message, str) and json.loads(message)["op"] == "advertise":
                channel = next((c["id"] for c in json.loads(message)["channels"]
                                if c["topic"] == WATCHED), None)
        ws.send(json.dumps({"op": "subscribe",
                            "subscriptions": [{"id": 1, "channelId": channel}]}))

        def read() -> None:
            nonlocal frames
            try:
                for message in ws:
                    if isinstance(message, bytes) and message[0] == 0x01:  # MessageData
                        frames += 1
                        if frames == 1:
                            (run_dir / "bridge.ready").touch()
            except ConnectionClosed:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sys.stdin.read()
    reader.join(10)
    out.write_text(json.dumps({"frames": frames, "counters": dict(node.counters)}))


def main() -> None:
    parser = argparse.ArgumentParser(description="a peer of the bridge overhead benchmark")
    parser.add_argument("role", choices=["subscriber", "extra", "bridge"])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.role == "bridge":
        run_bridge(args.run_dir, args.out)
    else:
        run_subscriber(args.role, args.out)


if __name__ == "__main__":
    main()
