"""`fleetbus top`'s rows from a hand-built registry graph, without a bus: what is summed
from which counters, how a rate is rated against --expect, which nodes get their process's
figures, and that the table view renders. tests/test_bus_top.py runs it on a real bus."""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console

from fleetbus.bus import protocol as p
from fleetbus.bus.config import BusConfig
from fleetbus.monitoring.bus_top import Top, render
from fleetbus.monitoring.health import contracts

CONFIG = BusConfig(run_dir=Path("/nonexistent"), registry="ipc:///nonexistent/registry",
                   host="here")


def _pub(topic: str, rate_hz: float, bandwidth_bps: float) -> p.PublisherInfo:
    return p.PublisherInfo(topic=topic, type_name="fleetbus/Imu", schema_hash=7,
                           messages=100, rate_hz=rate_hz, bandwidth_bps=bandwidth_bps)


def _sub(topic: str, **counters: object) -> p.SubscriptionInfo:
    return p.SubscriptionInfo(topic=topic, type_name="fleetbus/Imu", schema_hash=7,
                              **counters)


def _node(name: str, uid: str, host: str = "here", pid: int | None = None,
          **fields: object) -> p.NodeInfo:
    return p.NodeInfo(uid=uid, name=name, host=host, pid=os.getpid() if pid is None else pid,
                      context="ctx", started_ns=1, **fields)


def _graph(*nodes: p.NodeInfo, silent_s: dict[str, float] | None = None) -> p.Graph:
    return p.Graph(registry=CONFIG.registry, started_ns=1, nodes=list(nodes), problems=[],
                   silent_s=silent_s or {})


def _graph_of_two_talkers() -> p.Graph:
    return _graph(
        _node("/a/talker", "u1", publishers=[_pub("/chatter", 300.0, 3000.0)],
              counters={"callback_errors": 2}),
        _node("/b/talker", "u2", host="elsewhere", pid=1,
              publishers=[_pub("/chatter", 200.0, 2000.0), _pub("/idle", 0.0, 0.0)]),
        _node("/listener", "u3", subscriptions=[
            _sub("/chatter", gaps=5, stale=1, rejected=0, latency_s=0.002),
            _sub("/idle")]),
        _node("/logger", "u4", subscriptions=[
            _sub("/chatter", gaps=2, stale=0, rejected=3, latency_s=0.010)]),
        _node("/_cli/echo", "u5", subscriptions=[_sub("/_cli_only")]),
        silent_s={"u1": 0.25, "u3": 4.0},
    )


def test_topic_rows_sum_the_publishers_rates_and_the_subscribers_losses():
    top = Top(CONFIG, contracts({"/chat*": 1000.0, "/idle": 5.0}))
    rows = {r.topic: r for r in top.topics(_graph_of_two_talkers())}
    assert sorted(rows) == ["/chatter", "/idle"]  # the tool node's topic is hidden
    chatter = rows["/chatter"]
    assert (chatter.publishers, chatter.subscribers) == (2, 2)
    assert (chatter.rate_hz, chatter.bandwidth_bps) == (500.0, 5000.0)
    assert (chatter.lost, chatter.stale, chatter.rejected) == (7, 1, 3)
    assert chatter.latency_ms == 10.0  # the worst subscriber's last latency
    assert (chatter.expected_hz, chatter.level) == (1000.0, "warn")  # 500 < 80 % of 1000
    assert (rows["/idle"].level, rows["/idle"].latency_ms) == ("stale", None)

    top = Top(CONFIG, contracts({"/chatter": 600.0}), include_hidden=True)
    rows = {r.topic: r for r in top.topics(_graph_of_two_talkers())}
    assert rows["/chatter"].level == "ok"  # 500 >= 80 % of 600
    assert (rows["/idle"].expected_hz, rows["/idle"].level) == (None, "ok")  # no contract
    assert "/_cli_only" in rows


def test_node_rows_measure_local_processes_only_and_count_restarts():
    top = Top(CONFIG, [])
    nodes = {n.name: n for n in top.nodes(_graph_of_two_talkers())}
    assert sorted(nodes) == ["/a/talker", "/b/talker", "/listener", "/logger"]
    local, remote = nodes["/a/talker"], nodes["/b/talker"]
    assert local.rss_mib is not None and local.rss_mib > 0 and local.cpu_percent is not None
    assert (remote.cpu_percent, remote.rss_mib) == (None, None)  # pid 1 is not ours to read
    assert (local.heartbeat_age_s, nodes["/listener"].heartbeat_age_s) == (0.25, 4.0)
    assert local.counters == {"callback_errors": 2}
    assert local.restarts == 0

    # the same name under a new instance uid: the node was restarted while we watched
    again = _graph(_node("/a/talker", "u1-restarted"))
    assert [n.restarts for n in top.nodes(again)] == [1]


def test_the_table_view_shows_both_tables_and_flags_a_missed_rate():
    top = Top(CONFIG, contracts({"/chatter": 1000.0, "/idle": 5.0}))
    graph = _graph_of_two_talkers()
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(top.nodes(graph),
                                                                 top.topics(graph)))
    text = out.getvalue()
    assert "nodes" in text and "topics" in text and "/a/talker" in text
    assert "500.0 WARN" in text and "0.0 STALE" in text
