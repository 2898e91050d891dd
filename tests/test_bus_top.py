"""`fleetbus top --once --json` against a real bus: nodes with their process's figures,
topics with the publishers' rates, losses a subscriber counted, a rate rated against an
expectation, and a clear error without a bus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from fleetbus.messages import Header, Imu
from tests.helpers import run_on, wait_until


def _top(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetbus.cli", "top", "--once", *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


def test_top_shows_nodes_rates_losses_and_expectations(bus):
    def talker(node: Any) -> None:
        node.pub = node.publisher("/chatter", Imu, depth=10)
        node.timer(0.02, lambda: node.pub.publish(Imu(header=Header(stamp_ns=node.now_ns()))))
    src = bus.node("talker", talker)
    got: list[Imu] = []
    slow = bus.node("listener", lambda n: n.subscribe("/chatter", Imu, got.append, depth=10))
    wait_until(lambda: src.pub.subscribers and len(got) > 10, what="chatter flowing")
    # the listener's loop is busy while 5000 messages go out: its queue overflows
    slow.call_soon_threadsafe(lambda: time.sleep(1.0))
    run_on(src, lambda: [src.pub.publish(Imu()) for _ in range(5000)])

    def snapshot() -> dict | None:
        result = _top("--json", "--expect", "/chatter=100000")
        assert result.returncode == 0, result.stdout + result.stderr
        data = json.loads(result.stdout)
        row = next(t for t in data["topics"] if t["topic"] == "/chatter")
        return data if row["rate_hz"] > 0 and row["lost"] > 0 else None
    data = wait_until(snapshot, what="rates and losses counted", timeout=20)
    row = next(t for t in data["topics"] if t["topic"] == "/chatter")
    assert row["types"] == ["fleetbus/Imu"] and (row["publishers"], row["subscribers"]) == (
        1, 1)
    assert row["expected_hz"] == 100000 and row["level"] == "warn"
    nodes = {n["name"]: n for n in data["nodes"]}
    assert nodes["/talker"]["pid"] == os.getpid()
    assert nodes["/talker"]["rss_mib"] > 0 and nodes["/talker"]["heartbeat_age_s"] >= 0


def test_top_names_the_registry_it_cannot_reach(bus_env):
    result = _top()
    assert result.returncode == 2
    assert "no registry answers at ipc://" in result.stdout
    result = _top("--expect", "/x=fast")
    assert result.returncode == 2 and "--expect takes TOPIC_GLOB=HZ" in result.stdout
