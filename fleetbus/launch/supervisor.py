"""Start a graph's processes in dependency order, keep them running, stop them cleanly.

One OS process per node, or per `process:` group of Python nodes. A process starts when
every node it depends on has registered (its setup() finished). It is restarted per its
nodes' `restart` policy with exponential backoff, and given up after `max_restarts`
within `restart_window_s`. A node silent in the registry for longer than its
`health_timeout` has its process restarted. Stopping sends SIGINT, then SIGTERM, then
SIGKILL, each after the node's `stop_timeout_s`, to the whole process group, so nothing
is left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

import msgspec

from fleetbus.bus.config import BusConfig, remove_ipc_files
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.runner import ensure_registry
from fleetbus.launch.graph import Graph, NodeSpec
from fleetbus.launch.loader import GraphError, validate

TICK_S = 0.05
GRAPH_POLL_S = 0.25
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 10.0  # a process that ran this long starts its backoff afresh
COLOURS = (36, 35, 32, 33, 34, 31)  # ANSI: cyan, magenta, green, yellow, blue, red


@dataclass
class Proc:
    """One supervised OS process and its nodes."""

    key: str
    nodes: list[NodeSpec]
    popen: subprocess.Popen | None = None
    state: str = "waiting"  # waiting | running | backoff | failed | done
    started: float = 0.0
    next_start: float = 0.0
    backoff_s: float = BACKOFF_FIRST_S
    restarts: deque = field(default_factory=deque)
    seen_at: dict[str, float] = field(default_factory=dict)  # node -> last registry sign
    exit_code: int | None = None

    @property
    def policy(self) -> NodeSpec:
        """The first node's settings govern a group (they share one fate)."""
        return self.nodes[0]

    @property
    def required(self) -> bool:
        return any(n.required for n in self.nodes)


