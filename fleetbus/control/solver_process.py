"""A CasADi solver function run in a child process, so that a call that never returns can
be stopped.

fatrop has loops in C with no bound of their own, and a thread cannot be stopped from
Python: a hung solve on a thread kept a core busy for good, and the controller had to build
a second solver beside it, 22-25 MiB more each time (issue 11). In a child process a call
not answered in time is ended with SIGKILL, and the next call gets a fresh process loaded
from the same function.

The child is this file run as a script (it imports CasADi and numpy, nothing of fleetbus)
and loads the function from a file CasADi saved: the compiled solver's cache file, or for
an uncompiled one a file already unlinked whose descriptor it inherits (serialised, an
uncompiled solver is 16 MiB of text, too much to keep around or send).

A compiled function's file embeds its binary and the /tmp path it was built at: every
process that loads the file writes the binary there if it is missing and loads it from
there, and the process that built it deletes it when its function is destroyed. A fleet's
drones, starting at once, raced on that path: one loaded the binary while the builder
deleted it ("Cannot load shared library", seen in a soak run). So a cached function is
built, loaded and its builder's copy destroyed only under the cache's lock (`cache_lock`).

Protocol on the child's stdin and stdout: frames of a 4-byte little-endian length and a
payload. It first answers b"ready" and the function's input and output shapes, or
b"error: " and why. Each request is every input's float64 values, row-major,
concatenated; each answer is a fixed header (called without error, success, iterations,
status length), the status text and the first output's values. Only numbers and short text
cross: no pickle.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import casadi as ca
import numpy as np

START_TIMEOUT_S = 120.0  # loading a compiled solver on a machine busy compiling others
_LENGTH = struct.Struct("<I")
_HEADER = struct.Struct("<??iH")  # called without error, success, iterations, status length
_SHAPE = struct.Struct("<II")
_STATUS_MAX = 300


class SolverTimeout(Exception):
    """The call was not answered in time; its process has been killed."""


@dataclass(frozen=True)
class Answer:
    """One call's outcome: `values` is the first output."""

    values: np.ndarray
    success: bool
    iterations: int
    status: str


class SolverServer:
    """The child's side: answers requests with the function. Usable in-process too."""

    def __init__(self, function: ca.Function) -> None:
        self.function = function
        self.shapes = [(function.size1_in(i), function.size2_in(i))
                       for i in range(function.n_in())]
        self.sizes = [rows * cols for rows, cols in self.shapes]
        # The last call's statistics, kept until the next replaces them: CasADi interns
        # every stat name (46 for fatrop), and freed after each solve they left dead slots
        # that made CPython re-allocate its interned-string table, 3.7 MiB at a time.
        self.stats: dict[str, Any] = {}

    def answer(self, request: bytes) -> bytes:
        values = np.frombuffer(request, np.float64)
        if len(values) != sum(self.sizes):
            return self._reply(False, False, -1, f"{len(values)} values in the request, "
                               f"the function takes {sum(self.sizes)}", b"")
        args, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            args.append(ca.DM(values[start:start + size].reshape(shape)))
            start += size
        try:
            out = self.function.call(args)[0]
        except RuntimeError as exc:  # an evaluation error inside the solver
            return self._reply(False, False, -1, str(exc), b"")
        stats = self.stats = self.function.stats()
        status = str(stats.get("return_status", stats.get("unified_return_status", "")))
        return self._reply(True, bool(stats.get("success", False)),
                           int(stats.get("iter_count", -1)), status,
                           np.asarray(out, np.float64).tobytes())

    @staticmethod
    def _reply(called: bool, success: bool, iterations: int, status: str,
               values: bytes) -> bytes:
        text = status.encode("utf-8", "replace")[:_STATUS_MAX]
        return _HEADER.pack(called, success, iterations, len(text)) + text + values


class SolverProcess:
    """Calls a CasADi function in a child process, with a time limit per call.

    `source`: the function (saved for the child to an unlinked temporary file), or the
    cache file a compiled one is saved in, with `lock`, the cache's lock file."""

    def __init__(self, source: ca.Function | Path, lock: Path | None = None,
                 name: str = "solver") -> None:
        self.name = name
        self._fd: int | None = None
        if isinstance(source, Path):
            self._argv = [str(source), str(lock or "")]
        else:
            self._fd = _saved_unlinked(source)
            self._argv = [f"/proc/self/fd/{self._fd}", ""]
        self.shapes: list[tuple[int, int]] = []  # the inputs', as the child reports them
        self.out_shape = (0, 0)
        self.restarts = 0  # children ended after a call not answered in time, or dead
        self._children: list[_Child] = []  # the live one, for the finaliser to stop
        self._finalizer = weakref.finalize(self, _stop_all, self._children, self._fd)
        self._start()

    def await_ready(self) -> None:
        """Waits until the child has loaded the function (the first call waits otherwise);
        RuntimeError if it could not."""
        child = self._children[0]
        if not child.ready:
            child.await_ready()
            *self.shapes, self.out_shape = child.shapes

    @property
    def pid(self) -> int:
        return self._children[0].popen.pid

    def call(self, args: list[Any], timeout_s: float) -> Answer:
        """The function at `args` (one array per input, reshaped to the input's shape).
        SolverTimeout when not answered within `timeout_s` (the child is then killed and
        another started); RuntimeError when the call failed or its process died."""
        self.await_ready()
        request = pack_request(args, self.shapes)
        child = self._children[0]
        try:
            child.send(request)
            reply = child.receive(time.monotonic() + timeout_s)
        except SolverTimeout:
            self._restart(child)
            raise SolverTimeout(f"{self.name}: no answer in {timeout_s:.1f} s: process "
                                f"{child.popen.pid} killed, another started") from None
        except (OSError, EOFError) as exc:
            state = child.end_state()
            self._restart(child)
            raise RuntimeError(f"{self.name}: solver process {child.popen.pid} {state} "
                               f"({exc}): another started") from None
        called, success, iterations, length = _HEADER.unpack_from(reply)
        status = reply[_HEADER.size:_HEADER.size + length].decode("utf-8", "replace")
        if not called:
            raise RuntimeError(status)
        values = np.frombuffer(reply, np.float64, offset=_HEADER.size + length)
        return Answer(values.reshape(self.out_shape), success, iterations, status)

    def close(self) -> None:
        self._finalizer()  # once only: the descriptor's number may be reused after

    def _start(self) -> None:
        self._children[:] = [_Child(self._argv, self._fd)]

    def _restart(self, child: _Child) -> None:
        child.stop()
        self.restarts += 1
        self._start()


