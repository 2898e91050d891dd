"""Replay check: run one node against a recording's inputs, in lockstep on the recording's
time, and compare what it publishes with what the recorded node published. The shape of a
regression test for fusion and control changes: record once, then check every change of
the node against the recording.

The node starts on sim time; a Player plays only the topics it subscribes to (its outputs
are what is checked) and, after each recorded instant, waits until the node's clock has
reached that instant and its loop has done everything due then, so the node sees its
inputs exactly as timed live however fast the machine is. Each output topic's messages are
paired in order with the recorded ones from the node of the same name, and compared field
by field: numbers within a relative tolerance, everything else exactly.
"""

from __future__ import annotations

import fnmatch
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader

from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node
from fleetbus.bus.pubsub import AnyMessage
from fleetbus.bus.runner import start
from fleetbus.messages.codec import to_builtins
from fleetbus.recording import mcap_format as fmt
from fleetbus.recording.player import CLOCK, Player

SETTLE_S = 0.5  # wall s without a new output before the capture counts as complete
LINK_TIMEOUT_S = 10.0
WARM_TIMEOUT_S = 600.0  # a solver compiled from scratch takes minutes
TAIL_NS = 1_000_000_000  # the end of a recording: the last second of its log time
STEP_TIMEOUT_S = 30.0  # one instant's work (a solve) may take this long before giving up


@dataclass
class Difference:
    topic: str
    index: int  # the message's place on its topic
    path: str  # the field, e.g. pose.position.x
    recorded: Any
    replayed: Any


@dataclass
class CheckResult:
    node: str
    compared: dict[str, int] = field(default_factory=dict)  # topic -> pairs compared
    recorded: dict[str, int] = field(default_factory=dict)
    replayed: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    beyond_end: dict[str, int] = field(default_factory=dict)  # replayed past the recording

    @property
    def ok(self) -> bool:
        return not self.differences and self.recorded == self.replayed


class _Capture(Node):
    """Records what the node under test publishes, raw."""

    def __init__(self, topics: list[str], **kw: Any) -> None:
        super().__init__("/_replay_capture", **kw)
        self.topics = topics
        self.got: dict[str, list[AnyMessage]] = {t: [] for t in topics}
        self.last_s = time.monotonic()

    def setup(self) -> None:
        for topic in self.topics:
            self.subscribe(topic, None, self._on, depth=100_000)

    def _on(self, msg: AnyMessage) -> None:
        self.got[msg.topic].append(msg)
        self.last_s = time.monotonic()


def recorded_node(files: list[Path], name: str) -> dict[str, Any]:
    """The class, name, namespace, parameters and remaps of the node `name` (e.g.
    /car1/fusion) as the recording's run metadata lists them (`make demo` and the
    scenario runs write it); KeyError naming the nodes there otherwise."""
    with files[0].open("rb") as f:
        run = next((m.metadata for m in make_reader(f).iter_metadata()
                    if m.name == fmt.RUN_METADATA), {})
    nodes = json.loads(run.get("nodes", "[]"))
    full = {("/" + "/".join(p for p in (n["namespace"].strip("/"), n["name"]) if p)): n
            for n in nodes}
    if name not in full:
        raise KeyError(f"the recording lists no node {name!r}; it has: "
                       f"{', '.join(sorted(full)) or 'none (no run metadata)'}")
    return full[name]


def replay_check(files: list[Path], make_node: Callable[[BusConfig], Node],
                 tolerance: float = 1e-9, ignore: tuple[str, ...] = ()) -> CheckResult:
    """Run the node `make_node(config)` builds against the recording `files` and compare.
    `ignore`: globs of output topics not to compare (say, ones carrying wall times)."""
    with tempfile.TemporaryDirectory(prefix="fb-replay-", dir="/tmp") as run_dir:
        # A bus of its own: nothing live can reach the node under test, nor it them.
        private = BusConfig.from_env(run_dir=Path(run_dir), registry=f"ipc://{run_dir}/reg",
                                     auto_registry=True, tcp_interface=None)
        return _check(files, make_node, tolerance, ignore, private)


