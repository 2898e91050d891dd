"""Recording the bus into MCAP on real sockets: every topic (also ones that appear later)
with its schema, raw payloads that the official `mcap` reader returns byte for byte, the
run's metadata and status, numbered parts when split, drops counted and the file marked
incomplete, and snapshots of the last seconds saved on a breach event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from mcap.reader import make_reader

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.messages import ArrayMsg, Clock, Event, Header, Odometry, Pose, Vector3, schema_hash
from fleetbus.messages.codec import Codec
from fleetbus.recording import mcap_format as fmt
from fleetbus.recording.player import Player
from fleetbus.recording.recorder import Recorder
from fleetbus.recording.replay_check import replay_check
from fleetbus.recording.writer import McapSink
from tests.helpers import barrier, run_on, wait_until


def _odometry(k: int) -> Odometry:
    return Odometry(header=Header(stamp_ns=1000 + k, frame_id="map"),
                    pose=Pose(position=Vector3(x=float(k), y=-2.5, z=0.1 * k)))


def _read(path: Path) -> tuple[Any, list[tuple[Any, Any, Any]], dict[str, dict[str, str]]]:
    with path.open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        messages = list(reader.iter_messages(log_time_order=False))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    return summary, messages, metadata


def _publishers(bus: Any) -> Any:
    def setup(node: Any) -> None:
        node.odom = node.publisher("/car1/odometry", Odometry)
        node.array = node.publisher("/car1/grid", ArrayMsg)
        node.events = node.publisher("/events", Event)
    return bus.node("source", setup)


def _recording(bus: Any, src: Any, tmp_path: Path, **params: Any) -> Recorder:
    recorder = bus.start(Recorder("recorder", params={
        "output": str(tmp_path / "run.mcap"), "poll_s": 0.05,
        "metadata": {"graph": "launch/car_route.yaml", "seed": "7"}, **params}))
    pubs = [src.odom, src.array, src.events]
    wait_until(lambda: all(p.subscribers for p in pubs), what="the recorder's subscriptions")
    return recorder


def _stop(recorder: Recorder) -> None:
    recorder.stop()
    assert recorder.stopped.wait(10)


def test_every_topic_is_recorded_raw_with_its_schema_and_the_run_s_metadata(bus, tmp_path):
    src = _publishers(bus)
    recorder = _recording(bus, src, tmp_path)
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    odoms = [_odometry(k) for k in range(50)]

    def publish() -> None:
        for msg in odoms:
            src.odom.publish(msg)
        src.array.publish(ArrayMsg(header=Header(stamp_ns=5), data=grid))
    run_on(src, publish)
    # a topic that appears after the recorder started is found and recorded too
    late = bus.node("late", lambda n: setattr(n, "pub", n.publisher("/late", Event)))
    wait_until(lambda: late.pub.subscribers, what="the late topic found")
    run_on(late, lambda: late.pub.publish(Event(kind="late", message="hello")))
    wait_until(lambda: recorder.subs.get("/late") and recorder.subs["/late"].stats.messages,
               what="the late message recorded")
    wait_until(lambda: recorder.sink.messages >= 52, what="all messages recorded")
    _stop(recorder)

    summary, messages, metadata = _read(tmp_path / "run.mcap")
    by_topic: dict[str, list] = {}
    for schema, channel, message in messages:
        by_topic.setdefault(channel.topic, []).append((schema, channel, message))
    assert len(by_topic["/car1/odometry"]) == 50 and len(by_topic["/late"]) == 1
    schema, channel, _ = by_topic["/car1/odometry"][0]
    assert schema.name == "fleetbus/Odometry" and schema.encoding == "jsonschema"
    assert "pose" in json.loads(schema.data)["properties"]  # the type at the top
    assert channel.message_encoding == "msgpack"
    assert channel.metadata["type_name"] == "fleetbus/Odometry"
    assert channel.metadata["publisher"] and channel.metadata["node"] == "/source"
    codec = Codec(Odometry)
    for (_, _, message), sent in zip(by_topic["/car1/odometry"], odoms, strict=True):
        assert message.data == codec.encode(sent)[0]  # the publisher's bytes, exactly
        assert message.publish_time == sent.header.stamp_ns
    assert [m.sequence for _, _, m in by_topic["/car1/odometry"]] == list(range(1, 51))
    # an array message keeps its raw buffer
    _, channel, message = by_topic["/car1/grid"][0]
    assert channel.message_encoding == fmt.FRAMES
    payload, buffers = fmt.unpack(channel.message_encoding, message.data)
    assert np.array_equal(Codec(ArrayMsg).decode(payload, buffers).data, grid)
    # a plain MessagePack reader decodes the standard messages without fleetbus
    plain = msgpack.unpackb(by_topic["/car1/odometry"][3][2].data)
    assert plain["pose"]["position"]["x"] == 3.0
    assert summary.statistics.message_count == 52
    assert metadata[fmt.RUN_METADATA]["seed"] == "7"
    assert metadata[fmt.RUN_METADATA]["graph"] == "launch/car_route.yaml"
    status = metadata[fmt.STATUS_METADATA]
    assert status["complete"] == "true" and status["dropped"] == "0"


def test_a_recorder_that_falls_behind_counts_the_drops_and_marks_the_file(bus, tmp_path):
    src = _publishers(bus)
    recorder = _recording(bus, src, tmp_path, depth=10)
    run_on(src, lambda: src.odom.publish(_odometry(0)))
    wait_until(lambda: recorder.sink.messages == 1, what="the first message")
    # the recorder's loop is busy while 5000 messages arrive: its queues overflow
    recorder.call_soon_threadsafe(lambda: time.sleep(1.0))
    run_on(src, lambda: [src.odom.publish(_odometry(k)) for k in range(1, 5001)])
    sent = [5001]
    sub = recorder.subs["/car1/odometry"]

    def caught_up() -> bool:  # awake again, it has recorded the newest message
        run_on(src, lambda: src.odom.publish(_odometry(sent[0])))
        sent[0] += 1
        barrier(recorder)
        return sub.last_header is not None and sub.last_header.seq == sent[0]

    wait_until(caught_up, what="the recorder caught up")
    _stop(recorder)
    _, messages, metadata = _read(tmp_path / "run.mcap")
    status = metadata[fmt.STATUS_METADATA]
    assert status["complete"] == "false"
    dropped = int(status["dropped"])
    assert dropped > 0 and dropped + len(messages) == sent[0]
    assert json.loads(status["dropped_by_topic"]) == {"/car1/odometry": dropped}


def test_a_split_recording_is_numbered_whole_files(bus, tmp_path):
    src = _publishers(bus)
    recorder = _recording(bus, src, tmp_path, split_mb=0.02)
    run_on(src, lambda: [src.odom.publish(_odometry(k)) for k in range(2000)])
    wait_until(lambda: recorder.sink.messages == 2000, what="all recorded")
    _stop(recorder)
    parts = sorted(tmp_path.glob("run_*.mcap"))
    assert len(parts) >= 2 and not (tmp_path / "run.mcap").exists()
    seqs = []
    for part in parts:
        _, messages, metadata = _read(part)
        seqs += [m.sequence for _, _, m in messages]
        assert messages[0][0].name == "fleetbus/Odometry"  # each part has its schema
        assert metadata[fmt.RUN_METADATA]["seed"] == "7"
    assert seqs == list(range(1, 2001))


def test_snapshot_mode_saves_the_last_seconds_on_a_breach_event(bus, tmp_path):
    src = _publishers(bus)
    recorder = _recording(bus, src, tmp_path, snapshot_s=1.0)
    run_on(src, lambda: src.odom.publish(_odometry(0)))  # older than the window by then
    wait_until(lambda: recorder.ring, what="the first message kept")
    time.sleep(1.2)  # the bus clock is wall time here: let the first one age out
    run_on(src, lambda: [src.odom.publish(_odometry(k)) for k in range(1, 11)])
    wait_until(lambda: len(recorder.ring) >= 10, what="ten kept")
    run_on(src, lambda: src.events.publish(Event(source="/car1/guard", kind="breach",
                                                 message="car1 left 'road'")))
    wait_until(lambda: recorder.snapshots, what="a snapshot")
    _stop(recorder)
    assert not (tmp_path / "run.mcap").exists()  # nothing but snapshots in this mode
    _, messages, metadata = _read(recorder.snapshots[0])
    odoms = [m for _, c, m in messages if c.topic == "/car1/odometry"]
    assert [m.sequence for m in odoms] == list(range(2, 12))
    assert "breach from /car1/guard" in metadata[fmt.RUN_METADATA]["snapshot_reason"]


def _write_recording(path: Path, steps: int = 20) -> list[Odometry]:
    """A lockstep-like recording: each step's odometry, an event now and then, then the
    step's /clock, all logged at the previous step's time (as a recorder on sim time)."""
    sink = McapSink(path, {"seed": "3"})
    sink.latched.add("/clock")
    odom, event, clock = Codec(Odometry), Codec(Event), Codec(Clock)
    sent = []
    for k in range(1, steps + 1):
        log_ns, stamp = (k - 1) * 100_000_000, k * 100_000_000
        msg = _odometry(k)
        msg.header.stamp_ns = stamp
        sent.append(msg)
        sink.write("/car1/odometry", "fleetbus/Odometry", schema_hash(Odometry), "sim-1", k,
                   log_ns, stamp, odom.encode(msg)[0])
        if k % 5 == 0:
            sink.write("/events", "fleetbus/Event", schema_hash(Event), "sim-1", k // 5,
                       log_ns, stamp, event.encode(Event(kind="tick"))[0])
        sink.write("/clock", "fleetbus/Clock", schema_hash(Clock), "sim-1", k, log_ns, stamp,
                   clock.encode(Clock(stamp_ns=stamp))[0])
    sink.write("/x/unknown", "somepkg/Unknown", 1234, "sim-1", 1, steps * 100_000_000, 0,
               b"\x80")
    sink.close({"complete": True})
    return sent


def test_a_recording_plays_back_byte_for_byte_and_drives_sim_time(bus, tmp_path):
    path = tmp_path / "rec.mcap"
    sent = _write_recording(path)
    got: list[tuple[bytes, int, int]] = []
    events: list[Any] = []

    def setup(node: Any) -> None:
        node.subscribe("/replay/odometry", None,
                       lambda m: got.append((m.payload, m.header.source_stamp_ns,
                                             node.now_ns())))
        node.subscribe("/events", Event, events.append)
    listener = bus.node("listener", setup, config=BusConfig.from_env(clock="sim"))
    player = bus.start(Player("player", params={
        "files": [str(path)], "rate": 0.0, "delay_s": 0.0, "start_paused": True,
        "exclude": ["/events"]}, remap={"/car1/odometry": "/replay/odometry"},
        config=BusConfig.from_env(clock="wall")))
    wait_until(lambda: player.pubs[("/car1/odometry", "fleetbus/Odometry")].subscribers
               and player.clock_pub.subscribers, what="the listener's links")
    player.resume()
    assert player.finished.wait(10)
    wait_until(lambda: len(got) == len(sent), what="every message")
    codec = Codec(Odometry)
    for (payload, stamp, now), msg in zip(got, sent, strict=True):
        assert payload == codec.encode(msg)[0] and stamp == msg.header.stamp_ns
        # delivered as live: after the previous step's clock, before its own
        assert now == msg.header.stamp_ns - 100_000_000
    wait_until(lambda: listener.now_ns() == 2_000_000_000, what="the last /clock")
    assert not events  # excluded
    assert "cannot be imported" in player.skipped["/x/unknown"]
    assert player.played == len(sent)


def _listen_on_sim_time(bus: Any, topic: str) -> tuple[Any, list[tuple[int, int]]]:
    """A sim-time node collecting (frame stamp, message stamp) of each `topic` message."""
    got: list[tuple[int, int]] = []
    codec = Codec(Odometry)

    def setup(node: Any) -> None:
        node.subscribe(topic, None, lambda m: got.append(
            (m.header.source_stamp_ns, codec.decode(m.payload).header.stamp_ns)))
    return bus.node("listener", setup, config=BusConfig.from_env(clock="sim")), got


def test_a_loop_goes_on_in_time_so_sim_time_nodes_keep_running(bus, tmp_path):
    path = tmp_path / "rec.mcap"
    sent = _write_recording(path)
    listener, got = _listen_on_sim_time(bus, "/car1/odometry")
    player = bus.start(Player("player", params={
        "files": [str(path)], "rate": 0.0, "delay_s": 0.0, "start_paused": True,
        "loop": True}, config=BusConfig.from_env(clock="wall")))
    wait_until(lambda: player.pubs[("/car1/odometry", "fleetbus/Odometry")].subscribers
               and player.clock_pub.subscribers, what="the listener's links")
    player.resume()
    wait_until(lambda: len(got) >= 3 * len(sent), what="three rounds")
    player.stop()
    # a round lasts 0.1..2.0 s of /clock; the next starts one step (0.1 s) after its end
    first = [msg.header.stamp_ns for msg in sent]
    for round_ in range(3):
        shift = round_ * 2_000_000_000
        assert got[round_ * 20:(round_ + 1) * 20] == [(t + shift, t + shift) for t in first]
    assert listener.now_ns() >= 5_900_000_000
    assert not listener.counters.get("clock_backwards")


def test_replace_plays_everything_but_what_the_replaced_node_published(bus, tmp_path):
    path = tmp_path / "two.mcap"
    sink = McapSink(path)
    sink.node_names.update({"sim-1": "/sim", "fusion-1": "/car1/fusion"})
    odom = Codec(Odometry)
    for k in range(1, 6):
        for publisher in ("sim-1", "fusion-1"):
            msg = _odometry(k if publisher == "sim-1" else 100 + k)
            sink.write("/car1/odometry", "fleetbus/Odometry", schema_hash(Odometry), publisher,
                       k, k * 1000, k * 1000, odom.encode(msg)[0])
    sink.close({"complete": True})
    listener, got = _listen_on_sim_time(bus, "/car1/odometry")
    player = bus.start(Player("player", params={
        "files": [str(path)], "rate": 0.0, "delay_s": 0.0, "start_paused": True,
        "replace": ["/car1/fusion"]}, config=BusConfig.from_env(clock="wall")))
    wait_until(lambda: player.pubs[("/car1/odometry", "fleetbus/Odometry")].subscribers,
               what="the listener's link")
    player.resume()
    assert player.finished.wait(10)
    wait_until(lambda: listener.now_ns() == 5000, what="the last /clock")
    assert [stamp for _, stamp in got] == [1000 + k for k in range(1, 6)]
    assert player.skipped["/car1/odometry"] == "published by /car1/fusion, which is replaced"
    bad = Player("bad", params={"files": [str(path)], "replace": ["/car2/fusion"]})
    bus.start(bad, check=False)
    assert "/car2/fusion" in str(bad.setup_error)


class Doubler(fleetbus.Node):
    """Doubles each input's x (times `gain`), and says the time on a 0.25 s timer."""

    def setup(self) -> None:
        self.gain = float(self.param("gain", 2.0).value)
        self.out = self.publisher("/out", Odometry)
        self.ticks = self.publisher("/ticks", Event)
        self.subscribe("/in", Odometry, self._on)
        self.timer(0.25, lambda: self.ticks.publish(Event(
            header=Header(stamp_ns=self.now_ns()), kind="tick", message=str(self.now_ns()))))

    def _on(self, msg: Odometry) -> None:
        msg.pose.position.x *= self.gain
        msg.header.stamp_ns = self.now_ns()
        self.out.publish(msg)


