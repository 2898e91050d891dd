"""Clean shutdown: a node process stops on SIGTERM or SIGINT with exit code 0, removes
its socket files and says goodbye to the registry."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import graph_nodes, wait_until
from tests.procs import Text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("program", ["talker", "server"])
def test_node_process_exits_cleanly_on_signal(bus, sig, program):
    listener = bus.node("listener", lambda n: setattr(
        n, "sub", n.subscribe("/chatter", Text, n.got.append)))
    child = bus.spawn(program, "--topic", "/chatter") if program == "talker" else bus.spawn(
        program)
    bus.wait_for_nodes(f"/{program}")

    def own_files():
        return sorted(path.name for path in bus.run_dir.glob(f"{child.pid}-*"))

    assert own_files(), "the node should have ipc socket files while it runs"
    if program == "talker":  # stop it while a subscriber is linked and data flows
        wait_until(lambda: len(listener.got) >= 5, what="data from the talker")
    child.signal(sig)
    assert child.proc.wait(10) == 0
    assert own_files() == []
    log = child.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    # It said goodbye: gone from the graph at once, not only after the expiry.
    wait_until(lambda: f"/{program}" not in graph_nodes(bus.config), what="the node to leave")
