"""Security: CurveZMQ keys and the CLI that manages them, a registry and publishers that
refuse unknown keys (and say so), encrypted tcp (checked on the wire), parameters
settable only from this host or an authenticated link, private socket directories, and
no code execution from received data. Everything binds 127.0.0.1, ipc or inproc."""

from __future__ import annotations

import argparse
import ast
import json
import os
import stat
import sys
import uuid
from pathlib import Path

import pytest
import zmq

import fleetbus
from fleetbus import ServiceFailed
from fleetbus.bus import security
from fleetbus.bus.config import BusConfig
from fleetbus.bus.keys_cli import add_keys_commands
from fleetbus.bus.params import ParamList, ParamListRequest, ParamSetRequest, ParamSetResult
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.cli_error import CliError
from fleetbus.messages.base import lookup_type
from tests.helpers import barrier, graph_nodes, read_jsonl, run_on, wait_until
from tests.procs import Text
from tests.tcp_relay import TcpRelay

PACKAGE = Path(fleetbus.__file__).parent


def keys_cli(*argv: str, env_keys: Path | None = None) -> int:
    """`fleetbus keys ...` as the CLI runs it (its parser, its BusConfig)."""
    parser = argparse.ArgumentParser(prog="fleetbus")
    add_keys_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", *argv])
    return args.func(args, BusConfig.from_env(keys_dir=env_keys))


def make_keys(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / f"keys-{name}"
    security.generate(directory, name)
    return directory


def trust(directory: Path, *peers: Path) -> None:
    """`directory`'s host accepts (and knows the key of) each of `peers`."""
    for peer in peers:
        security.authorize(directory, peer / (security.load_keys(peer).name
                                              + security.PUBLIC_SUFFIX))


def _subscriber(topic, cls):
    def setup(node):
        node.sub = node.subscribe(topic, cls, node.got.append)
    return setup


# -- keys and the CLI ----------------------------------------------------------------------


def test_keys_generate_list_and_authorize(tmp_path, capsys):
    a, b = tmp_path / "a" / "keys", tmp_path / "b"
    assert keys_cli("generate", "--dir", str(a), "hostA") == 0
    assert "hostA.key" in capsys.readouterr().out
    assert keys_cli("generate", "hostB", env_keys=b) == 0  # FLEETBUS_KEYS is the default
    for directory, name in ((a, "hostA"), (b, "hostB")):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "authorized").stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / f"{name}.key_secret").stat().st_mode) == 0o600
    with pytest.raises(CliError, match="already holds"):
        keys_cli("generate", "--dir", str(a), "other")

    assert keys_cli("authorize", "--dir", str(a), str(b / "hostB.key")) == 0
    assert "authorized hostB" in capsys.readouterr().out
    assert keys_cli("authorize", "--dir", str(a), str(b / "hostB.key")) == 0
    assert "already authorized" in capsys.readouterr().out
    with pytest.raises(CliError, match="secret key"):
        keys_cli("authorize", "--dir", str(a), str(b / "hostB.key_secret"))
    (tmp_path / "junk.key").write_text("not a certificate\n")
    with pytest.raises(CliError, match="not a usable certificate"):
        keys_cli("authorize", "--dir", str(a), str(tmp_path / "junk.key"))

    assert keys_cli("list", "--dir", str(a), "--json") == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["name"] == "hostA"
    assert listing["public_key"] == security.load_keys(a).public.decode()
    assert listing["authorized"] == {"hostB": security.load_keys(b).public.decode()}

    # Another key under a known name needs --force, and replaces the old one.
    other = tmp_path / "other"
    security.generate(other, "hostB")
    with pytest.raises(CliError, match="another key"):
        keys_cli("authorize", "--dir", str(a), str(other / "hostB.key"))
    assert keys_cli("authorize", "--force", "--dir", str(a), str(other / "hostB.key")) == 0
    assert security.load_keys(a).authorized() == {"hostB": security.load_keys(other).public}


def test_keys_refuse_a_secret_readable_by_others(tmp_path):
    directory = make_keys(tmp_path, "loose")
    security.load_keys.cache_clear()
    os.chmod(directory / "loose.key_secret", 0o644)
    with pytest.raises(CliError, match="chmod 600"):
        security.load_keys(directory)
    with pytest.raises(CliError, match="one secret certificate"):
        security.load_keys(tmp_path / "nowhere")


# -- the registry --------------------------------------------------------------------------


