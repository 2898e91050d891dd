"""`Node`: the unit of a fleetbus graph.

Subclass it, override `setup()` to declare publishers, subscriptions, timers, services
and parameters, and run it with `fleetbus.run`. All callbacks of one node run on one
thread, in the order their inputs became ready, so a node never needs locks.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import msgspec
import zmq

from fleetbus.bus import protocol as p
from fleetbus.bus import security
from fleetbus.bus.clock import CLOCK_TOPIC, SimClock, WallClock
from fleetbus.bus.config import BusConfig, remove_ipc_files
from fleetbus.bus.params import (
    PARAM_SERVICES,
    Param,
    ParamError,
    ParamList,
    ParamListRequest,
    ParamSetRequest,
    ParamSetResult,
)
from fleetbus.bus.pubsub import DEFAULT_DEPTH, Publisher, Subscription
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.services import (
    ERROR,
    OK,
    Service,
    ServiceFailed,
    ServiceNotFound,
    ServiceTarget,
    ServiceTimeout,
    decode_response,
    hash_bytes,
)
from fleetbus.bus.timers import Timer, TimerQueue
from fleetbus.messages.base import Message, lookup_type
from fleetbus.messages.codec import Codec, DecodeError

M = TypeVar("M", bound=Message)
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
T = TypeVar("T")

SERVICE_LOOKUP_RETRY_S = 0.05  # while a called service is not registered yet
ANNOUNCE_RETRY_S = 0.005  # while no registry has answered yet
LOG_REPEAT_S = 5.0  # a repeated problem is logged at most this often (it is always counted)
_uids = itertools.count(1)


class NodeSetupError(RuntimeError):
    """A node's setup() raised; the node did not start."""