def pack_request(args: list[Any], shapes: list[tuple[int, int]]) -> bytes:
    """A call's request: each input's values, reshaped to its shape, row-major."""
    return b"".join(np.asarray(a, np.float64).reshape(shape).tobytes()
                    for a, shape in zip(args, shapes, strict=True))


def _saved_unlinked(function: ca.Function) -> int:
    """A descriptor of a file holding `function`, which no path names any more: nothing is
    left behind however this process ends."""
    handle, path = tempfile.mkstemp(prefix="fleetbus-solver-", suffix=".casadi")
    try:
        function.save(path)
        return os.open(path, os.O_RDONLY)
    finally:
        os.close(handle)
        os.unlink(path)


class _Child:
    def __init__(self, argv: list[str], fd: int | None) -> None:
        # -P: the script's directory (fleetbus/control) is not put on the import path.
        # stderr is inherited: the solver's own messages land in the node's log.
        self.popen = subprocess.Popen(
            [sys.executable, "-P", __file__, str(os.getpid()), *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
            pass_fds=() if fd is None else (fd,))
        self.ready = False
        self.failed = ""  # why it could not load the function
        self.shapes: list[tuple[int, int]] = []  # the inputs' and the output's

    def await_ready(self) -> None:
        """Waits for the child to have loaded the function; RuntimeError if it could not
        (said again at every later call: a broken solver file is not retried forever)."""
        if self.ready:
            return
        if self.failed:
            raise RuntimeError(self.failed)
        try:
            reply = self.receive(time.monotonic() + START_TIMEOUT_S)
        except SolverTimeout:
            reply = f"not loaded in {START_TIMEOUT_S:.0f} s".encode()
        except (OSError, EOFError):
            reply = f"{self.end_state()} while loading".encode()
        if not reply.startswith(b"ready"):
            self.failed = f"the solver process could not load the solver: " \
                          f"{reply.decode('utf-8', 'replace')}"
            raise RuntimeError(self.failed)
        self.shapes = [_SHAPE.unpack_from(reply, offset)
                       for offset in range(5, len(reply), _SHAPE.size)]
        self.ready = True

    def send(self, payload: bytes) -> None:
        _write_all(self.popen.stdin.fileno(), _frame(payload))

    def receive(self, deadline: float) -> bytes:
        fd = self.popen.stdout.fileno()
        (length,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))
        return _read_exact(fd, length, deadline)

    def end_state(self) -> str:
        """How it ended, once it closed its end of a pipe (its exit may take a moment)."""
        try:
            code = self.popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "stopped answering"
        return f"died ({signal.Signals(-code).name})" if code < 0 else f"exited ({code})"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout):
            stream.close()


@contextlib.contextmanager
def cache_lock(lock: Path | str) -> Iterator[None]:
    """Held while a cached function is built, loaded or its builder's copy destroyed: an
    exclusive lock on the file `lock` (released by the kernel if the process dies). "": no
    lock; nor when the file cannot be opened (an unwritable cache: each process on its
    own)."""
    handle = None
    if lock:
        try:
            Path(lock).parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a")  # noqa: SIM115 -- closed below, releasing the lock
        except OSError:
            handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _stop_all(children: list[_Child], fd: int | None) -> None:
    for child in children:
        child.stop()
    children.clear()
    if fd is not None:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    """n bytes from fd; SolverTimeout at the deadline, EOFError if the writer is gone.
    poll, not select: a process with many sockets has descriptors past select's 1024."""
    chunks, left = [], n
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise SolverTimeout
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("end of its output")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- the child ------------------------------------------------------------------------------

def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    return stream.read(length)


def _exit_with(parent: int) -> None:
    """Ends this process once its parent is gone (a parent killed with -9 never closes the
    pipe of a child stuck in a solve). A thread: CasADi releases the GIL while solving."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _serve(parent: int, source: str, lock: str) -> None:
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    # Answers go out on a copy of stdout; the solvers' own prints (C++ std::cout) are sent
    # to stderr, where they cannot corrupt a frame.
    out = os.dup(1)
    os.dup2(2, 1)
    try:
        with cache_lock(lock):
            server = SolverServer(ca.Function.load(source))
    except RuntimeError as exc:
        _write_all(out, _frame(f"error: {exc}".encode()))
        return
    f = server.function
    shapes = [*server.shapes, (f.size1_out(0), f.size2_out(0))]
    _write_all(out, _frame(b"ready" + b"".join(_SHAPE.pack(*shape) for shape in shapes)))
    requests = sys.stdin.buffer
    while (request := _read_frame(requests)) is not None:
        _write_all(out, _frame(server.answer(request)))


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