def test_curve_registry_accepts_authorized_node_and_refuses_unknown_key(bare_bus, tmp_path,
                                                                       caplog):
    bus = bare_bus
    host_a, host_b, mallory = (make_keys(tmp_path, n) for n in ("hostA", "hostB", "mallory"))
    trust(host_a, host_b)
    trust(host_b, host_a)
    trust(mallory, host_a)  # a public key is public: mallory knows whom it talks to
    registry = bus.registry(BusConfig.from_env(keys_dir=host_a), tcp="tcp://127.0.0.1:*")
    url = registry.endpoints[-1]
    assert url.startswith("tcp://127.0.0.1:") and url.endswith("#hostA")
    env = {"FLEETBUS_REGISTRY": url, "FLEETBUS_HOST": "hostB"}
    bus.spawn("talker", "--topic", "/x", env={**env, "FLEETBUS_KEYS": str(host_b)})
    bus.spawn("talker", "--name", "mallory", "--topic", "/x",
              env={**env, "FLEETBUS_KEYS": str(mallory)})

    bus.wait_for_nodes("/talker")
    mallory_key = security.load_keys(mallory).public.decode()
    wait_until(lambda: registry.counters["auth_refused"] >= 1, what="the refusal counted")
    wait_until(lambda: mallory_key in caplog.text, what="the refusal logged with the key")
    line = next(r.getMessage() for r in caplog.records if mallory_key in r.getMessage())
    assert "refused tcp peer 127.0.0.1" in line
    graph = bus.wait_for_nodes("/talker")
    assert "/mallory" not in graph
    assert fetch_graph(bus.config).counters["auth_refused"] >= 1
    # Authorizing a key takes effect at the next handshake (ZeroMQ keeps retrying).
    trust(host_a, mallory)
    bus.wait_for_nodes("/talker", "/mallory")


def test_a_peer_without_curve_is_refused_counted_and_logged(bare_bus, tmp_path, caplog):
    """ZeroMQ turns away a peer that does not speak CurveZMQ before any key is checked; the
    registry and a node still count and log it (from their sockets' monitors)."""
    bus = bare_bus
    keys = make_keys(tmp_path, "hostA")
    registry = bus.registry(BusConfig.from_env(keys_dir=keys), tcp="tcp://127.0.0.1:*")
    node = bus.node("pub", lambda n: n.publisher("/far", Text), config=BusConfig.from_env(
        host="hostA", tcp_interface="127.0.0.1", keys_dir=keys))
    info = wait_until(lambda: graph_nodes(bus.config).get("/pub"), what="the node listed")
    data_url = next(url for url in info.data_urls if url.startswith("tcp://"))
    context = zmq.Context()  # the test's own: its sockets must not outlive it
    plain = [context.socket(zmq.DEALER), context.socket(zmq.SUB)]
    try:
        plain[0].connect(registry.endpoints[-1].partition("#")[0])
        plain[0].send(b"hello", zmq.NOBLOCK)
        plain[1].connect(data_url)
        wait_until(lambda: registry.counters["auth_refused"] >= 1,
                   what="the registry counting the plain peer")
        wait_until(lambda: node.counters["auth_refused"] >= 1,
                   what="the node counting the plain peer")
        wait_until(lambda: caplog.text.count("before it showed a key") >= 2,
                   what="both refusals logged")
        assert data_url in caplog.text
    finally:
        for sock in plain:
            sock.close(linger=0)
        context.term()


# -- data over tcp -------------------------------------------------------------------------


@pytest.fixture
def two_hosts(bare_bus, tmp_path):
    """Hosts A and B on loopback, each with its own socket directory, registry and keys,
    accepting each other; B's registry joins A's over CurveZMQ."""
    bus = bare_bus
    dirs = {"A": bus.run_dir, "B": bus.new_run_dir()}
    keys = {h: make_keys(tmp_path, f"host{h}") for h in dirs}
    trust(keys["A"], keys["B"])
    trust(keys["B"], keys["A"])
    configs = {h: BusConfig.from_env(run_dir=d, registry=f"ipc://{d}/registry", host=f"host{h}",
                                     keys_dir=keys[h]) for h, d in dirs.items()}
    url_a = bus.registry(configs["A"], tcp="tcp://127.0.0.1:*").endpoints[-1]
    bus.registry(configs["B"], join=[url_a])
    env = {h: {"FLEETBUS_RUN_DIR": str(d), "FLEETBUS_HOST": f"host{h}",
               "FLEETBUS_KEYS": str(keys[h])} for h, d in dirs.items()}
    env["A"]["FLEETBUS_TCP"] = "127.0.0.1"
    return bus, configs, env


