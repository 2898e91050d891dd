"""Explain what is wrong with a running graph, from the registry's view of it.

Used by the registry (to tell nodes about type mismatches the moment they appear) and by
`fleetbus doctor`.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from dataclasses import dataclass

from fleetbus.bus import protocol as p


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warn" | "info"
    text: str
    nodes: tuple[str, ...] = ()


def _short(schema_hash: int) -> str:
    return f"{schema_hash:016x}"[:8]


def type_mismatches(nodes: list[p.NodeInfo]) -> list[Finding]:
    """One finding per (publisher, subscriber) pair on a topic whose types disagree."""
    pubs: dict[str, list[tuple[str, p.PublisherInfo]]] = defaultdict(list)
    for node in nodes:
        for pub in node.publishers:
            pubs[pub.topic].append((node.name, pub))
    findings = []
    for node in nodes:
        for sub in node.subscriptions:
            for pub_node, pub in pubs.get(sub.topic, ()):
                if pub.schema_hash == sub.schema_hash or sub.schema_hash == 0:  # 0: any type
                    continue
                what = (
                    "a different type"
                    if pub.type_name != sub.type_name
                    else "a different layout of the same type (schema hash differs)"
                )
                findings.append(
                    Finding(
                        "error",
                        f"type mismatch on {sub.topic}: {pub_node} publishes "
                        f"{pub.type_name}#{_short(pub.schema_hash)} but {node.name} expects "
                        f"{sub.type_name}#{_short(sub.schema_hash)} ({what}); "
                        f"they are not connected",
                        (pub_node, node.name),
                    )
                )
    return findings


def diagnose(graph: p.Graph) -> list[Finding]:
    """Everything a user should look at, most severe first."""
    findings = list(type_mismatches(graph.nodes))
    published = {pub.topic for node in graph.nodes for pub in node.publishers}
    subscribed = {sub.topic for node in graph.nodes for sub in node.subscriptions}
    by_name = defaultdict(list)
    for node in graph.nodes:
        by_name[node.name].append(node)
    for name, same in by_name.items():
        if len(same) > 1:
            findings.append(
                Finding("warn", f"{len(same)} nodes are named {name} (pids "
                        f"{', '.join(str(n.pid) for n in same)})", (name,))
            )
    for node in graph.nodes:
        for sub in node.subscriptions:
            if sub.topic not in published:
                findings.append(
                    Finding("warn", f"{node.name} subscribes to {sub.topic}, "
                            "which nobody publishes", (node.name,))
                )
            if sub.gaps:
                findings.append(
                    Finding("warn", f"{node.name} lost {sub.gaps} message(s) on {sub.topic} "
                            "(sequence gaps: a slow callback or a full queue)", (node.name,))
                )
            if sub.stale:
                findings.append(
                    Finding("warn", f"{node.name} dropped {sub.stale} stale message(s) on "
                            f"{sub.topic} (older than max_age {sub.max_age_s} s)", (node.name,))
                )
            if sub.rejected:
                findings.append(
                    Finding("warn", f"{node.name} rejected {sub.rejected} bad frame(s) on "
                            f"{sub.topic}", (node.name,))
                )
        for pub in node.publishers:
            if pub.topic not in subscribed:
                findings.append(
                    Finding("info", f"{node.name} publishes {pub.topic}, which nobody "
                            "subscribes to", (node.name,))
                )
            elif pub.messages and not pub.rate_hz and not pub.latched:
                findings.append(
                    Finding("warn", f"{pub.topic} is stale: {node.name} published "
                            f"{pub.messages} message(s) but none in the last heartbeat "
                            "window, and it has subscribers", (node.name,))
                )
        for kind, count in sorted(node.counters.items()):
            if count:
                findings.append(
                    Finding("warn", f"{node.name}: {kind} happened {count} time(s)", (node.name,))
                )
        findings.extend(_unreachable(graph.nodes, node))
    order = {"error": 0, "warn": 1, "info": 2}
    return sorted(findings, key=lambda f: order.get(f.level, 3))


def _unreachable(nodes: list[p.NodeInfo], subscriber: p.NodeInfo) -> list[Finding]:
    """Publishers on another host that expose no tcp endpoint can never be reached; on
    this host, an ipc endpoint whose socket file is gone cannot be reached either."""
    topics = {sub.topic for sub in subscriber.subscriptions}
    findings = []
    for node in nodes:
        shared = sorted(topics & {pub.topic for pub in node.publishers})
        if not shared:
            continue
        if node.host == subscriber.host:
            missing = [
                url for url in node.data_urls
                if url.startswith("ipc://") and not os.path.exists(url[len("ipc://"):])
            ]
            if missing and node.host == socket.gethostname():
                findings.append(
                    Finding("error", f"{node.name}'s endpoint {missing[0]} has no socket "
                            f"file: {subscriber.name} cannot connect for {', '.join(shared)}",
                            (subscriber.name, node.name))
                )
            continue
        if not any(url.startswith("tcp://") for url in node.data_urls):
            findings.append(
                Finding("error", f"{subscriber.name} on host {subscriber.host} cannot reach "
                        f"{node.name} on host {node.host} for {', '.join(shared)}: the "
                        "publisher exposes no tcp endpoint (set FLEETBUS_TCP)",
                        (subscriber.name, node.name))
            )
    return findings
