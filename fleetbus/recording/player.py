"""The player node: republishes a recording on the bus, byte for byte, and drives /clock.

Messages go out in the order they were recorded (log time), each with its recorded stamp,
paced by the recording's log times divided by `rate` (0: as fast as the subscribers take
them). After each instant's messages comes a /clock at that instant, or at the recorded
/clock when the recording has one (a lockstep run records the simulator's: the readings
of a step, then its clock), so nodes started on sim time (FLEETBUS_CLOCK=sim) run on the
recording's time exactly as they did live.

To test one node against a recording, play everything but what that node publishes
(`exclude` its outputs) and start the node on sim time; `fleetbus replay-check` does this
and compares the outputs.

Parameters: `files` (the recording, or its split parts in order), `rate` (1.0), `loop`
(false; each round's /clock starts again, as the stamps do, so only wall-time tools can
follow a loop), `start_paused` (false: call resume()), `topics` / `exclude` (globs), and
the node's `remap` for topic names. A channel whose type cannot be imported here, or whose
layout changed since the recording (schema hash), is skipped and named in the log.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
        self.delay_s = float(self.param("delay_s", 1.0, "wall s for subscribers to connect "
                                        "before the first message").value)
        self.clock_pub = self.publisher(CLOCK, Clock, latched=True)
        self.clock_codec = Codec(Clock)
        self.played = 0
        self.skipped: dict[str, str] = {}  # topic -> why
        # Publishers up front, so subscribers have connected when playing starts.
        self.pubs: dict[tuple[str, str], Publisher | None] = {}
        for path in self.files:
            with path.open("rb") as f:
                summary = make_reader(f).get_summary()
            for channel in (summary.channels.values() if summary else ()):
                self._publisher(channel)
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
                if not self.loop:
                    break
        except Exception as exc:  # a broken file: say so, the node stays up
            self.error = f"{type(exc).__name__}: {exc}"
            self._count("bad_recording", f"cannot play {self.files}: {exc}", level="error")
        finally:
            self.finished.set()

    def _play_once(self) -> Iterator[None]:
        start_wall = start_log = None
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
                    if self.after_group is not None:
                        self.after_group(done.result())
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
        """One instant: its messages as recorded, then its /clock (returned)."""
        clock_ns = group[0][1].log_time
        for channel, message in group:
            if channel.topic == CLOCK:
                clock_ns = max(clock_ns, self.clock_codec.decode(message.data).stamp_ns)
                continue
            pub = self._publisher(channel)
            if pub is None:
                continue
            payload, buffers = fmt.unpack(channel.message_encoding, message.data)
            pub.publish_encoded(payload, buffers, message.publish_time)
            self.played += 1
        self.clock_pub.publish(Clock(stamp_ns=clock_ns))
        return clock_ns

    def _publisher(self, channel: Any) -> Publisher | None:
        key = (channel.topic, channel.metadata.get("type_name", ""))
        if key in self.pubs:
            return self.pubs[key]
        self.pubs[key] = None
        topic, type_name = key
        if not any(fnmatch.fnmatchcase(topic, p) for p in self.patterns) or any(
                fnmatch.fnmatchcase(topic, p) for p in self.exclude):
            return None
        cls = wire_class(type_name)
        if cls is None:
            why = f"type {type_name!r} cannot be imported here"
        elif not fmt.same_schema(cls, channel.metadata.get("schema_hash", "")):
            why = f"{type_name} has changed its layout since the recording"
        else:
            self.pubs[key] = self.publisher(
                topic, cls, latched=channel.metadata.get("latched") == "true")
            return self.pubs[key]
        self.skipped[topic] = why
        self._count("skipped_channel", f"{topic}: not played: {why}")
        return None