def test_replay_check_passes_the_same_node_and_names_a_changed_field(bus, tmp_path):
    """Live on sim time, a driver publishes inputs then /clock each 0.1 s while a recorder
    records; replayed in lockstep, the same node gives the same outputs (its timer's
    too), and one with another gain differs in pose.position.x only."""
    sim = BusConfig.from_env(clock="sim")

    def driver_setup(node: Any) -> None:
        node.inp = node.publisher("/in", Odometry)
        node.clk = node.publisher("/clock", Clock, latched=True)
    driver = bus.node("driver", driver_setup)
    live = bus.start(Doubler("doubler", config=sim))
    recorder = bus.start(Recorder("recorder", params={
        "output": str(tmp_path / "live.mcap"), "poll_s": 0.05}, config=sim))
    wait_until(lambda: driver.inp.subscribers >= 2 and driver.clk.subscribers >= 2
               and {"/in", "/out", "/ticks", "/clock"} <= set(recorder.subs)
               and all(s.info().publishers for s in recorder.subs.values()),
               what="everyone linked")
    for k in range(1, 21):
        stamp = k * 100_000_000
        run_on(driver, lambda k=k, stamp=stamp: (driver.inp.publish(_odometry(k)),
                                                   driver.clk.publish(Clock(stamp_ns=stamp))))
        wait_until(lambda stamp=stamp: live.now_ns() == stamp, what=f"live at {stamp}")
        barrier(live)
    wait_until(lambda: recorder.subs["/out"].stats.messages == 20
               and recorder.subs["/ticks"].stats.messages == 8, what="the outputs recorded")
    _stop(recorder)
    live.stop()

    files = [tmp_path / "live.mcap"]
    same = replay_check(files, lambda config: Doubler("doubler", config=config))
    assert same.ok, same
    assert same.compared == {"/out": 20, "/ticks": 8}
    changed = replay_check(files, lambda config: Doubler("doubler", params={"gain": 2.5},
                                                         config=config))
    assert not changed.ok
    assert {d.path for d in changed.differences} == {"pose.position.x"}
    assert {d.topic for d in changed.differences} == {"/out"}
    first = changed.differences[0]
    assert (first.recorded, first.replayed) == (2.0, 2.5)


