"""The player node: republishes a recording on the bus, byte for byte, and drives /clock.

Messages go out in the order they were recorded (log time), each with its recorded stamp,
paced by the recording's log times divided by `rate` (0: as fast as the subscribers take
them). After each instant's messages comes a /clock at that instant, or at the recorded
/clock when the recording has one (a lockstep run records the simulator's: the readings
of a step, then its clock), so nodes started on sim time (FLEETBUS_CLOCK=sim) run on the
recording's time exactly as they did live.

To test one node against a recording, play everything but what that node published
(`replace` names it: its channels are left out, whatever their topics) and start the new
node on sim time in its place; `fleetbus replay-check` does this and compares the outputs.

With `loop`, time goes on: each round comes one recorded step after the last one ended,
its /clock and every stamp (the fields named `*stamp_ns`) shifted by that much, so nodes on
sim time keep running; the first round is byte for byte, later ones are re-encoded.

Parameters: `files` (the recording, or its split parts in order), `rate` (1.0), `loop`
(false), `start_paused` (false: call resume()), `topics` / `exclude` (globs), `replace`
(recorded node names), and the node's `remap` for topic names. A channel whose type cannot
be imported here, or whose layout changed since the recording (schema hash), is skipped
and named in the log.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from mcap.reader import make_reader

from fleetbus.bus.node import Node
from fleetbus.bus.pubsub import Publisher
from fleetbus.messages import Clock
from fleetbus.messages.codec import Codec
from fleetbus.messages.json_schema import wire_class
from fleetbus.recording import mcap_format as fmt

CLOCK = "/clock"


class Player(Node):
    def setup(self) -> None:
        self.files = [Path(f) for f in self.param("files", [], "MCAP file(s), in order").value]
        if not self.files:
            raise ValueError("player: no recording given (files)")
        for path in self.files:
            if not path.is_file():
                raise ValueError(f"player: no recording at {path}")
        self.rate = float(self.param("rate", 1.0, "speed; 0: as fast as possible").value)
        if self.rate < 0:
            raise ValueError(f"player: rate must be >= 0, got {self.rate}")
        self.loop = bool(self.param("loop", False, "start again at the end").value)
        self.patterns = list(self.param("topics", ["*"], "topic globs to play").value)
        self.exclude = list(self.param("exclude", [], "topic globs not to play").value)
        self.replace = set(self.param("replace", [], "recorded nodes whose messages are not "
                                      "played: a node under test takes their place").value)
        self.delay_s = float(self.param("delay_s", 1.0, "wall s for subscribers to connect "
                                        "before the first message").value)
        self.clock_pub = self.publisher(CLOCK, Clock, latched=True)
        self.clock_codec = Codec(Clock)
        self.played = 0
        self.offset_ns = 0  # added to every stamp: 0 in the first round of a loop
        self.codecs: dict[type, Codec] = {}  # to re-encode shifted messages
        # (first instant, first step, last /clock) of the round being played
        self._span: tuple[int, int, int] | None = None
        self.skipped: dict[str, str] = {}  # topic -> why
        # Publishers up front, so subscribers have connected when playing starts.
        self.pubs: dict[tuple[str, str], Publisher] = {}  # (topic, type) -> its publisher
        self.routes: dict[tuple[str, str, str], Publisher | None] = {}  # + recorded node
        replaced = set()
        for path in self.files:
            with path.open("rb") as f:
                summary = make_reader(f).get_summary()
            for channel in (summary.channels.values() if summary else ()):
                self._publisher(channel)
                replaced.add(channel.metadata.get("node", ""))
        if self.replace - replaced:
            raise ValueError(f"player: replace names {sorted(self.replace - replaced)}, "
                             f"which published nothing in the recording")
        self.finished = threading.Event()
        self.error = ""  # why playing stopped early
        self._running = threading.Event()
        if not self.param("start_paused", False, "wait for resume()").value:
            self._running.set()
        self._quit = threading.Event()
        # Called on the feeding thread after each instant, with its /clock: a lockstep
        # driver (replay_check) waits there for the node under test.
        self.after_group: Callable[[int], None] | None = None
        self._feeder = threading.Thread(target=self._feed, name=f"{self.name}-feed",
                                        daemon=True)
        self._feeder.start()

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def teardown(self) -> None:
        self._quit.set()
        self._running.set()

    # -- the feeding thread: reads and paces; the node's thread publishes ---------------------

    def _feed(self) -> None:
        if self._quit.wait(self.delay_s):
            self.finished.set()
            return
        try:
            while not self._quit.is_set():
                for _ in self._play_once():
                    pass
                if not self.loop or self._span is None:
                    break
                first, step, last = self._span
                self.offset_ns += last - first + (step or 1_000_000)  # 1 ms: a lone instant
        except Exception as exc:  # a broken file: say so, the node stays up
            self.error = f"{type(exc).__name__}: {exc}"
            self._count("bad_recording", f"cannot play {self.files}: {exc}", level="error")
        finally:
            self.finished.set()

    def _play_once(self) -> Iterator[None]:
        start_wall = start_log = None
        self._span = None
        for path in self.files:
            with path.open("rb") as f:
                for group_log, group in self._groups(make_reader(f)):
                    self._running.wait()
                    if self._quit.is_set():
                        return
                    if start_wall is None:
                        start_wall, start_log = time.monotonic(), group_log
                    if self.rate > 0:
                        due = start_wall + (group_log - start_log) * 1e-9 / self.rate
                        while (wait := due - time.monotonic()) > 0 and not self._quit.is_set():
                            time.sleep(min(wait, 0.1))
                            if not self._running.is_set():  # paused: the pace starts anew
                                self._running.wait()
                                start_wall, start_log = time.monotonic(), group_log
                                break
                    done = self.call_soon_threadsafe(lambda g=group: self._publish(g))
                    while not self._quit.is_set():
                        try:
                            done.result(timeout=0.5)
                            break
                        except TimeoutError:
                            continue  # the node is busy or stopping: _quit tells which
                    clock_ns = done.result()
                    first, step, _ = self._span or (clock_ns, 0, 0)
                    step = step or max(clock_ns - first, 0)
                    self._span = (first, step, clock_ns)
                    if self.after_group is not None:
                        self.after_group(clock_ns)
                    yield

    def _groups(self, reader: Any) -> Iterator[tuple[int, list[tuple[Any, Any]]]]:
        """The recording's messages by log time: (log time, [(channel, message), ...])."""
        group: list[tuple[Any, Any]] = []
        current = None
        for _, channel, message in reader.iter_messages(log_time_order=True):
            if current is not None and message.log_time != current:
                yield current, group
                group = []
            current = message.log_time
            group.append((channel, message))
        if group:
            yield current, group

    def _publish(self, group: list[tuple[Any, Any]]) -> int:
        """One instant: its messages as recorded, then its /clock (returned), all shifted
        by the loop's offset."""
        clock_ns = group[0][1].log_time
        offset = self.offset_ns
        for channel, message in group:
            if channel.topic == CLOCK:
                clock_ns = max(clock_ns, self.clock_codec.decode(message.data).stamp_ns)
                continue
            pub = self._publisher(channel)
            if pub is None:
                continue
            payload, buffers = fmt.unpack(channel.message_encoding, message.data)
            if offset:
                codec = self.codecs.setdefault(pub.cls, Codec(pub.cls))
                pub.publish(shifted(codec.decode(payload, buffers), offset))
            else:
                pub.publish_encoded(payload, buffers, message.publish_time)
            self.played += 1
        self.clock_pub.publish(Clock(stamp_ns=clock_ns + offset))
        return clock_ns + offset

    def _publisher(self, channel: Any) -> Publisher | None:
        """The publisher that plays `channel`, None for a channel not played."""
        meta = channel.metadata
        key = (channel.topic, meta.get("type_name", ""), meta.get("node", ""))
        if key not in self.routes:
            self.routes[key] = self._route(*key, meta)
        return self.routes[key]

    def _route(self, topic: str, type_name: str, node: str, meta: dict[str, str]
               ) -> Publisher | None:
        if not any(fnmatch.fnmatchcase(topic, p) for p in self.patterns) or any(
                fnmatch.fnmatchcase(topic, p) for p in self.exclude):
            return None
        if node in self.replace:
            self.skipped[topic] = f"published by {node}, which is replaced"
            return None
        if (topic, type_name) in self.pubs:
            return self.pubs[topic, type_name]
        cls = wire_class(type_name)
        if cls is None:
            why = f"type {type_name!r} cannot be imported here"
        elif not fmt.same_schema(cls, meta.get("schema_hash", "")):
            why = f"{type_name} has changed its layout since the recording"
        else:
            pub = self.pubs[topic, type_name] = self.publisher(
                topic, cls, latched=meta.get("latched") == "true")
            return pub
        self.skipped[topic] = why
        self._count("skipped_channel", f"{topic}: not played: {why}")
        return None


def shifted(msg: Any, offset_ns: int) -> Any:
    """`msg` with every stamp (an int field named `*stamp_ns`, also in nested messages and
    lists of them) moved by offset_ns."""
    changes = {}
    for field in msgspec.structs.fields(msg):
        value = getattr(msg, field.name)
        if field.name.endswith("stamp_ns") and type(value) is int:
            changes[field.name] = value + offset_ns
        elif isinstance(value, msgspec.Struct):
            changes[field.name] = shifted(value, offset_ns)
        elif isinstance(value, list) and value and isinstance(value[0], msgspec.Struct):
            changes[field.name] = [shifted(v, offset_ns) for v in value]
    return msgspec.structs.replace(msg, **changes) if changes else msg