def test_publisher_and_subscriber_exchange_data_over_curve(two_hosts):
    bus, configs, env = two_hosts
    bus.spawn("talker", "--topic", "/fleet", "--count", "30", "--wait-subscribers", "1",
              env=env["A"])
    out = bus.out("b.jsonl")
    bus.spawn("listener", "--topic", "/fleet", "--out", str(out), env=env["B"])
    rows = wait_until(lambda: len(r := read_jsonl(out)) >= 30 and r, what="30 messages on B")
    assert [row["n"] for row in rows] == list(range(30))
    assert rows[-1]["urls"][0].startswith("tcp://127.0.0.1:")
    talker = graph_nodes(configs["B"])["/talker"]
    assert talker.curve_key == security.load_keys(configs["A"].keys_dir).public.decode()


def test_subscriber_with_unknown_key_gets_nothing(two_hosts, tmp_path):
    bus, configs, env = two_hosts
    bus.spawn("talker", "--topic", "/fleet", "--rate", "100", env=env["A"])
    out = bus.out("b.jsonl")
    bus.spawn("listener", "--topic", "/fleet", "--out", str(out), env=env["B"])
    wait_until(lambda: read_jsonl(out), what="the authorized subscriber's first message")
    talker = graph_nodes(configs["A"])["/talker"]
    # Mallory knows where the talker is and its key, but the talker does not know hers.
    mallory = bus.node("mallory", _subscriber("/fleet", Text), config=BusConfig.from_env(
        host="hostM", registry=f"ipc://{bus.run_dir}/nobody",
        keys_dir=make_keys(tmp_path, "mallory")))
    tcp = next(url for url in talker.data_urls if url.startswith("tcp://"))
    run_on(mallory, lambda: mallory.sub.connect(tcp, "talker", talker.curve_key))
    wait_until(lambda: graph_nodes(configs["A"])["/talker"].counters.get("auth_refused"),
               what="the talker to count the refusal")
    seen = len(read_jsonl(out))
    wait_until(lambda: len(read_jsonl(out)) > seen + 10, what="more messages for B meanwhile")
    barrier(mallory)
    assert mallory.got == [] and mallory.sub.stats.messages == 0


def test_tcp_needs_curve_at_both_ends_or_neither(bus, tmp_path):
    """A subscriber without keys does not try a publisher's CurveZMQ endpoint: it says
    why it cannot reach it."""
    keys = make_keys(tmp_path, "hostA")
    bus.node("pub", lambda n: n.publisher("/far", Text), config=BusConfig.from_env(
        host="hostA", tcp_interface="127.0.0.1", keys_dir=keys))
    sub = bus.node("sub", _subscriber("/far", Text), config=BusConfig.from_env(host="hostB"))
    wait_until(lambda: sub.counters["unreachable"] >= 1, what="the unreachable count")
    assert sub.sub.publishers == 0


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_traffic_on_the_wire_is_not_readable(bare_bus, tmp_path, curve):
    """The same message through a recording relay: readable on a plain tcp link, not on a
    CurveZMQ one."""
    bus = bare_bus  # no registry: the subscriber reaches the publisher only via the relay
    keys = {h: make_keys(tmp_path, h) if curve else None for h in ("hostA", "hostB")}
    if curve:
        trust(keys["hostA"], keys["hostB"])
    marker = f"MARKER-{uuid.uuid4().hex}"

    def talker(node):
        pub = node.publisher("/secret", Text)
        node.timer(0.01, lambda: pub.subscribers and pub.publish(Text(data=marker)))

    pub = bus.node("pub", talker, config=BusConfig.from_env(
        host="hostA", tcp_interface="127.0.0.1", keys_dir=keys["hostA"]))
    sub = bus.node("sub", _subscriber("/secret", Text), config=BusConfig.from_env(
        host="hostB", keys_dir=keys["hostB"]))
    tcp = next(url for url in pub._data_urls if url.startswith("tcp://"))
    host, port = tcp.removeprefix("tcp://").rsplit(":", 1)
    relay = TcpRelay(host, int(port))
    bus.closers.append(relay.close)
    server_key = pub.info().curve_key
    assert bool(server_key) == curve
    run_on(sub, lambda: sub.sub.connect(relay.url, "pub", server_key))
    wait_until(lambda: sub.got, what="a message through the relay")
    assert sub.got[0].data == marker
    captured = bytes(relay.passed)
    assert len(captured) > len(marker)
    assert (marker.encode() in captured) is not curve


