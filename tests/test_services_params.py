"""Services across processes (answers, not-found, timeouts, failures, mutual calls) and
typed parameters (defaults, overrides, setting and listing them over the bus)."""

from __future__ import annotations

import numpy as np
import pytest

from fleetbus import ParamError, ServiceFailed, ServiceNotFound, ServiceTimeout
from fleetbus.bus.params import ParamList, ParamListRequest, ParamSetRequest, ParamSetResult
from tests.helpers import FnNode, graph_nodes, run_on, wait_until
from tests.procs import AddRequest, Blob, Number, Text


@pytest.fixture
def server(bus):
    """The `server` program in its own process (services under /server/...)."""
    child = bus.spawn("server")
    bus.wait_for_nodes("/server")
    return child


def _call(node, name, request, timeout=5.0, **kw):
    return run_on(node, lambda: node.call(name, request, timeout=timeout, **kw), timeout=10)


def _echo_service(node):
    node.service("~/echo", Number, Number, lambda r: Number(v=r.v * 10))


# -- services ----------------------------------------------------------------------------


def test_call_across_processes(bus, server):
    client = bus.node("client")
    assert _call(client, "/server/add", AddRequest(a=2, b=40.5)) == Number(v=42.5)
    assert _call(client, "/server/add", AddRequest(a=-1, b=1)) == Number(v=0.0)
    nodes = wait_until(
        lambda: (n := graph_nodes(bus.config)) and n["/server"].services and n,
        what="the server's services in the graph",
    )
    add = {svc.name: svc for svc in nodes["/server"].services}["/server/add"]
    assert add.request_type == "test/AddRequest" and add.response_type == "test/Number"


def test_call_with_wrong_request_type_fails(bus, server):
    client = bus.node("client")
    with pytest.raises(ServiceFailed, match="test/AddRequest"):
        _call(client, "/server/add", Number(v=1))


def test_missing_service_raises_not_found_when_the_timeout_ends(bus):
    client = bus.node("client")
    with pytest.raises(ServiceNotFound, match="/nope"):
        _call(client, "/nope", Number(), timeout=0.3)
    assert client.counters["service_error"] == 1


def test_call_waits_for_a_service_registered_after_the_call_began(bus):
    client = bus.node("client")
    result = []
    # The call starts first; the server appears while it is waiting for the service.
    client.call_soon_threadsafe(lambda: result.append(client.call("/late/echo", Number(v=2),
                                                                  timeout=10)))
    bus.node("late", _echo_service)
    wait_until(lambda: result, what="the call to a late service to return")
    assert result == [Number(v=20.0)]


def test_service_carries_numpy_arrays_both_ways(bus):
    def serve(node):
        node.service("~/twice", Blob, Blob, lambda r: Blob(array=r.array * 2))

    bus.node("arrays", serve)
    client = bus.node("client")
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    response = _call(client, "/arrays/twice", Blob(array=data))
    np.testing.assert_array_equal(response.array, data * 2)


def test_slow_handler_times_out_and_later_calls_still_work(bus, server):
    client = bus.node("client")
    with pytest.raises(ServiceTimeout, match="/server/sleep"):
        _call(client, "/server/sleep", Number(v=1.0), timeout=0.2)
    assert client.counters["service_timeout"] == 1
    # The late answer to the timed-out call arrives during this one and must be ignored.
    assert _call(client, "/server/add", AddRequest(a=1, b=2)) == Number(v=3.0)
    assert _call(client, "/server/sleep", Number(v=0.01)) == Number(v=0.01)


def test_handler_that_raises_gives_service_failed(bus, server):
    client = bus.node("client")
    with pytest.raises(ServiceFailed, match=r"ValueError: boom 7"):
        _call(client, "/server/fail", Number(v=7))
    assert _call(client, "/server/add", AddRequest(a=1, b=1)) == Number(v=2.0)
    wait_until(
        lambda: {s.name: s.errors for s in graph_nodes(bus.config)["/server"].services}
        .get("/server/fail") == 1,
        what="the server to report the failed call",
    )


def test_unencodable_response_gives_service_failed_and_server_survives(bus):
    """A handler answering with the declared type but a value MessagePack cannot carry."""

    def setup(node):
        node.service("~/big", Number, Text, lambda r: Text(n=2**70 if r.v else 1))

    server = bus.node("server", setup)
    client = bus.node("client")
    bus.wait_for_nodes("/server")
    with pytest.raises(ServiceFailed, match="OverflowError"):
        _call(client, "/server/big", Number(v=1))
    assert _call(client, "/server/big", Number(v=0)) == Text(n=1)
    assert server.thread.is_alive() and server.counters["service_error"] == 1


def test_nodes_calling_each_other_do_not_deadlock(bus, server):
    """client → /server/relay → (inside that handler) /client/echo while the client is
    still waiting for its own call: the client must serve while it waits."""
    client = bus.node("client", _echo_service)
    bus.wait_for_nodes("/client")  # the server looks /client/echo up in the registry
    assert _call(client, "/server/relay", Number(v=1)) == Number(v=(1 + 1) * 10 + 1)


