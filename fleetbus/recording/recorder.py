"""The recorder node: topics of the bus into MCAP (see mcap_format.py for the layout).

It subscribes to every topic matching `topics` (glob patterns; default all) and not
`exclude`, found in the registry's graph every `poll_s` (wall time, also while a
simulator waits), so topics that appear later are recorded from their first publisher's
arrival. A recorder is one more subscriber: it never
slows a publisher. One that falls behind loses messages in its receive queue; the
publishers' sequence numbers show each gap, which is counted per topic and written into
the file's status record, and the file is marked incomplete.

Snapshot mode (`snapshot_s` > 0): nothing is written while running; the last `snapshot_s`
seconds (bus time) are kept in memory and saved to a new file on an Event whose kind is
in `snapshot_on` (default a geofence breach, and "snapshot": an order anyone can publish
on /events), or when `save_snapshot()` is called (the CLI does on SIGUSR1).

Parameters: `output` (file; with a split, the stem of numbered parts), `topics`,
`exclude`, `split_mb`, `split_s` (0: no split), `snapshot_s`, `snapshot_on`, `metadata`
(a mapping written into the file: graph, parameters, seed, fault plan), `poll_s`, `depth`
(receive queue per topic).
"""

from __future__ import annotations

import fnmatch
from collections import deque
from pathlib import Path
from typing import Any

from fleetbus.bus.clock import CLOCK_TOPIC
from fleetbus.bus.graph_watch import GraphWatch
from fleetbus.bus.node import Node
from fleetbus.bus.protocol import Graph
from fleetbus.bus.pubsub import AnyMessage, Subscription
from fleetbus.messages import Event
from fleetbus.recording.writer import McapSink


class Recorder(Node):
    def setup(self) -> None:
        self.output = Path(self.param("output", "run.mcap", "MCAP file to write").value)
        self.patterns = list(self.param("topics", ["*"], "topic globs to record").value)
        self.exclude = list(self.param("exclude", [], "topic globs not to record").value)
        split_mb = float(self.param("split_mb", 0.0, "start a new file after this many "
                                    "MB (0: never)").value)
        split_s = float(self.param("split_s", 0.0, "start a new file after this many s "
                                   "of bus time (0: never)").value)
        self.snapshot_s = float(self.param("snapshot_s", 0.0, "keep only the last N s, "
                                           "saved on demand (0: record everything)").value)
        self.snapshot_on = set(self.param("snapshot_on", ["breach", "snapshot"],
                                          "Event kinds that save a snapshot").value)
        metadata = dict(self.param("metadata", {}, "written into the file").value)
        self.depth = int(self.param("depth", 10000, "receive queue per topic").value)
        metadata.setdefault("clock", "sim" if self.clock.is_sim else "wall")
        self.metadata = metadata
        self.subs: dict[str, Subscription] = {}
        self.latched: set[str] = set()  # topics whose publishers latch
        self.node_names: dict[str, str] = {}  # publisher uid -> node name
        self.clock_sources: set[str] = set()  # uids of the nodes that publish /clock
        self.snapshots: list[Path] = []
        self.ring: deque[tuple] = deque()
        self.sink: McapSink | None = None
        if not self.snapshot_s:
            self.sink = McapSink(self.output, metadata, split_bytes=int(split_mb * 1e6),
                                 split_ns=int(split_s * 1e9))
            self.sink.latched, self.sink.node_names = self.latched, self.node_names
        if self.snapshot_s:
            self.subscribe("/events", Event, self._on_event)
        self.graph_watch = GraphWatch(self, float(self.param(
            "poll_s", 0.5, "wall s between looks for new topics").value), self._discover)

    # -- topics ---------------------------------------------------------------------------

    def wanted(self, topic: str) -> bool:
        return (any(fnmatch.fnmatchcase(topic, p) for p in self.patterns)
                and not any(fnmatch.fnmatchcase(topic, p) for p in self.exclude))

    def _discover(self, graph: Graph) -> None:
        for node in graph.nodes:
            self.node_names[node.uid] = node.name
            if any(pub.topic == CLOCK_TOPIC for pub in node.publishers):
                self.clock_sources.add(node.uid)
            for pub in node.publishers:
                if pub.latched:
                    self.latched.add(pub.topic)
                if pub.topic not in self.subs and self.wanted(pub.topic):
                    self.subs[pub.topic] = self.subscribe(pub.topic, None, self._on_message,
                                                          depth=self.depth)

    # -- messages -------------------------------------------------------------------------

    def _on_message(self, msg: AnyMessage) -> None:
        h = msg.header
        log_ns = self.now_ns()
        if self.clock.is_sim and h.publisher not in self.clock_sources:
            # Sim time moves when the /clock arrives, which the simulator sends on its own
            # socket: a frame from another node, sent during an instant, can be read after
            # the next /clock. It was sent at its stamp at the latest (a node stamps what
            # it sends at the instant it computes it); the player then delivers it within
            # that instant, as live.
            log_ns = min(log_ns, h.source_stamp_ns)
        record = (msg.topic, h.type_name, h.schema_hash, h.publisher, h.seq, log_ns,
                  h.source_stamp_ns, msg.payload, [bytes(b) for b in msg.buffers])
        if self.sink is not None:
            self.sink.write(*record)
            return
        self.ring.append(record)
        oldest = record[5] - int(self.snapshot_s * 1e9)
        while self.ring[0][5] < oldest:
            self.ring.popleft()

    def _on_event(self, msg: Event) -> None:
        if msg.kind in self.snapshot_on:
            self.save_snapshot(f"{msg.kind} from {msg.source}: {msg.message}")

    def save_snapshot(self, reason: str = "on demand") -> Path:
        """The last snapshot_s seconds into a new file beside `output`; its path."""
        path = self.output.with_name(f"{self.output.stem}_snapshot_{len(self.snapshots):03d}"
                                     f"{self.output.suffix}")
        sink = McapSink(path, {**self.metadata, "snapshot_reason": reason,
                               "snapshot_s": str(self.snapshot_s)})
        sink.latched, sink.node_names = self.latched, self.node_names
        for record in self.ring:
            sink.write(*record)
        sink.close(self.status())
        self.snapshots.append(path)
        self.log.info("%s: snapshot of %d messages saved to %s (%s)", self.name,
                      sink.messages, path, reason)
        return path

    # -- status ---------------------------------------------------------------------------

    def dropped(self) -> dict[str, int]:
        """Messages lost per topic (publishers' sequence gaps), for topics that lost any."""
        return {topic: sub.gaps for topic, sub in self.subs.items() if sub.gaps}

    def status(self) -> dict[str, Any]:
        dropped = self.dropped()
        rejected = sum(sub.rejected for sub in self.subs.values())
        return {"complete": not dropped, "dropped": sum(dropped.values()),
                "dropped_by_topic": dropped, "rejected": rejected,
                "topics": sorted(self.subs)}

    def teardown(self) -> None:
        self.graph_watch.close()
        if self.sink is not None:
            status = self.status()
            self.sink.close(status)
            self.log.info("%s: %d messages in %s%s", self.name, self.sink.messages,
                          ", ".join(map(str, self.sink.files)),
                          "" if status["complete"] else
                          f"; INCOMPLETE: {status['dropped']} dropped, "
                          f"{status['rejected']} rejected")
