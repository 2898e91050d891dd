"""Views of the registry's graph for people and scripts: per-topic summaries and plain
data renderings of messages. The CLI and the monitoring tools share them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from fleetbus.bus import protocol as p

HIDDEN_PREFIX = "/_"  # tool nodes (the CLI's own) that listings leave out unless asked


@dataclass
class TopicView:
    topic: str
    types: set[str] = field(default_factory=set)
    publishers: list[tuple[str, p.PublisherInfo]] = field(default_factory=list)
    subscriptions: list[tuple[str, p.SubscriptionInfo]] = field(default_factory=list)

    @property
    def rate_hz(self) -> float:
        return sum(pub.rate_hz for _, pub in self.publishers)

    @property
    def bandwidth_bps(self) -> float:
        return sum(pub.bandwidth_bps for _, pub in self.publishers)


def visible(nodes: list[p.NodeInfo], include_hidden: bool = False) -> list[p.NodeInfo]:
    return [n for n in nodes if include_hidden or not n.name.startswith(HIDDEN_PREFIX)]


def topics(graph: p.Graph, include_hidden: bool = False) -> dict[str, TopicView]:
    views: dict[str, TopicView] = {}
    for node in visible(graph.nodes, include_hidden):
        for pub in node.publishers:
            view = views.setdefault(pub.topic, TopicView(pub.topic))
            view.types.add(pub.type_name)
            view.publishers.append((node.name, pub))
        for sub in node.subscriptions:
            view = views.setdefault(sub.topic, TopicView(sub.topic))
            if sub.schema_hash:
                view.types.add(sub.type_name)
            view.subscriptions.append((node.name, sub))
    return dict(sorted(views.items()))


def find_node(graph: p.Graph, name: str) -> p.NodeInfo | None:
    for node in graph.nodes:
        if node.name == name or node.uid == name:
            return node
    return None


ARRAY_INLINE = 16  # arrays up to this many elements are shown in full


def plain(value: Any) -> Any:
    """Turn decoded message data into something YAML/JSON can print: small arrays as
    lists, large ones and long byte strings as a one-line summary."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value, enc_hook=_summary)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return _summary(value)


def _summary(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.size <= ARRAY_INLINE:
            return value.tolist()
        return f"<array {value.dtype} {list(value.shape)}>"
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.hex() if len(data) <= 32 else f"<{len(data)} bytes>"
    if isinstance(value, np.generic):
        return value.item()
    return value
