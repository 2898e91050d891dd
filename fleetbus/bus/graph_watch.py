"""Watching the registry's graph from inside a node without ever blocking it.

Tools that follow the whole bus (the recorder, the Foxglove bridge) look at the graph
every so often for topics that appeared. `fetch_graph` waits for its reply, and a node's
timers run on bus time, which on a simulated bus stands still until the simulator runs:
but the topics are there before it does, and a simulator may wait for a recorder to join
them. So requests go out on wall time, from a thread that only hands them to the node's
loop, on a socket of the watch's own; replies come back through the node's loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import msgspec
import zmq

from fleetbus.bus import protocol as p
from fleetbus.bus import security
from fleetbus.bus.node import Node


class GraphWatch:
    """Calls `on_graph(graph)` on the node's thread about every `poll_s` wall seconds, and
    `on_tick()` every `tick_s` (a wall-time chore of the node's, if any). Create it in
    setup(); close() in teardown()."""

    def __init__(self, node: Node, poll_s: float, on_graph: Callable[[p.Graph], None],
                 tick_s: float | None = None, on_tick: Callable[[], None] | None = None):
        if not poll_s > 0:
            raise ValueError(f"{node.name}: poll_s must be positive, got {poll_s}")
        self.node, self.poll_s, self.on_graph, self.on_tick = node, poll_s, on_graph, on_tick
        sock = node._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1)  # while the registry is away, one request waits
        security.connect(sock, node.config.registry, node._keys)
        self._sock = sock
        node.watch(sock, self._on_reply)
        self._next = 0.0
        self._stop = threading.Event()
        self.request()
        period = min(poll_s, tick_s) if tick_s else poll_s
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True,
                                        name=f"graph-watch{node.name}")
        self._thread.start()

    def request(self) -> None:
        """Ask now (on the node's thread)."""
        self._next = time.monotonic() + self.poll_s
        try:
            self._sock.send(p.ENCODER.encode(p.Snapshot()), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the registry is away and a request already waits for it

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._sock.close(linger=0)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.node.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        # call_soon_threadsafe puts an exception into a future nobody reads: count it here.
        try:
            if self.on_tick is not None:
                self.on_tick()
            if time.monotonic() >= self._next:
                self.request()
        except Exception as exc:
            self.node._count("callback_error", f"tick: {type(exc).__name__}: {exc}",
                             exc_info=True)

    def _on_reply(self) -> None:
        while True:
            try:
                data = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = p.REPLY_DECODER.decode(data)
            except msgspec.DecodeError as exc:
                self.node._count("registry_error", f"undecodable graph reply ({exc})")
                continue
            if isinstance(reply, p.Graph):
                self.on_graph(reply)
