"""One-shot requests to the registry (CLI, service lookup)."""

from __future__ import annotations

import zmq

from fleetbus.bus import protocol as p
from fleetbus.bus import security
from fleetbus.bus.config import BusConfig


def fetch_graph(
    config: BusConfig, timeout: float = 1.0, context: zmq.Context | None = None
) -> p.Graph | None:
    """The registry's current graph, or None if no registry answered within `timeout`.

    A fresh socket per request: a reply can never be mistaken for the answer to an older
    request that was queued while the registry was away."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    try:
        security.connect(sock, config.registry, config.keys())
        if not sock.poll(int(timeout * 1000), zmq.POLLOUT):
            return None
        sock.send(p.ENCODER.encode(p.Snapshot()))
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        reply = p.REPLY_DECODER.decode(sock.recv())
        return reply if isinstance(reply, p.Graph) else None
    finally:
        sock.close(linger=0)
