"""Running nodes in this process: `start` for tests and embedding, `run` for programs."""

from __future__ import annotations

import logging
import signal
import threading

from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node, NodeSetupError
from fleetbus.bus.registry import Registry, RegistryRunning
from fleetbus.bus.registry_client import fetch_graph

log = logging.getLogger("fleetbus")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def ensure_registry(config: BusConfig, timeout: float = 0.3) -> Registry | None:
    """Make sure a registry serves `config`'s bus: return an embedded one started here
    if none answered (and auto-start is allowed), else None."""
    if fetch_graph(config, timeout) is not None or not config.auto_registry:
        return None
    try:
        return Registry(config).start()
    except RegistryRunning:
        return None  # another process is starting one right now


class Running:
    """Nodes started by `start`; stop them with `stop()` or a `with` block."""

    def __init__(self, nodes: list[Node], registry: Registry | None) -> None:
        self.nodes = nodes
        self.registry = registry

    def stop(self, timeout: float = 5.0) -> None:
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            node.stopped.wait(timeout)
        if self.registry is not None:
            self.registry.stop()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(*nodes: Node, timeout: float = 10.0) -> Running:
    """Start `nodes` on background threads of this process (they share one ZeroMQ
    context, so their links use inproc) and wait until every `setup()` has finished.
    Raises NodeSetupError if one failed; the others are stopped again."""
    if not nodes:
        raise ValueError("start() needs at least one node")
    registry = ensure_registry(nodes[0].config)
    running = Running(list(nodes), registry)
    for node in nodes:
        node.start()
    for node in nodes:
        if not node.ready.wait(timeout) or node.setup_error is not None:
            running.stop()
            why = node.setup_error or "setup() did not finish in time"
            raise NodeSetupError(f"{node.name}: {why}") from node.setup_error
    return running


def run(*nodes: Node, duration: float | None = None) -> None:
    """Run `nodes` until SIGINT/SIGTERM (or `duration` seconds), then stop them cleanly:
    sockets closed, ipc files removed, the registry told."""
    configure_logging()
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        with start(*nodes):
            stopped = [node.stopped for node in nodes]
            while not done.wait(0.2 if duration is None else min(0.2, duration)):
                if duration is not None:
                    duration -= 0.2
                    if duration <= 0:
                        break
                if all(ev.is_set() for ev in stopped):
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging(level: int = logging.INFO) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)