# -- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_set_param_needs_a_local_or_authenticated_link(bus, tmp_path, curve):
    keys = {h: make_keys(tmp_path, h) if curve else None for h in ("hostA", "hostB")}
    if curve:
        trust(keys["hostA"], keys["hostB"])
    env = {"FLEETBUS_TCP": "127.0.0.1", "FLEETBUS_HOST": "hostA"}
    bus.spawn("server", env={**env, "FLEETBUS_KEYS": str(keys["hostA"]) if curve else None})
    bus.wait_for_nodes("/server")
    remote = bus.node("remote", config=BusConfig.from_env(host="hostB", keys_dir=keys["hostB"]))
    local = bus.node("local", config=BusConfig.from_env(host="hostA"))

    def call(node, name, request, response_type):
        return run_on(node, lambda: node.call(f"/server/{name}", request, timeout=5.0,
                                              response_type=response_type), timeout=10)

    def gain(node):
        params = call(node, "list_params", ParamListRequest(), ParamList)
        return dict(zip(params.names, params.values, strict=True))["gain"]

    setting = ParamSetRequest(name="gain", value=2.0)
    if curve:
        assert call(remote, "set_param", setting, ParamSetResult).ok
        assert gain(remote) == 2.0
    else:
        with pytest.raises(ServiceFailed, match="tcp link without CurveZMQ"):
            call(remote, "set_param", setting, ParamSetResult)
        assert gain(remote) == 1.0  # reading stays open
    assert [url.split(":")[0] for url in remote._clients] == ["tcp"]

    assert call(local, "set_param", ParamSetRequest(name="gain", value=3.0), ParamSetResult).ok
    assert gain(local) == 3.0
    assert [url.split(":")[0] for url in local._clients] == ["ipc"]


# -- local links and received data ---------------------------------------------------------


def test_socket_directory_is_private(bus, tmp_path):
    bus.node("pub", lambda n: n.publisher("/x", Text))
    assert stat.S_IMODE(bus.run_dir.stat().st_mode) == 0o700
    assert bus.run_dir.stat().st_uid == os.getuid()
    sockets = [p for p in bus.run_dir.iterdir() if stat.S_ISSOCK(p.stat().st_mode)]
    assert sockets  # registry and node endpoints, reachable through the 0700 directory only
    # A directory made by someone else's umask is tightened; missing parents are 0700 too.
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    BusConfig.from_env(run_dir=loose).ensure_run_dir()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    deep = tmp_path / "new" / "run"
    BusConfig.from_env(run_dir=deep).ensure_run_dir()
    assert stat.S_IMODE(deep.parent.stat().st_mode) == stat.S_IMODE(deep.stat().st_mode) == 0o700


def test_run_dir_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "run").symlink_to(target)
    with pytest.raises(PermissionError, match="link"):
        BusConfig.from_env(run_dir=tmp_path / "run").ensure_run_dir()


UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "jsonpickle",
                  "marshal", "shelve"}
UNSAFE_BUILTINS = {"eval", "exec", "compile"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load",
               "full_load_all"}


def _unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{func.id}()")
            elif (isinstance(func, ast.Attribute) and func.attr in UNSAFE_YAML
                  and isinstance(func.value, ast.Name) and func.value.id == "yaml"
                  and not any(k.arg == "Loader" and "Safe" in ast.unparse(k.value)
                              for k in node.keywords)):
                found.append(f"yaml.{func.attr}()")
            found += [f"{ast.unparse(func)}(allow_pickle=True)" for k in node.keywords
                      if k.arg == "allow_pickle" and ast.unparse(k.value) != "False"]
    return found


def test_no_pickle_eval_or_unsafe_yaml_in_the_package():
    """Nothing in fleetbus may turn bytes into code: no pickle (or marshal, shelve, ...),
    eval/exec/compile, unsafe YAML loaders or numpy pickles."""
    problems = [f"{path.relative_to(PACKAGE.parent)}:{line}"
                for path in sorted(PACKAGE.rglob("*.py"))
                for line in _unsafe_calls(ast.parse(path.read_text(), str(path)))]
    assert problems == []
    # The scan itself finds what it is meant to.
    assert _unsafe_calls(ast.parse("import pickle\nyaml.load(s)\neval(x)\n"
                                   "np.load(f, allow_pickle=True)\n")) == [
        "import pickle", "yaml.load()", "eval()", "np.load(allow_pickle=True)"]
    assert _unsafe_calls(ast.parse("yaml.load(s, Loader=yaml.SafeLoader)\nyaml.safe_load(s)")
                         ) == []


def test_type_names_from_the_bus_never_import_modules():
    """A service's response type comes from the graph; an import path there must not
    import what it names (a module's code runs on import)."""
    assert "this" not in sys.modules
    with pytest.raises(KeyError):
        lookup_type("this:Message", imports=False)
    assert "this" not in sys.modules
