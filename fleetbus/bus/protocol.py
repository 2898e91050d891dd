"""Registry protocol: what nodes tell the registry and what it tells them back.

Registration is soft state. Every node re-sends its complete `NodeInfo` (with counters)
in an `Announce` every `HEARTBEAT_S`, so a restarted registry rebuilds the whole graph
within one period and nothing is lost if an announce is dropped. The registry forgets a
node after `EXPIRY_S` of silence.
"""

from __future__ import annotations

from typing import Any

import msgspec

HEARTBEAT_S = 0.5
EXPIRY_S = 3.0


class PublisherInfo(msgspec.Struct, kw_only=True):
    topic: str
    type_name: str
    schema_hash: int
    latched: bool = False
    depth: int = 1000
    subscribers: int = 0  # subscriptions connected now, as the publisher's socket sees them
    messages: int = 0
    bytes: int = 0
    rate_hz: float = 0.0  # over the last heartbeat window, measured by the publisher
    bandwidth_bps: float = 0.0


class SubscriptionInfo(msgspec.Struct, kw_only=True):
    topic: str
    type_name: str
    schema_hash: int
    depth: int = 1000
    conflate: bool = False
    max_age_s: float | None = None
    messages: int = 0
    bytes: int = 0
    rate_hz: float = 0.0
    gaps: int = 0  # messages lost, from sequence numbers
    stale: int = 0  # dropped because older than max_age
    conflated: int = 0  # replaced by a newer one before the callback ran
    rejected: int = 0  # undecodable, wrong type or oversize frames
    latency_s: float | None = None  # last publish-to-receive latency (wall clock)
    publishers: int = 0  # publishers currently connected


class ServiceInfo(msgspec.Struct, kw_only=True):
    name: str
    request_type: str
    request_hash: int
    response_type: str
    calls: int = 0
    errors: int = 0


class ParamInfo(msgspec.Struct, kw_only=True):
    name: str
    type: str
    value: Any
    description: str = ""


class NodeInfo(msgspec.Struct, kw_only=True):
    uid: str  # unique per process start
    name: str  # fully qualified, e.g. /drone1/fusion
    host: str
    pid: int
    context: str  # ZeroMQ context identity: equal context means inproc works
    started_ns: int
    state: str = "ok"
    data_urls: list[str] = []
    service_urls: list[str] = []
    publishers: list[PublisherInfo] = []
    subscriptions: list[SubscriptionInfo] = []
    services: list[ServiceInfo] = []
    params: list[ParamInfo] = []
    counters: dict[str, int] = {}  # node-level error counters by kind
    origin: str = ""  # registry that owns this record ("" = the local one)
    curve_key: str = ""  # Z85 CurveZMQ public key of its tcp endpoints ("" = plain tcp)


class PeerPublisher(msgspec.Struct, kw_only=True):
    """What a subscriber needs to connect to one publisher of a topic."""

    uid: str
    node: str
    host: str
    context: str
    urls: list[str]
    type_name: str
    schema_hash: int
    curve_key: str = ""  # as in NodeInfo


# --- requests (node or CLI -> registry) -------------------------------------------------


class Announce(msgspec.Struct, tag="announce"):
    node: NodeInfo


class Bye(msgspec.Struct, tag="bye"):
    uid: str


class Snapshot(msgspec.Struct, tag="snapshot"):
    """Ask for the whole graph (CLI, doctor, service lookup)."""


class PeerSync(msgspec.Struct, tag="peer_sync"):
    """Registry-to-registry: the sender's local nodes, to join two hosts' graphs."""

    registry: str
    nodes: list[NodeInfo]


Request = Announce | Bye | Snapshot | PeerSync


# --- replies and pushes (registry -> node) -----------------------------------------------


class AnnounceAck(msgspec.Struct, tag="ack"):
    """Publishers of each topic the node subscribes to. `complete` is False while the
    registry is younger than EXPIRY_S and may not have heard from every node yet, so
    the node must not drop links that the ack does not mention."""

    peers: dict[str, list[PeerPublisher]]
    complete: bool


class TopicPeers(msgspec.Struct, tag="peers"):
    """Pushed when the publishers of a topic change (`complete` as in AnnounceAck)."""

    topic: str
    peers: list[PeerPublisher]
    complete: bool


class Notice(msgspec.Struct, tag="notice"):
    """A problem the registry sees that a node should log (e.g. a type mismatch)."""

    level: str
    text: str


class Graph(msgspec.Struct, tag="graph"):
    registry: str
    started_ns: int
    nodes: list[NodeInfo]
    problems: list[str]
    silent_s: dict[str, float] = {}  # node uid -> seconds since its last announce
    counters: dict[str, int] = {}  # the registry's own: rejected requests, refused peers


Reply = AnnounceAck | TopicPeers | Notice | Graph | PeerSync


class _Decoder:
    """A msgspec decoder whose only error is msgspec.DecodeError, what the registry, nodes
    and tools catch. `ParamInfo.value` is `Any`, so a hostile announce nested a thousand
    levels deep made msgspec raise RecursionError, which stopped the registry."""

    def __init__(self, kind: Any) -> None:
        self._decoder = msgspec.msgpack.Decoder(kind)

    def decode(self, data: Any) -> Any:
        try:
            return self._decoder.decode(data)
        except RecursionError:
            raise msgspec.DecodeError("registry message nested too deeply") from None


ENCODER = msgspec.msgpack.Encoder()
REQUEST_DECODER = _Decoder(Request)
REPLY_DECODER = _Decoder(Reply)
