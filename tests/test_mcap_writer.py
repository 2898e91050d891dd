"""The recorder's MCAP writer, checked with the official `mcap` reader: records, CRCs,
message and chunk indexes, statistics and metadata as the spec has them."""

from __future__ import annotations

import io

import pytest
from mcap.reader import make_reader
from mcap.records import Message
from mcap.stream_reader import StreamReader

from fleetbus.recording.mcap_writer import McapWriter


def _write(messages: int, chunk_bytes: int = 4096) -> bytes:
    out = io.BytesIO()
    writer = McapWriter(out, chunk_bytes)
    writer.start("fleetbus", "test")
    writer.add_metadata("run", {"seed": "7"})
    schema = writer.register_schema("fleetbus/Odometry", "jsonschema", b'{"type": "object"}')
    odom = writer.register_channel("/odom", "msgpack", schema, {"node": "fusion"})
    raw = writer.register_channel("/raw", "fleetbus-frames", 0, {})
    for k in range(messages):
        # log times not in order across channels, as a recorder sees them
        log = 1_000 + k * 10 - (5 if k % 2 else 0)
        writer.add_message(odom if k % 3 else raw, log, b"payload-%d" % k * (1 + k % 7),
                           publish_time=log - 3, sequence=k + 1)
    writer.add_metadata("status", {"complete": "true"})
    writer.finish()
    return out.getvalue()


def test_every_message_reads_back_with_its_times_sequence_and_channel():
    data = _write(5_000)
    reader = make_reader(io.BytesIO(data), validate_crcs=True)
    got = [(c.topic, m.log_time, m.publish_time, m.sequence, m.data)
           for _, c, m in reader.iter_messages(log_time_order=False)]
    assert len(got) == 5_000
    by_seq = {seq: (topic, log, pub, payload) for topic, log, pub, seq, payload in got}
    for k in range(5_000):
        log = 1_000 + k * 10 - (5 if k % 2 else 0)
        assert by_seq[k + 1] == ("/odom" if k % 3 else "/raw", log, log - 3,
                                 b"payload-%d" % k * (1 + k % 7))


def test_the_summary_has_statistics_schemas_channels_and_chunk_indexes():
    data = _write(5_000)
    summary = make_reader(io.BytesIO(data)).get_summary()
    stats = summary.statistics
    assert stats.message_count == 5_000
    assert stats.chunk_count == len(summary.chunk_indexes) > 10
    assert (stats.message_start_time, stats.message_end_time) == (1_000, 1_000 + 4_999 * 10
                                                                   - 5)
    assert sum(stats.channel_message_counts.values()) == 5_000
    assert {c.topic: c.metadata for c in summary.channels.values()} == {
        "/odom": {"node": "fusion"}, "/raw": {}}
    assert [s.name for s in summary.schemas.values()] == ["fleetbus/Odometry"]
    assert all(ix.compression == "zstd" for ix in summary.chunk_indexes)


def test_indexed_reads_by_time_and_topic_find_exactly_the_matching_messages():
    data = _write(5_000)
    reader = make_reader(io.BytesIO(data))
    got = [m.log_time for _, _, m in reader.iter_messages(topics=["/raw"], starting_at=20_000,
                                                          ending_before=30_000)]
    want = sorted(t for k in range(5_000) if not k % 3
                  and 20_000 <= (t := 1_000 + k * 10 - (5 if k % 2 else 0)) < 30_000)
    assert got == want


def test_a_streaming_reader_checks_every_chunk_crc_and_finds_every_message():
    records = list(StreamReader(io.BytesIO(_write(2_000)), validate_crcs=True).records)
    assert sum(isinstance(r, Message) for r in records) == 2_000


def test_metadata_records_are_indexed_in_order():
    reader = make_reader(io.BytesIO(_write(100)))
    assert [(m.name, m.metadata) for m in reader.iter_metadata()] == [
        ("run", {"seed": "7"}), ("status", {"complete": "true"})]


@pytest.mark.parametrize("messages", [0, 1])
def test_an_empty_or_tiny_file_is_still_valid(messages):
    data = _write(messages)
    reader = make_reader(io.BytesIO(data), validate_crcs=True)
    assert sum(1 for _ in reader.iter_messages()) == messages
    assert reader.get_summary().statistics.message_count == messages