def test_export_makes_a_recording_foxglove_readable(tmp_path):
    """JSON channels with their JSON Schema (the values as recorded), each vehicle's
    LocationFix once the fence's origin is known, the fence as GeoJSON, the run's
    metadata; the official reader reads it all."""
    from fleetbus.monitoring.foxglove_export import export_foxglove
    from fleetbus.nodes.conversions import fence_to_msg
    from fleetbus.planners import Geofence, Zone

    path = tmp_path / "rec.mcap"
    fence = fence_to_msg(Geofence([Zone.polygon("yard", [(-50, -50), (50, -50), (50, 50),
                                                         (-50, 50)])], (59.9, 10.7, 0.0)))
    sink = McapSink(path, {"seed": "3"})
    sink.latched.add("/geofence")
    sink.write("/geofence", "fleetbus/Geofence", schema_hash(type(fence)), "geo-1", 1, 0, 0,
               Codec(type(fence)).encode(fence)[0])
    for k in range(1, 6):
        sink.write("/car1/odometry", "fleetbus/Odometry", schema_hash(Odometry), "f-1", k,
                   k * 100_000_000, k, Codec(Odometry).encode(_odometry(k))[0])
    sink.write("/car1/odometry", "fleetbus/Odometry", schema_hash(Odometry), "f-1", 6,
               600_000_000, 6, b"\xc1")  # garbage: skipped and counted
    sink.close({"complete": True})
    out = tmp_path / "view.mcap"
    result = export_foxglove([path], out)
    assert result.problems == {"rejected_frame": 1} and "/car1/odometry" in (
        result.first_problem)

    with out.open("rb") as f:
        reader = make_reader(f)
        got: dict[str, list] = {}
        for schema, channel, message in reader.iter_messages():
            got.setdefault(channel.topic, []).append((schema, channel, message))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    schema, channel, _ = got["/car1/odometry"][0]
    assert (channel.message_encoding, schema.encoding) == ("json", "jsonschema")
    assert [json.loads(m.data)["pose"]["position"]["x"] for _, _, m in
            got["/car1/odometry"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert got["/car1/location"][0][0].name == "foxglove.LocationFix"
    assert len(got["/car1/location"]) == 5
    assert got["/geofence/geojson"][0][0].name == "foxglove.GeoJSON"
    assert metadata[fmt.RUN_METADATA]["seed"] == "3"