def test_calls_between_callbacks_in_one_process(bus):
    """Two nodes of one process (inproc) calling each other from timer callbacks."""

    def make(other):
        def setup(node):
            node.service("~/echo", Number, Number, lambda r: Number(v=r.v + 1))
            node.answers = []
            node.go = False  # set once both are in the registry (calls look services up)

            def tick():
                if node.go and len(node.answers) < 5:
                    node.answers.append(node.call(f"/{other}/echo", Number(v=len(node.answers))))

            node.timer(0.01, tick)

        return setup

    a = bus.node("a", make("b"))
    b = bus.node("b", make("a"))
    bus.wait_for_nodes("/a", "/b")
    a.go = b.go = True
    wait_until(lambda: len(a.answers) == 5 and len(b.answers) == 5, what="5 answers each")
    assert [m.v for m in a.answers] == [1, 2, 3, 4, 5]
    assert [m.v for m in b.answers] == [1, 2, 3, 4, 5]
    assert a.counters["callback_error"] == b.counters["callback_error"] == 0


def test_node_calls_its_own_service(bus):
    node = bus.node("self", _echo_service)
    assert _call(node, "~/echo", Number(v=4)) == Number(v=40)
    assert _call(node, "/self/echo", Number(v=5)) == Number(v=50)


# -- parameters ----------------------------------------------------------------------------


def _tuner(changes):
    def limit_check(value):
        if value > 10:
            raise ValueError("limit must be at most 10")

    def setup(node):
        node.gain = node.param("gain", 1.5, "a gain", on_change=changes.append)
        node.limit = node.param("limit", 5, "an upper limit", on_change=limit_check)
        node.label = node.param("label", "x")

    return setup


def test_param_defaults_and_overrides(bus):
    node = bus.node("tuner", _tuner([]), params={"gain": 2, "label": "y"})
    assert node.gain.value == 2.0 and type(node.gain.value) is float  # int accepted for float
    assert node.label.value == "y"
    assert node.limit.value == 5  # not overridden: the default


def test_param_override_of_wrong_type_fails_at_declare(bus):
    node = FnNode("tuner", _tuner([]), params={"gain": "high"})
    bus.start(node, check=False)
    assert isinstance(node.setup_error, ParamError)
    assert "gain" in str(node.setup_error) and "/tuner" in str(node.setup_error)
    assert node.stopped.is_set()


def test_set_and_list_params_over_the_bus(bus):
    changes = []
    tuner = bus.node("tuner", _tuner(changes))
    client = bus.node("client")
    bus.wait_for_nodes("/tuner")

    def set_param(name, value):
        result = _call(client, "/tuner/set_param", ParamSetRequest(name=name, value=value))
        assert isinstance(result, ParamSetResult)
        return result

    assert set_param("gain", 3).ok
    assert tuner.gain.value == 3.0 and changes == [3.0]

    bad = set_param("gain", "loud")
    assert not bad.ok and "gain" in bad.error and "float" in bad.error
    assert tuner.gain.value == 3.0 and changes == [3.0]
    assert tuner.counters["param_error"] == 1

    refused = set_param("limit", 11)  # on_change raises ValueError: old value stays
    assert not refused.ok and "limit" in refused.error and "at most 10" in refused.error
    assert tuner.limit.value == 5
    assert set_param("limit", 10).ok and tuner.limit.value == 10

    unknown = set_param("nope", 1)
    assert not unknown.ok and "nope" in unknown.error
    assert tuner.counters["param_error"] == 3

    listing = _call(client, "/tuner/list_params", ParamListRequest())
    assert isinstance(listing, ParamList)
    assert listing.names == ["gain", "limit", "label"]
    assert listing.types == ["float", "int", "str"]
    assert listing.values == [3.0, 10, "x"]
    assert listing.descriptions == ["a gain", "an upper limit", ""]
    wait_until(
        lambda: {p.name: p.value for p in graph_nodes(bus.config)["/tuner"].params}
        == {"gain": 3.0, "limit": 10, "label": "x"},
        what="the new values in the registry's graph",
    )


def test_set_param_of_another_process(bus, server):
    client = bus.node("client")

    def set_param(name, value):
        return _call(client, "/server/set_param", ParamSetRequest(name=name, value=value))

    def values():
        listing = _call(client, "/server/list_params", ParamListRequest())
        return dict(zip(listing.names, listing.values, strict=True))

    assert values() == {"gain": 1.0, "mode": "auto"}
    assert set_param("gain", 2.5).ok
    refused = set_param("gain", -1.0)
    assert not refused.ok and "negative" in refused.error
    wrong = set_param("mode", 3)
    assert not wrong.ok and "mode" in wrong.error
    assert values() == {"gain": 2.5, "mode": "auto"}
    wait_until(
        lambda: graph_nodes(bus.config)["/server"].counters.get("param_error") == 2,
        what="the server's param_error count in the graph",
    )
