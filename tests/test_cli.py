"""The `fleetbus` command against a live bus: each command runs as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from fleetbus.messages import Float64, String
from tests.helpers import run_on, wait_until


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fleetbus.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )


def cli_json(*args: str) -> object:
    result = cli(*args, "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


@pytest.fixture
def chatter(bus):
    """/talker publishes /chatter at 50 Hz (String) and has a parameter and a service;
    /listener subscribes to it and records what it gets."""
    received: list[str] = []

    def talker(node):
        pub = node.publisher("/chatter", String)
        node.param("gain", 1.5, "a gain")
        node.service("~/shout", String, String, lambda r: String(data=r.data.upper()))
        node.timer(0.02, lambda: pub.publish(String(data="hello")))

    def listener(node):
        node.subscribe("/chatter", String, lambda m: received.append(m.data))

    bus.node("talker", talker)
    bus.node("listener", listener)
    bus.wait_for_nodes("/talker", "/listener")
    wait_until(lambda: received, what="the listener's first message")
    return received


def test_topic_list_shows_types_peers_and_publisher_rate(chatter):
    def listed():
        topics = {t["topic"]: t for t in cli_json("topic", "list")}
        entry = topics.get("/chatter")
        return entry if entry and entry["rate_hz"] > 0 else None

    entry = wait_until(listed, what="/chatter with a rate in `topic list`")
    assert entry["types"] == ["fleetbus/String"]
    assert entry["publishers"] == ["/talker"]
    assert entry["subscribers"] == ["/listener"]


def test_topic_info_reports_both_sides_with_counters(chatter):
    info = wait_until(
        lambda: (i := cli_json("topic", "info", "/chatter"))["subscriptions"][0]["messages"] and i,
        what="subscription counters in `topic info`",
    )
    (pub,) = info["publishers"]
    assert pub["node"] == "/talker" and pub["subscribers"] >= 1
    sub = next(s for s in info["subscriptions"] if s["node"] == "/listener")
    assert sub["gaps"] == 0 and sub["rejected"] == 0


def test_topic_echo_prints_messages_and_stops_after_count(chatter):
    result = cli("topic", "echo", "/chatter", "--count", "2", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--- # /chatter fleetbus/String") == 2
    assert "data: hello" in result.stdout


def test_topic_echo_json_lines(chatter):
    result = cli("topic", "echo", "/chatter", "--count", "1", "--json", "--timeout", "20")
    line = json.loads(result.stdout.splitlines()[0])
    assert line["type"] == "fleetbus/String" and line["data"] == {"data": "hello"}


def test_topic_hz_reads_the_publisher_side_rate(chatter):
    result = cli("topic", "hz", "/chatter", "--count", "3", "--json")
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 3
    assert reports[-1]["rate_hz"] > 0 and "/talker" in reports[-1]["publishers"]


def test_topic_pub_reaches_a_subscriber(bus):
    got: list[float] = []
    bus.node("sink", lambda n: n.subscribe("/value", Float64, lambda m: got.append(m.data)))
    bus.wait_for_nodes("/sink")
    result = cli("topic", "pub", "/value", "fleetbus/Float64", "{data: 2.5}")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: got, what="the published value")
    assert got == [2.5]


def test_topic_pub_with_bad_data_names_the_field(bus):
    result = cli("topic", "pub", "/value", "fleetbus/Float64", "{data: not-a-number}")
    assert result.returncode == 2
    assert "data" in result.stdout and "float" in result.stdout


def test_node_list_hides_tool_nodes(chatter):
    names = [n["name"] for n in cli_json("node", "list")]
    assert names == ["/listener", "/talker"]
    info = cli_json("node", "info", "/talker")
    assert info["publishers"][0]["topic"] == "/chatter"


def test_param_list_get_and_set_with_type_check(bus, chatter):
    params = cli_json("param", "list", "/talker")
    assert [(p["name"], p["value"]) for p in params] == [("gain", 1.5)]
    assert cli("param", "get", "/talker", "gain").stdout.strip() == "1.5"
    ok = cli("param", "set", "/talker", "gain", "3")
    assert ok.returncode == 0, ok.stdout
    talker = next(n for n in bus.nodes if n.name == "/talker")
    assert run_on(talker, lambda: talker._params["gain"].value) == 3.0
    bad = cli("param", "set", "/talker", "gain", "fast")
    assert bad.returncode == 2 and "gain" in bad.stdout and "float" in bad.stdout
    missing = cli("param", "get", "/talker", "nope")
    assert missing.returncode == 2 and "nope" in missing.stdout


def test_service_list_and_call(chatter):
    services = {s["name"]: s for s in cli_json("service", "list")}
    assert services["/talker/shout"]["request_type"] == "fleetbus/String"
    assert not any(name.endswith("/set_param") for name in services)  # built-ins hidden
    result = cli("service", "call", "/talker/shout", "{data: hi}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data: HI" in result.stdout
    missing = cli("service", "call", "/nope", "{}")
    assert missing.returncode == 2 and "/nope" in missing.stdout


def test_doctor_is_quiet_on_a_healthy_graph_and_explains_a_type_mismatch(bus, chatter):
    healthy = cli("doctor")
    assert healthy.returncode == 0, healthy.stdout
    bus.node("confused", lambda n: n.subscribe("/chatter", Float64, lambda m: None))
    findings = wait_until(
        lambda: [f for f in json.loads(cli("doctor", "--json").stdout) if f["level"] == "error"],
        what="doctor to report the mismatch",
    )
    assert "type mismatch on /chatter" in findings[0]["text"]
    assert set(findings[0]["nodes"]) == {"/talker", "/confused"}
    assert cli("doctor").returncode == 1


def test_commands_without_a_registry_fail_clearly(bare_bus):
    result = cli("topic", "list")
    assert result.returncode == 2
    assert "no registry answered" in result.stdout


def test_up_serves_the_bus_and_stops_on_sigint(bare_bus):
    proc = subprocess.Popen([sys.executable, "-m", "fleetbus.cli", "up"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: cli("node", "list").returncode == 0, what="the registry to answer")
        second = cli("up")
        assert second.returncode == 2 and "already serves" in second.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
