"""Recording throughput: Odometry messages per second into MCAP without a drop.

    python -m benchmarks.recording_throughput [--rates 25000 50000 75000] [--seconds 3]

A publisher process sends Odometry at a paced rate; the recorder, in this process, writes
them into a zstd MCAP file. Side by side, the floor: a raw pyzmq SUB socket whose frames
go straight into the `mcap` writer, no fleetbus in between. For each rate: what arrived,
what was lost (the publisher's sequence numbers), the achieved rate and the CPU the
recording side used; the ratio fleetbus / floor of CPU per message.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import zmq
from mcap.writer import CompressionType, Writer
from rich.console import Console
from rich.table import Table

from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node
from fleetbus.bus.runner import start
from fleetbus.bus.wire import HEADER_DECODER
from fleetbus.messages import Header, Odometry, Pose, Vector3
from fleetbus.recording.recorder import Recorder

TOPIC = "/bench/odometry"
BATCH = 250  # messages sent between pacing checks


def _paced(send, rate: float, seconds: float) -> int:
    """Call send(k) `rate` times a second for `seconds`; returns how many were sent."""
    total = int(rate * seconds)
    began = time.perf_counter()
    for k in range(total):
        send(k)
        if k % BATCH == BATCH - 1:
            ahead = began + (k + 1) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    return total


def _odometry(k: int) -> Odometry:
    return Odometry(header=Header(stamp_ns=k + 1, frame_id="map"),
                    pose=Pose(position=Vector3(x=k * 0.01, y=-2.0, z=1.0)))


def _fleetbus_publisher(run_dir: str, rate: float, seconds: float, go, done) -> None:
    os.environ["FLEETBUS_RUN_DIR"] = run_dir

    class Source(Node):
        def setup(self) -> None:
            self.pub = self.publisher(TOPIC, Odometry, depth=100_000)

    node = Source("bench_source")
    with start(node):
        go.wait()
        msgs = [_odometry(k) for k in range(1000)]
        # on the node's own thread (a node's sockets are its thread's), blocking its loop
        # for the run: nothing else happens in this process
        done.put(node.call_soon_threadsafe(lambda: _paced(
            lambda k: node.pub.publish(msgs[k % 1000]), rate, seconds)).result())
        time.sleep(1.0)


def run_fleetbus(rate: float, seconds: float) -> dict[str, float]:
    run_dir = tempfile.mkdtemp(prefix="fb-bench-", dir="/tmp")
    os.environ["FLEETBUS_RUN_DIR"] = run_dir
    out = Path(run_dir) / "rec.mcap"
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_fleetbus_publisher, args=(run_dir, rate, seconds, go, done))
    recorder = Recorder("bench_recorder", params={"output": str(out), "topics": [TOPIC],
                                                  "poll_s": 0.05, "depth": 100_000},
                        config=BusConfig.from_env())
    with start(recorder):
        proc.start()
        while TOPIC not in recorder.subs or not recorder.subs[TOPIC].publishers:
            time.sleep(0.05)
        time.sleep(0.3)
        cpu0, t0 = time.process_time(), time.perf_counter()
        go.set()
        sent = done.get(timeout=seconds * 10 + 30)
        sub = recorder.subs[TOPIC]
        # until all arrived, or nothing did for a second (lost at the tail: uncounted)
        last_n, last_t = -1, time.perf_counter()
        while sub.stats.messages + sub.gaps < sent and time.perf_counter() - last_t < 1.0:
            if sub.stats.messages != last_n:
                last_n, last_t = sub.stats.messages, time.perf_counter()
            time.sleep(0.01)
        wall = (time.perf_counter() if sub.stats.messages + sub.gaps >= sent else last_t) - t0
        cpu = time.process_time() - cpu0
    proc.join(10)
    got = recorder.sink.messages
    return {"sent": sent, "recorded": got, "dropped": sent - got, "rate": got / wall,
            "cpu_us": cpu / max(got, 1) * 1e6}


def _raw_publisher(url: str, rate: float, seconds: float, go, done) -> None:
    from fleetbus.bus.wire import HEADER_ENCODER, FrameHeader, topic_frame
    from fleetbus.messages.codec import Codec

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.bind(url)
    codec, frame = Codec(Odometry), topic_frame(TOPIC)
    payloads = [codec.encode(_odometry(k))[0] for k in range(1000)]
    go.wait()

    def send(k: int) -> None:
        header = HEADER_ENCODER.encode(FrameHeader("fleetbus/Odometry", 0, "raw", k + 1,
                                                   k + 1, time.time_ns()))
        sock.send_multipart([frame, header, payloads[k % 1000]])
    done.put(_paced(send, rate, seconds))
    time.sleep(1.0)
    sock.close(linger=0)


def run_floor(rate: float, seconds: float) -> dict[str, float]:
    run_dir = tempfile.mkdtemp(prefix="fb-bench-", dir="/tmp")
    url = f"ipc://{run_dir}/raw"
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_raw_publisher, args=(url, rate, seconds, go, done))
    proc.start()
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    time.sleep(1.0)
    with (Path(run_dir) / "raw.mcap").open("wb") as f:
        writer = Writer(f, compression=CompressionType.ZSTD)
        writer.start("bench", "raw")
        channel = writer.register_channel(TOPIC, "msgpack", 0)
        cpu0, t0 = time.process_time(), time.perf_counter()
        go.set()
        got, last, lost, sent = 0, 0, 0, None
        while True:
            if sock.poll(200):
                _, header, payload = sock.recv_multipart(copy=True)
                h = HEADER_DECODER.decode(header)
                lost += h.seq - last - 1
                last = h.seq
                writer.add_message(channel, time.time_ns(), payload, h.source_stamp_ns,
                                   h.seq)
                got += 1
            elif sent is None and not done.empty():
                sent = done.get()
            if (sent is not None and got + lost >= sent) or (
                    sent is not None and not sock.poll(500)):
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        writer.finish()
    proc.join(10)
    return {"sent": sent, "recorded": got, "dropped": sent - got, "rate": got / wall,
            "cpu_us": cpu / max(got, 1) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[25_000, 50_000, 75_000])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    table = Table(title="Recording Odometry into MCAP (zstd)")
    for column in ("offered msg/s", "recorder", "recorded", "dropped", "msg/s",
                   "CPU us/msg", "x floor"):
        table.add_column(column, justify="right")
    for rate in args.rates:
        floor = run_floor(rate, args.seconds)
        ours = run_fleetbus(rate, args.seconds)
        for name, r in (("raw pyzmq + mcap", floor), ("fleetbus record", ours)):
            table.add_row(f"{rate:,.0f}", name, f"{r['recorded']:,}", f"{r['dropped']:,}",
                          f"{r['rate']:,.0f}", f"{r['cpu_us']:.1f}",
                          f"{r['cpu_us'] / floor['cpu_us']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