class Supervisor:
    def __init__(self, graph: Graph, config: BusConfig | None = None,
                 log_format: str = "text", out: TextIO | None = None) -> None:
        self.graph = graph
        self.config = config or BusConfig.from_env()
        self.log_format = log_format
        self.out = out or sys.stdout
        self._stop = threading.Event()
        self._print_lock = threading.Lock()
        self._ready: set[str] = set()  # full names that have registered
        problems = validate(graph)  # graphs built in Python get the file's checks too
        if problems:
            raise GraphError(problems)
        self.procs = self._group(graph)

    @staticmethod
    def _group(graph: Graph) -> list[Proc]:
        groups: dict[str, Proc] = {}
        for node in graph.nodes:
            key = f"group:{node.process}" if node.process else node.full_name
            groups.setdefault(key, Proc(key, [])).nodes.append(node)
        return list(groups.values())

    def stop(self) -> None:
        self._stop.set()

    # -- running -----------------------------------------------------------------------------

    def run(self, duration: float | None = None) -> int:
        """Run until stop(), SIGINT/SIGTERM or `duration`; 0 unless a required node
        failed for good."""
        # Starting the registry is the launcher's job, whatever FLEETBUS_AUTOREGISTRY says
        # (that setting is about single nodes embedding one).
        registry = ensure_registry(dataclasses.replace(self.config, auto_registry=True))
        deadline = None if duration is None else time.monotonic() + duration
        next_poll = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_poll:
                    next_poll = now + GRAPH_POLL_S
                    self._observe(now)
                for proc in self.procs:
                    self._step(proc, now)
                if all(p.state in ("failed", "done") for p in self.procs):
                    break
                self._stop.wait(TICK_S)
        finally:
            self._shutdown()
            if registry is not None:
                registry.stop()
        failed = [p for p in self.procs if p.state == "failed" and p.required]
        return 1 if failed else 0

    def _step(self, proc: Proc, now: float) -> None:
        if (proc.state == "waiting" and self._deps_ready(proc)) or (
            proc.state == "backoff" and now >= proc.next_start
        ):
            self._start(proc, now)
        elif proc.state == "running":
            assert proc.popen is not None
            code = proc.popen.poll()
            if code is not None:
                self._exited(proc, code, now)
            elif self._unhealthy(proc, now):
                self._say(proc.key, f"no heartbeat for {proc.policy.health_timeout} s: "
                                    "restarting", "warn")
                self._terminate(proc)
                self._exited(proc, proc.popen.returncode, now, health=True)

    def _deps_ready(self, proc: Proc) -> bool:
        own = {n.full_name for n in proc.nodes}
        deps = {d for n in proc.nodes for d in n.depends_on} - own
        return deps <= self._ready

    def _start(self, proc: Proc, now: float) -> None:
        env = dict(os.environ, **self.graph.env, FLEETBUS_AUTOREGISTRY="0")
        for node in proc.nodes:
            env.update(node.env)
        first = proc.policy
        if first.cmd is not None:
            args = list(first.cmd)
            env.update(FLEETBUS_NODE_NAME=first.full_name,
                       FLEETBUS_PARAMS=json.dumps(first.params))
        else:
            specs = msgspec.json.encode(proc.nodes).decode()
            args = [sys.executable, "-m", "fleetbus.launch.worker", specs]
        try:
            proc.popen = subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:  # e.g. the command does not exist: retrying cannot help
            proc.state = "failed"
            self._say(proc.key, f"cannot start {args[0]!r}: {exc.strerror}", "error")
            return
        proc.state, proc.started = "running", now
        proc.seen_at = {}
        threading.Thread(target=self._pump, args=(proc.key, proc.popen), daemon=True).start()
        if first.cmd is not None:
            self._ready.update(n.full_name for n in proc.nodes)  # no registry to wait for

    def _exited(self, proc: Proc, code: int | None, now: float, health: bool = False) -> None:
        proc.exit_code = code
        self._ready.difference_update(n.full_name for n in proc.nodes)
        self._clean_sockets(proc)
        policy = proc.policy
        wanted = health or policy.restart == "always" or (
            policy.restart == "on-failure" and code != 0)
        if not wanted:
            proc.state = "done" if code == 0 else "failed"
            self._say(proc.key, f"exited with {code}" + ("" if code == 0 else "; not restarted"),
                      "info" if code == 0 else "error")
            return
        while proc.restarts and now - proc.restarts[0] > policy.restart_window_s:
            proc.restarts.popleft()
        if len(proc.restarts) >= policy.max_restarts:
            proc.state = "failed"
            self._say(proc.key, f"exited with {code}; giving up after {len(proc.restarts)} "
                                f"restarts within {policy.restart_window_s:g} s", "error")
            return
        if now - proc.started > STABLE_S:
            proc.backoff_s = BACKOFF_FIRST_S
        proc.restarts.append(now)
        proc.state, proc.next_start = "backoff", now + proc.backoff_s
        self._say(proc.key, f"exited with {code}; restarting in {proc.backoff_s:.1f} s "
                            f"({len(proc.restarts)}/{policy.max_restarts})", "warn")
        proc.backoff_s = min(proc.backoff_s * 2, BACKOFF_MAX_S)

    # -- watching ------------------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        """Who has registered (ready for dependants) and when each node last spoke."""
        graph = fetch_graph(self.config, 0.2)
        if graph is None:
            return
        by_name = {}
        for info in graph.nodes:
            by_name[info.name] = (info, graph.silent_s.get(info.uid, 0.0))
        for proc in self.procs:
            if proc.state != "running" or proc.popen is None:
                continue
            for node in proc.nodes:
                entry = by_name.get(node.full_name)
                if entry is None or entry[0].pid != proc.popen.pid:
                    continue  # not (yet) this incarnation
                proc.seen_at[node.full_name] = now - entry[1]
                if node.full_name not in self._ready:
                    self._ready.add(node.full_name)
                    self._say(proc.key, f"{node.full_name} ready", "info")

    def _unhealthy(self, proc: Proc, now: float) -> bool:
        timeout = proc.policy.health_timeout
        if timeout is None:
            return False
        # Only nodes that have registered are judged: a slow setup() (a solver being
        # built) is not a dead node, and a command need not speak to the registry.
        return any(now - last > timeout for last in proc.seen_at.values())

    # -- stopping ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        running = [p for p in reversed(self.procs) if p.popen and p.popen.poll() is None]
        for proc in running:
            self._signal(proc, signal.SIGINT)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            waiting = [p for p in running if not _wait(p, p.policy.stop_timeout_s)]
            for proc in waiting:
                self._say(proc.key, f"did not stop; sending {sig.name}", "warn")
                self._signal(proc, sig)
            running = waiting
        for proc in running:
            _wait(proc, 5.0)
        for proc in self.procs:
            if proc.popen is not None:
                self._clean_sockets(proc)

    def _terminate(self, proc: Proc) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            self._signal(proc, sig)
            if _wait(proc, proc.policy.stop_timeout_s):
                return

    @staticmethod
    def _signal(proc: Proc, sig: signal.Signals) -> None:
        assert proc.popen is not None
        try:
            os.killpg(proc.popen.pid, sig)
        except ProcessLookupError:
            pass

    def _clean_sockets(self, proc: Proc) -> None:
        """A process killed hard cannot remove its ipc socket files; we know their names
        (they start with its pid)."""
        assert proc.popen is not None
        if not self.config.run_dir.is_dir():
            return
        remove_ipc_files([f"ipc://{path}" for path in
                          self.config.run_dir.glob(f"{proc.popen.pid}-*")])

    # -- output --------------------------------------------------------------------------------

    def _pump(self, key: str, popen: subprocess.Popen) -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            self._say(key, raw.decode(errors="replace").rstrip("\n"), "log")

    def _say(self, key: str, text: str, level: str) -> None:
        with self._print_lock:
            if self.log_format == "json":
                print(json.dumps({"time": time.time(), "process": key, "level": level,
                                  "text": text}), file=self.out, flush=True)
                return
            label = key.removeprefix("group:")
            if self.out.isatty():
                colour = COLOURS[zlib.crc32(key.encode()) % len(COLOURS)]  # stable per name
                label = f"\033[{colour}m{label}\033[0m"
            prefix = "" if level == "log" else f"[launch] {level}: "
            print(f"[{label}] {prefix}{text}", file=self.out, flush=True)


def _wait(proc: Proc, timeout: float) -> bool:
    assert proc.popen is not None
    try:
        proc.popen.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False