def _check(files: list[Path], make_node: Callable[[BusConfig], Node], tolerance: float,
           ignore: tuple[str, ...], private: BusConfig) -> CheckResult:
    node = make_node(replace(private, clock="sim"))
    wall = replace(private, clock="wall")
    with start(node):
        info = node.info()
        inputs = sorted({s.topic for s in info.subscriptions} - {CLOCK})
        outputs = sorted(p.topic for p in info.publishers
                         if not any(fnmatch.fnmatchcase(p.topic, g) for g in ignore))
        capture = _Capture(outputs, config=wall)
        player = Player("/_replay_player", params={
            "files": [str(f) for f in files], "rate": 0.0, "delay_s": 0.0,
            "start_paused": True, "topics": inputs}, config=wall)
        with start(capture, player):
            player.after_group = lambda clock_ns: _step_done(node, clock_ns)  # still paused
            _wait_links(node, player, outputs)
            _wait_warm(node)
            player.resume()
            player.finished.wait()
            if player.error:
                raise RuntimeError(f"replay stopped: {player.error}")
            while time.monotonic() - capture.last_s < SETTLE_S:
                time.sleep(0.05)
    return _compare(files, node.name, capture.got, tolerance)


def _step_done(node: Node, clock_ns: int) -> None:
    """Hold the player until the node's time is at clock_ns and its loop is idle."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while node.now_ns() < clock_ns:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.name} did not reach {clock_ns * 1e-9:.3f} s: does it "
                               "subscribe to every topic it waits for?")
        time.sleep(0.0002)
    node.call_soon_threadsafe(lambda: None).result(STEP_TIMEOUT_S)


def _wait_warm(node: Node) -> None:
    """Live, a lockstep simulator waited for the node's preparations (a controller's
    solver); the player does not hear of them, so the check waits here."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while node.warming_up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.name} still warming up after {WARM_TIMEOUT_S} s")
        time.sleep(0.01)


def _wait_links(node: Node, player: Player, outputs: list[str]) -> None:
    """Until every input the recording has reaches the node, and every output the capture."""
    deadline = time.monotonic() + LINK_TIMEOUT_S
    while time.monotonic() < deadline:
        playing = [p for p in player.pubs.values() if p is not None]
        mine = {p.topic: p.subscribers for p in node.info().publishers}
        if (all(p.subscribers for p in playing) and player.clock_pub.subscribers
                and all(mine.get(t) for t in outputs)):
            return
        time.sleep(0.01)
    raise TimeoutError("the node under test did not connect to the player and the capture")


def _compare(files: list[Path], node: str, got: dict[str, list[AnyMessage]],
             tolerance: float) -> CheckResult:
    result = CheckResult(node)
    recorded: dict[str, list[Any]] = {t: [] for t in got}
    end_ns = 0
    for path in files:
        with path.open("rb") as f:
            for _, channel, message in make_reader(f).iter_messages():
                end_ns = max(end_ns, message.log_time)
                if channel.topic in got and channel.metadata.get("node") == node:
                    payload, buffers = fmt.unpack(channel.message_encoding, message.data)
                    recorded[channel.topic].append(to_builtins(payload, buffers))
    for topic, replayed in got.items():
        # The recorder stopped at some instant, maybe before that instant's outputs
        # reached it: replayed messages past the recorded ones, stamped in the last
        # TAIL_S of the recording, are beyond its end, not differences.
        extra = replayed[len(recorded[topic]):]
        if extra and all(m.header.source_stamp_ns >= end_ns - TAIL_NS for m in extra):
            result.beyond_end[topic] = len(extra)
            replayed = replayed[:len(recorded[topic])]
        result.recorded[topic], result.replayed[topic] = len(recorded[topic]), len(replayed)
        pairs = list(zip(recorded[topic], replayed, strict=False))
        result.compared[topic] = len(pairs)
        for k, (old, new) in enumerate(pairs):
            for path, a, b in _diff(old, new.to_builtins(), tolerance):
                result.differences.append(Difference(topic, k, path, a, b))
    return result


def _diff(a: Any, b: Any, tol: float, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            yield from _diff(a.get(key), b.get(key), tol, f"{path}.{key}" if path else key)
    elif isinstance(a, list | np.ndarray) and isinstance(b, list | np.ndarray):
        if len(a) != len(b):
            yield path, f"{len(a)} items", f"{len(b)} items"
            return
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, tol, f"{path}[{k}]")
    elif isinstance(a, float | int) and isinstance(b, float | int) and not (
            isinstance(a, bool) or isinstance(b, bool)):
        if not _close(float(a), float(b), tol):
            yield path, a, b
    elif a != b:
        yield path, a, b


def _close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= tol * max(1.0, abs(a), abs(b))
