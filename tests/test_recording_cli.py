"""`fleetbus record`, `play` and `replay-check` as a user runs them: separate processes on
a real bus, stopped with SIGINT, with what they print and their exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcap.reader import make_reader

from fleetbus.messages import Header, Odometry, Pose, Vector3
from fleetbus.messages.codec import Codec
from fleetbus.recording import mcap_format as fmt
from tests.helpers import graph_nodes, run_on, wait_until


def _fleetbus(*args: str) -> subprocess.Popen:
    # faulthandler: a process that has to be aborted prints every thread's stack
    return subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "fleetbus.cli", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """Its output once it has exited; if it has not within `timeout`, it is aborted and
    the test fails with the stacks it was stuck in (`fleetbus record` once did not exit
    within 30 s of Ctrl-C in a full test run, and did in every run after)."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        stacks = proc.communicate(timeout=30)[0]
        pytest.fail(f"{proc.args[4:]} still running after {timeout} s:\n{stacks}")


def _odometry(k: int) -> Odometry:
    return Odometry(header=Header(stamp_ns=k), pose=Pose(position=Vector3(x=float(k))))


def _subscription(bus: Any, node: str, topic: str) -> Any:
    info = graph_nodes(bus.config).get(node)
    return next((s for s in info.subscriptions if s.topic == topic), None) if info else None


def test_record_then_play_a_topic_from_the_shell(bus, tmp_path):
    src = bus.node("source", lambda n: setattr(n, "pub", n.publisher("/car1/odometry",
                                                                     Odometry)))
    out = tmp_path / "cli.mcap"
    recorder = _fleetbus("record", "/car1/*", "-o", str(out), "--meta", "seed=5")
    try:
        wait_until(lambda: src.pub.subscribers, what="the recorder subscribed")
        run_on(src, lambda: [src.pub.publish(_odometry(k)) for k in range(100)])
        wait_until(lambda: (s := _subscription(bus, "/recorder", "/car1/odometry"))
                   and s.messages == 100, what="100 recorded", timeout=20)
    finally:
        recorder.send_signal(signal.SIGINT)
        text = _output(recorder, timeout=30)
    assert recorder.returncode == 0, text
    assert "complete: 100 messages" in text
    with out.open("rb") as f:
        reader = make_reader(f)
        messages = [m for _, _, m in reader.iter_messages()]
        assert {m.name: m.metadata for m in reader.iter_metadata()}[fmt.RUN_METADATA][
            "seed"] == "5"
    assert len(messages) == 100

    got: list[bytes] = []
    bus.node("listener", lambda n: n.subscribe("/replayed", None,
                                               lambda m: got.append(m.payload)))
    player = _fleetbus("play", str(out), "--rate", "0", "--delay", "2",
                       "--remap", "/car1/odometry:=/replayed")
    text = _output(player, timeout=60)
    assert player.returncode == 0, text
    assert "played 100 messages" in text
    wait_until(lambda: len(got) == 100, what="all replayed")
    codec = Codec(Odometry)
    assert got == [codec.encode(_odometry(k))[0] for k in range(100)]


def test_the_shell_commands_name_what_is_wrong(bus, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fleetbus.cli", "record", "-o",
                             str(tmp_path / "x.mcap")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "--all" in result.stdout
    result = subprocess.run([sys.executable, "-m", "fleetbus.cli", "play",
                             str(tmp_path / "missing.mcap")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "no recording at" in result.stdout
    assert not Path(tmp_path / "x.mcap").exists()