class Node:
    """Base class of all nodes.

    Args:
        name: node name, default the class name in lower case.
        namespace: prefix for relative topic names (``/drone1``).
        params: values that override declared parameter defaults (type-checked).
        remap: topic or service name → replacement, applied before resolution.
        config: which bus to join (default: from the environment).
    """

    max_message_bytes = 256 * 2**20
    """Frames larger than this are rejected and counted."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass method named like one of the base's private ones (_clock_mark, _count,
        # _watch, ...) silently replaces the bus's own machinery: refuse it by name.
        super().__init_subclass__(**kwargs)
        clashes = sorted(name for name in vars(cls) if name.startswith("_")
                         and not name.startswith("__") and name in vars(Node))
        if clashes:
            raise TypeError(f"{cls.__qualname__} redefines Node's private {clashes}: "
                            "rename them")

    def __init__(
        self,
        name: str | None = None,
        *,
        namespace: str = "",
        params: dict[str, Any] | None = None,
        remap: dict[str, str] | None = None,
        config: BusConfig | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        base = name or type(self).__name__.lower()
        self.namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.name = base if base.startswith("/") else f"{self.namespace}/{base}"
        self.uid = f"{os.getpid()}-{next(_uids)}-{secrets.token_hex(2)}"
        self.config = config or BusConfig.from_env()
        self._keys = self.config.keys()
        self.clock: WallClock = SimClock() if self.config.clock == "sim" else WallClock()
        self.log = logging.getLogger("fleetbus" + self.name.replace("/", "."))
        self.counters: collections.Counter[str] = collections.Counter()
        self._context = context or zmq.Context.instance()
        self.context_id = f"{self.config.host}:{os.getpid()}:{id(self._context):x}"
        self._overrides = dict(params or {})
        self._remap = dict(remap or {})
        self._publishers: dict[str, Publisher] = {}
        self._subscriptions: list[Subscription] = []
        self._services: dict[str, Service] = {}
        self._params: dict[str, Param] = {}
        self._timers = TimerQueue()
        self._handlers: dict[Any, Callable[[], None]] = {}
        self._poller = zmq.Poller()
        self._data: zmq.Socket | None = None
        self._data_urls: list[str] = []
        self._service_urls: list[str] = []
        self._registry: zmq.Socket | None = None
        self._router: zmq.Socket | None = None  # service requests over inproc and ipc
        self._router_tcp: zmq.Socket | None = None  # ... and over tcp (FLEETBUS_TCP)
        self._clients: dict[str, zmq.Socket] = {}
        self._targets: dict[str, ServiceTarget] = {}
        self._call_ids = itertools.count(1)
        self._pending: collections.deque[Callable[[], Any]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = False
        self._dirty = False
        self._registry_seen = 0.0
        self._registry_lost = False
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        self._started_ns = time.time_ns()
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.setup_error: BaseException | None = None
        self.thread: threading.Thread | None = None

    # -- to override -----------------------------------------------------------------------

    def setup(self) -> None:
        """Declare publishers, subscriptions, timers, services and parameters."""

    def teardown(self) -> None:
        """Called on the node's thread after its loop stopped, before sockets close."""

    @property
    def warming_up(self) -> bool:
        """Whether the node is still preparing in the background what its first steps
        need (a solver being built). A lockstep driver that does not otherwise hear of
        it (replay-check) waits until it is done."""
        return False

    # -- public API --------------------------------------------------------------------------

    def publisher(
        self, topic: str, msg_type: type[M], latched: bool = False, depth: int = DEFAULT_DEPTH
    ) -> Publisher[M]:
        """A publisher of `msg_type` on `topic`. `latched`: late joiners receive the last
        value. `depth`: messages queued per subscriber before new ones are dropped."""
        topic = self.resolve(topic)
        existing = self._publishers.get(topic)
        if existing is not None:
            if existing.cls is not msg_type:
                raise TypeError(
                    f"{self.name} already publishes {existing.cls.__msgtype__} on {topic}"
                )
            return existing
        sock = self._data_socket()
        pub = Publisher(self, topic, msg_type, latched, depth, sock)
        self._publishers[topic] = pub
        if self.ready.is_set():
            self._bind_data()  # declared after setup(): bind now
        self._dirty = True
        return pub

    def subscribe(
        self,
        topic: str,
        msg_type: type[M] | None,
        callback: Callable[[M], Any],
        depth: int = DEFAULT_DEPTH,
        conflate: bool = False,
        max_age: float | None = None,
    ) -> Subscription[M]:
        """Call `callback(msg)` for each message on `topic`.

        `msg_type=None` accepts any type and delivers `AnyMessage` (raw frame) objects.
        `depth`: receive queue length; `conflate`: deliver only the newest message when
        several are waiting; `max_age`: drop (and count) messages whose stamp is older
        than this many seconds on the bus clock — a controller never acts on stale input.
        """
        sub = Subscription(
            self, self.resolve(topic), msg_type, callback, depth, conflate, max_age
        )
        if self.clock.is_sim:
            sub.follow_sim_clock()
        self._subscriptions.append(sub)
        self._watch(sub.socket, sub._on_readable)
        self._dirty = True
        return sub

    def timer(self, period_s: float, callback: Callable[[], Any]) -> Timer:
        """Call `callback()` every `period_s` seconds of bus time (sim time in sim mode)."""
        return self._timers.add(Timer(period_s, callback, self.clock.timer_ns()))

    def service(
        self,
        name: str,
        request_type: type[Req],
        response_type: type[Resp],
        handler: Callable[[Req], Resp],
        authenticated_only: bool = False,
    ) -> Service[Req, Resp]:
        """Serve `handler(request) -> response` under `name`. `authenticated_only`:
        refuse requests that came over a tcp link without CurveZMQ (a change that a
        stranger on the network must not make); this host and authorized peers may."""
        name = self.resolve(name)
        if name in self._services:
            raise ValueError(f"{self.name} already serves {name}")
        svc = Service(name, request_type, response_type, handler, authenticated_only)
        self._services[name] = svc
        self._dirty = True
        return svc

    def call(
        self,
        name: str,
        request: Message,
        timeout: float = 1.0,
        response_type: type[Resp] | None = None,
    ) -> Any:
        """Call a service and return its response; raises ServiceNotFound,
        ServiceTimeout or ServiceFailed. A service that is not registered yet is waited
        for until the timeout (nodes start in any order). While waiting for the answer,
        this node keeps serving its own requests, so two nodes calling each other cannot
        deadlock."""
        if not timeout > 0:
            raise ValueError("a service call needs a positive timeout")
        name = self.resolve(name)
        own = self._services.get(name)
        if own is not None:
            return own.invoke(request)
        deadline = time.monotonic() + timeout
        target = self._resolve_service(name, deadline)
        codec = Codec(type(request))
        if codec.schema_hash != target.request_hash:
            self._count("service_error", f"call {name}: wrong request type")
            raise ServiceFailed(
                f"service {name} on {target.node} takes {target.request_type}, "
                f"not {codec.type_name}"
            )
        try:
            # A name from the graph: never an import path, which would import what it names.
            response_codec = Codec(response_type
                                   or lookup_type(target.response_type, imports=False))
        except KeyError:
            response_codec = None  # unknown type here: return plain data
        call_id = next(self._call_ids).to_bytes(8, "big")
        payload, buffers = codec.encode(request)
        client = self._client(target.url, target.server_key)
        client.send_multipart(
            [call_id, name.encode(), hash_bytes(codec.schema_hash), payload, *buffers]
        )
        while (remaining := deadline - time.monotonic()) > 0:
            ready = dict(self._call_poller(client).poll(max(1, math.ceil(remaining * 1000))))
            for router in self._routers():
                if router in ready:
                    self._handlers[router]()
            if client in ready:
                reply = client.recv_multipart()
                if len(reply) < 3 or reply[0] != call_id:
                    continue  # a late answer to an earlier call that timed out
                if reply[1] == OK:
                    return decode_response(response_codec, reply[2], reply[3:])
                self._count("service_error", f"call {name}: {reply[2].decode(errors='replace')}")
                raise ServiceFailed(reply[2].decode(errors="replace"))
        self._targets.pop(name, None)  # resolve again next time: the server may have moved
        self._count("service_timeout", f"call {name} on {target.node}: no answer in {timeout} s")
        raise ServiceTimeout(f"service {name} on {target.node} did not answer in {timeout} s")

    def param(
        self,
        name: str,
        default: T,
        description: str = "",
        on_change: Callable[[T], Any] | None = None,
    ) -> Param[T]:
        """Declare a typed parameter. Its value starts as the override given to the
        node (launch file, `params=`), else `default`; `on_change(value)` runs on every
        later change and may refuse it by raising ValueError."""
        if name in self._params:
            raise ValueError(f"{self.name}: parameter {name!r} declared twice")
        param = Param(name, default, description)
        if name in self._overrides:
            try:
                param.value = param.check(self._overrides[name])
            except ParamError as exc:
                raise ParamError(f"{self.name}: {exc}") from None
        if on_change is not None:
            param.callbacks.append(on_change)
        self._params[name] = param
        self._dirty = True
        return param

    def set_param(self, name: str, value: Any) -> None:
        """Change a declared parameter (type-checked; raises ParamError)."""
        param = self._params.get(name)
        if param is None:
            raise ParamError(f"{self.name} has no parameter {name!r}")
        param.set(value)
        self._dirty = True

    def now(self) -> float:
        """Bus time in seconds (sim time when the bus runs on a simulator clock)."""
        return self.clock.now_ns() * 1e-9

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def resolve(self, name: str) -> str:
        """Full topic/service name: remapped, then ``/abs`` kept, ``~/x`` under the node
        name, anything else under the namespace."""
        name = self._remap.get(name, name)
        if name.startswith("/"):
            full = name
        elif name.startswith("~"):
            full = self.name + "/" + name[1:].lstrip("/")
        else:
            full = f"{self.namespace}/{name}"
        return self._remap.get(full, full)

    def call_soon_threadsafe(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn()` on this node's thread (the only way other threads may touch it);
        the returned future holds its result or exception."""
        future: Future[T] = Future()

        def task() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._pending.append(task)
        self._wake()
        return future

    def stop(self) -> None:
        """Ask the node to stop (thread-safe); `stopped` is set when it has."""
        self._stop = True
        self._wake()

    # -- running -------------------------------------------------------------------------------

    def start(self) -> Node:
        """Run this node on a background thread; wait for `ready` before relying on it."""
        self.thread = threading.Thread(target=self.spin, name=f"node{self.name}", daemon=True)
        self.thread.start()
        return self

    def spin(self) -> None:
        """Run the node on the calling thread until `stop()`."""
        try:
            self._open()
            self.setup()
            self._bind_data()
        except BaseException as exc:
            self.setup_error = exc
            self.log.exception("%s: setup failed", self.name)
            self._close()
            self.ready.set()
            self.stopped.set()
            return
        self.ready.set()
        try:
            self._loop()
        finally:
            try:
                self.teardown()
            finally:
                self._close()
                self.stopped.set()

    def _open(self) -> None:
        self.config.ensure_run_dir()
        self._watch(self._wake_r.fileno(), self._on_wake)
        self._registry = self._context.socket(zmq.DEALER)
        self._registry.setsockopt(zmq.LINGER, 0)
        self._registry.setsockopt(zmq.IMMEDIATE, 1)
        self._registry.setsockopt(zmq.SNDHWM, 4)
        self._registry.setsockopt(zmq.ROUTING_ID, self.uid.encode())
        security.connect(self._registry, self.config.registry, self._keys)
        self._watch(self._registry, self._on_registry)
        # Requests over tcp arrive on a socket of their own, so that a service can tell
        # them from local ones (see Node.service's `authenticated_only`).
        local = self._router = self._context.socket(zmq.ROUTER)
        local.setsockopt(zmq.LINGER, 0)
        self._service_urls = self._bind_local(local, "svc")
        self._watch(local, lambda: self._serve_requests(local, True))
        if self.config.tcp_interface:
            remote = self._router_tcp = self._context.socket(zmq.ROUTER)
            remote.setsockopt(zmq.LINGER, 0)
            self._service_urls.append(self._bind_tcp(remote))
            authenticated = self._keys is not None
            self._watch(remote, lambda: self._serve_requests(remote, authenticated))
        list_name, set_name = PARAM_SERVICES
        self.service(f"~/{list_name}", ParamListRequest, ParamList, self._list_params)
        self.service(f"~/{set_name}", ParamSetRequest, ParamSetResult, self._set_param_request,
                     authenticated_only=True)
        if isinstance(self.clock, SimClock):
            from fleetbus.messages.system import Clock

            self._clock_codec = Codec(Clock)
            # the clock moves in _clock_mark, once every socket has read up to it
            self._clock_sub = self.subscribe(CLOCK_TOPIC, Clock, lambda msg: None,
                                             conflate=True)

    def _loop(self) -> None:
        next_heartbeat = time.monotonic()
        while not self._stop:
            if self._dirty or time.monotonic() >= next_heartbeat:
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + p.HEARTBEAT_S
                    self._heartbeat()
                self._announce()
            for sock, _ in self._poller.poll(self._poll_timeout_ms(next_heartbeat)):
                self._handlers[sock]()
                if self._stop:
                    return
            now = self.clock.timer_ns()
            for timer in self._timers.pop_due(now):
                self._run_callback(timer.callback, None, "timer")

    def _poll_timeout_ms(self, next_heartbeat: float) -> int:
        wait_s = next_heartbeat - time.monotonic()
        if self._dirty:
            wait_s = min(wait_s, ANNOUNCE_RETRY_S)
        if not self.clock.is_sim:
            deadline = self._timers.next_deadline()
            if deadline is not None:
                wait_s = min(wait_s, (deadline - self.clock.timer_ns()) * 1e-9)
        return max(0, math.ceil(wait_s * 1000))

    def _close(self) -> None:
        if self._registry is not None:
            try:
                self._registry.send(p.ENCODER.encode(p.Bye(uid=self.uid)), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        sockets = [self._data, self._registry, *self._routers(), *self._clients.values()]
        sockets += [sub.socket for sub in self._subscriptions]
        for sock in sockets:
            if sock is not None:
                sock.close(linger=0)
        security.release(self._context, self.uid)
        remove_ipc_files([*self._data_urls, *self._service_urls])
        self._wake_r.close()
        self._wake_w.close()

    # -- sockets ---------------------------------------------------------------------------------

    def watch(self, source: Any, callback: Callable[[], Any]) -> None:
        """Call `callback` on the node's thread whenever `source` is readable: a zmq
        socket, a file descriptor, or anything with fileno() such as a plain socket or a
        serial port. Call from setup(). An exception in it is counted like any callback's
        and the node goes on."""
        key = source if isinstance(source, zmq.Socket | int) else source.fileno()
        self._watch(key, lambda: self._run_callback(callback, None, f"watch {key}"))

    def _watch(self, sock: Any, handler: Callable[[], None]) -> None:
        self._poller.register(sock, zmq.POLLIN)
        self._handlers[sock] = handler

    def _bind_local(self, sock: zmq.Socket, suffix: str) -> list[str]:
        """Bind inproc (same process) and ipc (same host): plain, as nothing leaves the
        host and the run directory is this user's only."""
        urls = [f"inproc://fleetbus-{self.uid}-{suffix}",
                f"ipc://{self.config.run_dir}/{self.uid}.{suffix}"]
        for url in urls:
            sock.bind(url)
        return urls

    def _bind_tcp(self, sock: zmq.Socket) -> str:
        """Bind tcp (other hosts) on FLEETBUS_TCP: CurveZMQ with FLEETBUS_KEYS."""
        return security.bind(sock, f"tcp://{self.config.tcp_interface}:*", self._keys,
                             self.uid, self._on_refused)

    def _on_refused(self, key: str, address: str) -> None:
        """A tcp peer with an unknown key, or none, was turned away (called on the
        authenticator's or the handshake watcher's thread)."""
        self.call_soon_threadsafe(lambda: self._count(
            "auth_refused", security.refusal(key, address), level="error"))

    def _data_socket(self) -> zmq.Socket:
        if self._data is None:
            sock = self._context.socket(zmq.XPUB)
            sock.setsockopt(zmq.LINGER, 0)
            # See every subscribe (to re-send latched values) and unsubscribe (to count).
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            self._data = sock
            self._watch(sock, self._on_subscription)
        return self._data

    def _bind_data(self) -> None:
        """Bind the data socket once setup() has declared its publishers. ZeroMQ takes a
        bound endpoint's queue limit (SNDHWM) from the moment of bind(), so it must be set
        first; all topics share the socket, so it is the largest depth asked for."""
        if self._data is not None and not self._data_urls:
            depth = max(pub.depth for pub in self._publishers.values())
            self._data.setsockopt(zmq.SNDHWM, depth)
            self._data_urls = self._bind_local(self._data, "pub")
            if self.config.tcp_interface:
                self._data_urls.append(self._bind_tcp(self._data))

    def _pick_url(self, context: str, host: str, urls: list[str],
                  curve_key: str) -> str | None:
        """The closest of a peer's endpoints: inproc in this context, ipc on this host,
        else tcp, if both ends use CurveZMQ on tcp or neither does."""
        if context == self.context_id:
            order = ("inproc://", "ipc://", "tcp://")
        elif host == self.config.host:
            order = ("ipc://", "tcp://")
        else:
            order = ("tcp://",)
        if self._curve_mismatch(curve_key):
            order = order[:-1]
        for scheme in order:
            for url in urls:
                if url.startswith(scheme):
                    return url
        return None

    def _curve_mismatch(self, curve_key: str) -> str:
        """Why tcp to a peer with this CurveZMQ key ("" = none) cannot work, or "": the two
        ends of a tcp link both use CurveZMQ or neither does."""
        if bool(curve_key) == (self._keys is not None):
            return ""
        return ("its tcp uses CurveZMQ and this node has no keys (FLEETBUS_KEYS)" if curve_key
                else "its tcp is plain and this node's is CurveZMQ (FLEETBUS_KEYS)")

    def _client(self, url: str, server_key: str) -> zmq.Socket:
        sock = self._clients.get(url)
        if sock is None:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                security.connect(sock, url, self._keys, server_key)
            except zmq.ZMQError as exc:  # a malformed endpoint or key in the graph
                sock.close(linger=0)
                raise ServiceFailed(f"cannot connect to {url}: {exc}") from None
            self._clients[url] = sock
        return sock

    def _routers(self) -> list[zmq.Socket]:
        return [sock for sock in (self._router, self._router_tcp) if sock is not None]

    def _call_poller(self, client: zmq.Socket) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(client, zmq.POLLIN)
        for router in self._routers():
            poller.register(router, zmq.POLLIN)
        return poller

    # -- event handlers ---------------------------------------------------------------------

    def _on_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._pending:
            self._run_callback(self._pending.popleft(), None, "call_soon_threadsafe")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closed

    def _on_subscription(self) -> None:
        sock = self._data
        assert sock is not None
        while True:
            try:
                event = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            pub = self._publishers.get(event[1:-1].decode(errors="replace"))
            if pub is None:
                continue
            if event[:1] == b"\x01":
                pub.subscribers += 1
                if pub.latched:
                    pub._resend_latched(sock)
            elif pub.subscribers > 0:
                pub.subscribers -= 1

    def _on_registry(self) -> None:
        assert self._registry is not None
        while True:
            try:
                data = self._registry.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = p.REPLY_DECODER.decode(data)
            except msgspec.DecodeError as exc:
                self._count("registry_error", f"undecodable registry message ({exc})")
                continue
            self._registry_seen = time.monotonic()
            if self._registry_lost:
                self._registry_lost = False
                self.log.info("%s: registry is back", self.name)
            if isinstance(reply, p.AnnounceAck):
                for sub in self._subscriptions:
                    sub.update_peers(reply.peers.get(sub.topic, []), reply.complete)
            elif isinstance(reply, p.TopicPeers):
                for sub in self._subscriptions:
                    if sub.topic == reply.topic:
                        sub.update_peers(reply.peers, reply.complete)
            elif isinstance(reply, p.Notice):
                self._count("registry_notice", reply.text, level=reply.level)

    def _serve_requests(self, router: zmq.Socket, authenticated: bool) -> None:
        """Answer the requests waiting on `router`; `authenticated`: whether they come
        from this host or from authorized peers."""
        while True:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 5:
                self._count("service_error", f"malformed service request ({len(frames)} parts)")
                continue
            route, call_id, name, request_hash, payload, *buffers = frames
            svc = self._services.get(name.decode(errors="replace"))
            if svc is None:
                text = f"{self.name} serves no {name.decode(errors='replace')}"
                status, body = ERROR, [text.encode()]
            elif svc.authenticated_only and not authenticated:
                text = (f"{svc.name} refused: the request came over a tcp link without "
                        "CurveZMQ; call it from this host or over an authenticated link "
                        "(FLEETBUS_KEYS on both hosts)")
                status, body = ERROR, [text.encode()]
            else:
                status, body = svc.handle(request_hash, payload, buffers)
            if status == ERROR:
                self._count("service_error", body[0].decode(errors="replace"))
            router.send_multipart([route, call_id, status, *body])

    def _clock_stamp(self, payload: Any) -> int | None:
        """The stamp of a /clock frame's payload (None, counted, if it is not a Clock)."""
        try:
            return int(self._clock_codec.decode(payload, []).stamp_ns)
        except (DecodeError, AttributeError, TypeError, ValueError) as exc:
            self._count("rejected_frame", f"{CLOCK_TOPIC}: rejected undecodable clock ({exc})")
            return None

    def _clock_mark(self, sub: Subscription, stamp_ns: int) -> None:
        """Sim time moves to the least /clock that every socket hearing /clock has read up
        to. Each socket stops (parks) at a /clock, and all resume once the node's time has
        reached it and its timers have run: a step's messages then always come before the
        step's timers, and never the next step's, however the sockets' deliveries
        interleave. That is what makes a lockstep run repeat exactly."""
        assert isinstance(self.clock, SimClock)
        sub.clock_mark_ns = stamp_ns
        sub.parked = True
        self._poller.unregister(sub.socket)
        # The sockets linked to a publisher of /clock take part; one that has not read a
        # /clock yet holds the time where it is (its link is new: the latched /clock is
        # on its way, or the first step's readings are).
        clocks = set(self._clock_sub._connected)
        marks = [s.clock_mark_ns for s in self._subscriptions
                 if s is self._clock_sub or clocks.intersection(s._connected)]
        if None in marks:
            return
        now = max(min(marks), self.clock.now_ns())  # a newcomer may start behind
        self.clock.set(now)
        for s in self._subscriptions:
            if s.parked and s.clock_mark_ns is not None and s.clock_mark_ns <= now:
                s.parked = False
                self._poller.register(s.socket, zmq.POLLIN)

    def _run_callback(self, callback: Callable[..., Any], msg: Any, where: str) -> None:
        try:
            if msg is None:
                callback()
            else:
                callback(msg)
        except Exception as exc:
            self._count(
                "callback_error", f"{where}: {type(exc).__name__}: {exc}", exc_info=True
            )

    # -- registry --------------------------------------------------------------------------------

    def _announce(self) -> None:
        if self._registry is None:
            return
        try:
            self._registry.send(p.ENCODER.encode(p.Announce(node=self.info())), zmq.NOBLOCK)
            self._dirty = False
        except zmq.Again:
            # Not connected (yet): retry soon while starting, so discovery does not wait a
            # whole heartbeat; later on, links already made keep working without it.
            self._dirty = not self._registry_seen

    def _heartbeat(self) -> None:
        for item in [*self._publishers.values(), *self._subscriptions]:
            item.stats.roll()
        silent = time.monotonic() - self._registry_seen
        if self._registry_seen and silent > 3 * p.HEARTBEAT_S and not self._registry_lost:
            self._registry_lost = True
            self.log.warning(
                "%s: registry silent for %.1f s; existing links keep working", self.name, silent
            )

    def info(self) -> p.NodeInfo:
        """This node's registration record, with current counters."""
        return p.NodeInfo(
            uid=self.uid,
            name=self.name,
            host=self.config.host,
            pid=os.getpid(),
            context=self.context_id,
            started_ns=self._started_ns,
            data_urls=self._data_urls,
            service_urls=self._service_urls,
            publishers=[pub.info() for pub in self._publishers.values()],
            subscriptions=[sub.info() for sub in self._subscriptions],
            services=[
                p.ServiceInfo(
                    name=svc.name,
                    request_type=svc.request.type_name,
                    request_hash=svc.request.schema_hash,
                    response_type=svc.response.type_name,
                    calls=svc.calls,
                    errors=svc.errors,
                )
                for svc in self._services.values()
            ],
            params=[
                p.ParamInfo(
                    name=prm.name,
                    type=prm.type.__name__,
                    value=prm.value,
                    description=prm.description,
                )
                for prm in self._params.values()
            ],
            counters=dict(self.counters),
            curve_key=self._keys.public.decode() if self._keys is not None else "",
        )

    def _resolve_service(self, name: str, deadline: float) -> ServiceTarget:
        """Where `name` is served, from the cache or the registry, waiting for it to be
        registered until `deadline`."""
        target = self._targets.get(name)
        while target is None:
            remaining = deadline - time.monotonic()
            graph = fetch_graph(self.config, max(remaining, 0.05), self._context)
            if graph is None:
                self._count("service_error", f"call {name}: no registry answered")
                raise ServiceNotFound(f"cannot look up service {name}: no registry answered")
            target = self._find_service(graph, name)
            if target is None:
                if time.monotonic() + SERVICE_LOOKUP_RETRY_S > deadline:
                    self._count("service_error", f"call {name}: no such service")
                    raise ServiceNotFound(f"no node serves {name}")
                time.sleep(SERVICE_LOOKUP_RETRY_S)
        self._targets[name] = target
        return target

    def _find_service(self, graph: p.Graph, name: str) -> ServiceTarget | None:
        for node in graph.nodes:
            for svc in node.services:
                if svc.name != name:
                    continue
                url = self._pick_url(node.context, node.host, node.service_urls,
                                     node.curve_key)
                if url is not None:
                    return ServiceTarget(
                        name, node.name, url, svc.request_type, svc.request_hash,
                        svc.response_type, node.curve_key,
                    )
        return None

    # -- parameters over the bus ---------------------------------------------------------------

    def _list_params(self, _: ParamListRequest) -> ParamList:
        params = list(self._params.values())
        return ParamList(
            names=[prm.name for prm in params],
            types=[prm.type.__name__ for prm in params],
            values=[prm.value for prm in params],
            descriptions=[prm.description for prm in params],
        )

    def _set_param_request(self, request: ParamSetRequest) -> ParamSetResult:
        try:
            self.set_param(request.name, request.value)
        except ParamError as exc:
            self._count("param_error", str(exc))
            return ParamSetResult(ok=False, error=str(exc))
        self.log.info("%s: parameter %s set to %r", self.name, request.name, request.value)
        return ParamSetResult(ok=True)

    # -- problems ------------------------------------------------------------------------------

    def _count(self, kind: str, text: str, level: str = "warning", exc_info: bool = False) -> None:
        """Count a problem and log it, at most once per LOG_REPEAT_S for the same text."""
        self.counters[kind] += 1
        key = (kind, text)
        now = time.monotonic()
        last, suppressed = self._logged.get(key, (-math.inf, 0))
        if now - last < LOG_REPEAT_S:
            self._logged[key] = (last, suppressed + 1)
            return
        if len(self._logged) > 1000:
            self._logged.clear()  # bounded: garbage input must not grow memory
        self._logged[key] = (now, 0)
        more = f" (and {suppressed} more like it)" if suppressed else ""
        self.log.log(
            logging.getLevelName(level.upper()),
            "%s: %s%s", self.name, text, more, exc_info=exc_info,
        )
