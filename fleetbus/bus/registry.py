"""The discovery registry: who publishes and subscribes what, where, with which type.

It is not in the data path. Nodes announce their full state every heartbeat; the
registry answers with the publishers of the topics they subscribe to and pushes changes
as they happen. A registry can be restarted at any time (nodes keep their links and
re-announce) and registries on several hosts can be joined over tcp: each sends its local
nodes to the others, so a subscriber on one host finds a publisher on another. With
FLEETBUS_KEYS its tcp endpoints are CurveZMQ and accept authorized peers only.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import zmq

from fleetbus.bus import protocol as p
from fleetbus.bus import security
from fleetbus.bus.config import BusConfig, remove_ipc_files
from fleetbus.bus.doctor import type_mismatches

log = logging.getLogger("fleetbus.registry")


class RegistryRunning(RuntimeError):
    """Another registry already serves this bus."""


@dataclass
class _Record:
    info: p.NodeInfo
    seen: float  # monotonic time of the last announce or sync
    route: bytes | None  # ROUTER identity of a local node; None for remote records


class Registry:
    """Serve discovery for one bus. Use `serve()` in the foreground or `start()` for a
    background thread (the embedded registry of a single-process graph)."""

    def __init__(
        self,
        config: BusConfig | None = None,
        *,
        tcp: str | None = None,
        join: Iterable[str] = (),
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config or BusConfig.from_env()
        self.id = f"{self.config.host}:{os.getpid()}:{secrets.token_hex(2)}"
        self.started_ns = time.time_ns()
        self._started = time.monotonic()
        self._ctx = context or zmq.Context.instance()
        self._records: dict[str, _Record] = {}
        self._signatures: dict[str, frozenset] = {}
        self._told_problems: set[str] = set()
        # All kinds present from the start: the authenticator's thread counts refusals
        # while this one copies the counters, which must not change size meanwhile.
        self.counters = collections.Counter(rejected=0, auth_refused=0)
        self._refused_logged: set[tuple[str, str]] = set()
        self._keys = self.config.keys()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_file = self._acquire_lock()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # Endpoints as peers reach them: a CurveZMQ one names this host's key after '#'.
        self.endpoints = [self._bind(url) for url in (self.config.registry, tcp) if url]
        self._peers: list[zmq.Socket] = []
        for url in join:
            dealer = self._ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.SNDHWM, 10)
            security.connect(dealer, url, self._keys)
            self._peers.append(dealer)

    @property
    def rejected(self) -> int:
        """Malformed requests dropped."""
        return self.counters["rejected"]

    def _bind(self, url: str) -> str:
        endpoint = security.bind(self._router, url, self._keys, self.id, self._on_refused)
        if self._keys is not None and endpoint.startswith("tcp://"):
            endpoint += "#" + self._keys.name
        return endpoint

    def _on_refused(self, key: str, address: str) -> None:
        """A tcp peer with an unknown key, or none, was turned away (on the
        authenticator's or the handshake watcher's thread): counted, and logged once per
        key and address."""
        self.counters["auth_refused"] += 1
        if (key, address) not in self._refused_logged:
            if len(self._refused_logged) > 1000:
                self._refused_logged.clear()  # bounded: a flood must not grow memory
            self._refused_logged.add((key, address))
            log.error("registry: %s", security.refusal(key, address))

    # -- lifecycle --------------------------------------------------------------------------

    def _acquire_lock(self) -> int | None:
        """Only one registry per ipc endpoint: a second one would silently steal the
        socket file. The lock dies with the process, so a crash never blocks a restart."""
        if not self.config.registry.startswith("ipc://"):
            return None
        self.config.ensure_run_dir()
        fd = os.open(self.config.run_dir / "registry.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RegistryRunning(f"a registry already serves {self.config.registry}") from None
        return fd

    def start(self) -> Registry:
        self._thread = threading.Thread(target=self.serve, name="fleetbus-registry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve(self) -> None:
        log.info("registry %s serving %s", self.id, ", ".join(self.endpoints))
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        for dealer in self._peers:
            poller.register(dealer, zmq.POLLIN)
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(timeout=100):
                    self._drain(sock)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + p.HEARTBEAT_S
                    self._expire()
                    self._sync_peers()
        finally:
            self._close()

    def _close(self) -> None:
        self._router.close(linger=0)
        for dealer in self._peers:
            dealer.close(linger=0)
        security.release(self._ctx, self.id)
        remove_ipc_files(self.endpoints)
        if self._lock_file is not None:
            os.close(self._lock_file)

    # -- message handling -------------------------------------------------------------------

    def _drain(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            route = frames[0] if sock is self._router else None
            try:
                request = p.REQUEST_DECODER.decode(frames[-1])
            except msgspec.DecodeError as exc:
                self.counters["rejected"] += 1
                if self.rejected == 1 or self.rejected % 1000 == 0:  # bounded log, full count
                    log.warning("registry: dropped malformed request number %d (%s)",
                                self.rejected, exc)
                continue
            self._handle(route, request)

    def _handle(self, route: bytes | None, request: object) -> None:
        if isinstance(request, p.Announce):
            self._announce(route, request.node)
        elif isinstance(request, p.Bye):
            if self._records.pop(request.uid, None) is not None:
                self._graph_changed()
        elif isinstance(request, p.Snapshot) and route is not None:
            self._send(route, self.graph())
        elif isinstance(request, p.PeerSync):
            self._peer_sync(request)
            if route is not None:  # a peer's sync: answer with ours so one join suffices
                self._send(route, p.PeerSync(registry=self.id, nodes=self._local_nodes()))

    def _announce(self, route: bytes | None, info: p.NodeInfo) -> None:
        info.origin = ""
        old = self._records.get(info.uid)
        self._records[info.uid] = _Record(info, time.monotonic(), route)
        if route is not None:
            self._send(route, self._ack_for(info))
        if old is None or _links(old.info) != _links(info):
            self._graph_changed()

    def _peer_sync(self, sync: p.PeerSync) -> None:
        now = time.monotonic()
        changed = False
        for info in sync.nodes:
            info.origin = sync.registry
            old = self._records.get(info.uid)
            if old is not None and old.route is not None:
                continue  # our own node, echoed back
            changed |= old is None or _links(old.info) != _links(info)
            self._records[info.uid] = _Record(info, now, None)
        if changed:
            self._graph_changed()

    def _expire(self) -> None:
        limit = time.monotonic() - p.EXPIRY_S
        gone = [uid for uid, rec in self._records.items() if rec.seen < limit]
        for uid in gone:
            log.info("registry: node %s (%s) went silent", self._records[uid].info.name, uid)
            del self._records[uid]
        if gone:
            self._graph_changed()

    def _sync_peers(self) -> None:
        if not self._peers:
            return
        data = p.ENCODER.encode(p.PeerSync(registry=self.id, nodes=self._local_nodes()))
        for dealer in self._peers:
            try:
                dealer.send(data, zmq.NOBLOCK)
            except zmq.Again:
                pass  # peer unreachable for now; the next tick tries again

    # -- graph --------------------------------------------------------------------------------

    def _local_nodes(self) -> list[p.NodeInfo]:
        return [rec.info for rec in self._records.values() if rec.route is not None]

    def graph(self) -> p.Graph:
        nodes = [rec.info for rec in self._records.values()]
        now = time.monotonic()
        return p.Graph(
            registry=self.id,
            started_ns=self.started_ns,
            nodes=nodes,
            problems=[finding.text for finding in type_mismatches(nodes)],
            silent_s={uid: now - rec.seen for uid, rec in self._records.items()},
            counters=dict(self.counters),
        )

    def _peers_of(self, topic: str) -> list[p.PeerPublisher]:
        return [
            p.PeerPublisher(
                uid=rec.info.uid,
                node=rec.info.name,
                host=rec.info.host,
                context=rec.info.context,
                urls=rec.info.data_urls,
                type_name=pub.type_name,
                schema_hash=pub.schema_hash,
                curve_key=rec.info.curve_key,
            )
            for rec in self._records.values()
            for pub in rec.info.publishers
            if pub.topic == topic
        ]

    def _complete(self) -> bool:
        """True once every live node has had time to announce itself to us."""
        return time.monotonic() - self._started > p.EXPIRY_S

    def _ack_for(self, info: p.NodeInfo) -> p.AnnounceAck:
        peers = {sub.topic: self._peers_of(sub.topic) for sub in info.subscriptions}
        return p.AnnounceAck(peers=peers, complete=self._complete())

    def _graph_changed(self) -> None:
        """Push new publisher lists to the subscribers of every topic whose publishers
        changed, and tell nodes about type mismatches that involve them."""
        topics = {pub.topic for rec in self._records.values() for pub in rec.info.publishers}
        topics |= set(self._signatures)
        for topic in topics:
            peers = self._peers_of(topic)
            signature = frozenset(
                (peer.uid, peer.schema_hash, tuple(peer.urls)) for peer in peers
            )
            if self._signatures.get(topic) == signature:
                continue
            if peers:
                self._signatures[topic] = signature
            else:
                self._signatures.pop(topic, None)
            push = p.TopicPeers(topic=topic, peers=peers, complete=self._complete())
            for rec in self._records.values():
                if rec.route is not None and any(s.topic == topic for s in rec.info.subscriptions):
                    self._send(rec.route, push)
        self._tell_problems()

    def _tell_problems(self) -> None:
        nodes = [rec.info for rec in self._records.values()]
        for finding in type_mismatches(nodes):
            if finding.text in self._told_problems:
                continue
            self._told_problems.add(finding.text)
            log.error("registry: %s", finding.text)
            for rec in self._records.values():
                if rec.route is not None and rec.info.name in finding.nodes:
                    self._send(rec.route, p.Notice(level="error", text=finding.text))

    def _send(self, route: bytes, message: msgspec.Struct) -> None:
        try:
            self._router.send_multipart([route, p.ENCODER.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the node is gone or its queue is full; its next announce resyncs it


def _links(info: p.NodeInfo) -> tuple:
    """The part of a node's state that affects other nodes' connections."""
    return (
        tuple(info.data_urls),
        tuple((pub.topic, pub.schema_hash) for pub in info.publishers),
        tuple((sub.topic, sub.schema_hash) for sub in info.subscriptions),
        tuple(svc.name for svc in info.services),
    )
