"""An MCAP writer for the recorder's hot path: zstd chunks, message indexes, chunk and
metadata indexes, statistics and a summary, as the official `mcap` writer produces them.

Why not `mcap.writer.Writer`: it builds each message record field by field through a
BytesIO and compresses each chunk on the calling thread, about 10 us per Odometry message,
which alone caps a recorder below 100 k msg/s of CPU and below 50 k msg/s next to the
publishers on a small machine. Here a message record is one struct pack appended to a
bytearray, and a full chunk is compressed on a worker thread (zstandard releases the GIL)
while the next one fills. Every other record is serialized by the `mcap` package's own
record classes, and the official reader checks the result in the tests.
"""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import zstandard
from mcap.data_stream import RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (
    Channel,
    Chunk,
    ChunkIndex,
    DataEnd,
    Footer,
    Header,
    McapRecord,
    MessageIndex,
    Metadata,
    MetadataIndex,
    Schema,
    Statistics,
    SummaryOffset,
)
from mcap.writer import MCAP0_MAGIC

# opcode, record length, channel id, sequence, log time, publish time (MCAP spec, Message)
_MESSAGE = struct.Struct("<BQHIQQ")
_MESSAGE_FIELDS = _MESSAGE.size - 9  # the record length counts what follows opcode+length
_PENDING_CHUNKS = 4  # compressed chunks in flight before add_message waits: bounds memory


def _compress(data: bytes) -> tuple[bytes, int]:
    return zstandard.compress(data), zlib.crc32(data)


class _OpenChunk:
    """The chunk being filled: its records, time range and message index."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.start = self.end = -1
        self.index: dict[int, list[tuple[int, int]]] = {}


class _SealedChunk:
    def __init__(self, chunk: _OpenChunk, compressed: Future[tuple[bytes, int]]) -> None:
        self.start, self.end, self.index = chunk.start, chunk.end, chunk.index
        self.size = len(chunk.data)
        self.compressed = compressed


class McapWriter:
    """Writes one MCAP file to `stream` (binary, seekable not needed). Not thread-safe:
    call it from one thread; it owns one compression thread until finish()."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int = 1 << 20) -> None:
        self._stream = stream
        self._offset = 0  # bytes written: the stream's position without asking it
        self._chunk_bytes = chunk_bytes
        self._chunk = _OpenChunk()
        self._sealed: deque[_SealedChunk] = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mcap-zstd")
        self._schemas: list[Schema] = []
        self._channels: list[Channel] = []
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._counts: defaultdict[int, int] = defaultdict(int)
        self._metadata_count = 0
        self._start = self._end = -1

    def start(self, profile: str, library: str) -> None:
        self._write(MCAP0_MAGIC)
        self._write(self._serialize(Header(profile=profile, library=library)))

    def tell(self) -> int:
        """The file's size so far, counting chunks still compressing at their full size
        (an upper bound, so that a split by size never overshoots by more than a chunk)."""
        return self._offset + sum(sealed.size for sealed in self._sealed)

    def register_schema(self, name: str, encoding: str, data: bytes) -> int:
        schema = Schema(id=len(self._schemas) + 1, name=name, encoding=encoding, data=data)
        self._schemas.append(schema)
        self._chunk.data += self._serialize(schema)
        return schema.id

    def register_channel(self, topic: str, message_encoding: str, schema_id: int,
                         metadata: dict[str, str]) -> int:
        channel = Channel(id=len(self._channels) + 1, topic=topic,
                          message_encoding=message_encoding, schema_id=schema_id,
                          metadata=metadata)
        self._channels.append(channel)
        self._chunk.data += self._serialize(channel)
        return channel.id

    def add_message(self, channel_id: int, log_time: int, data: bytes, publish_time: int,
                    sequence: int = 0) -> None:
        chunk = self._chunk
        records = chunk.index.get(channel_id)
        if records is None:
            records = chunk.index[channel_id] = []
        records.append((log_time, len(chunk.data)))
        chunk.data += _MESSAGE.pack(Opcode.MESSAGE, _MESSAGE_FIELDS + len(data), channel_id,
                                    sequence, log_time, publish_time)
        chunk.data += data
        if chunk.start < 0 or log_time < chunk.start:
            chunk.start = log_time
        if log_time > chunk.end:
            chunk.end = log_time
        self._counts[channel_id] += 1
        if len(chunk.data) >= self._chunk_bytes:
            self._seal_chunk()

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self._seal_chunk()
        self._write_sealed(keep=0)
        record = self._serialize(Metadata(name=name, metadata=data))
        self._metadata_indexes.append(MetadataIndex(offset=self._offset, length=len(record),
                                                    name=name))
        self._metadata_count += 1
        self._write(record)

    def finish(self) -> None:
        """Write what is pending, the summary and the footer. Does not close the stream."""
        self._seal_chunk()
        self._write_sealed(keep=0)
        self._pool.shutdown()
        self._write(self._serialize(DataEnd(data_section_crc=0)))
        summary_start = self._offset
        summary, offsets = RecordBuilder(), []
        groups = ((Opcode.SCHEMA, self._schemas), (Opcode.CHANNEL, self._channels),
                  (Opcode.STATISTICS, [self._statistics()]),
                  (Opcode.CHUNK_INDEX, self._chunk_indexes),
                  (Opcode.METADATA_INDEX, self._metadata_indexes))
        for opcode, records in groups:
            if not records:
                continue
            group_start = summary.count
            for record in records:
                record.write(summary)
            offsets.append(SummaryOffset(group_opcode=opcode,
                                         group_start=summary_start + group_start,
                                         group_length=summary.count - group_start))
        offsets_start = summary_start + summary.count
        for offset in offsets:
            offset.write(summary)
        summary_data = summary.end()
        # The summary CRC covers the summary and the footer up to its CRC field.
        footer_head = struct.pack("<BQQQ", Opcode.FOOTER, 20, summary_start, offsets_start)
        crc = zlib.crc32(footer_head, zlib.crc32(summary_data))
        self._write(summary_data)
        self._write(self._serialize(Footer(summary_start=summary_start,
                                           summary_offset_start=offsets_start,
                                           summary_crc=crc)))
        self._write(MCAP0_MAGIC)

    # -- internals ----------------------------------------------------------------------

    def _statistics(self) -> Statistics:
        return Statistics(
            message_count=sum(self._counts.values()), schema_count=len(self._schemas),
            channel_count=len(self._channels), attachment_count=0,
            metadata_count=self._metadata_count, chunk_count=len(self._chunk_indexes),
            message_start_time=max(self._start, 0), message_end_time=max(self._end, 0),
            channel_message_counts=dict(self._counts))

    def _seal_chunk(self) -> None:
        chunk = self._chunk
        if not chunk.index:  # schemas and channels alone wait for the first message
            return
        self._chunk = _OpenChunk()
        self._sealed.append(_SealedChunk(chunk, self._pool.submit(_compress,
                                                                  bytes(chunk.data))))
        self._write_sealed(keep=_PENDING_CHUNKS)

    def _write_sealed(self, keep: int) -> None:
        """Write the compressed chunks in order, each with its message indexes: those
        already compressed, and beyond that, waiting, all but `keep`."""
        while self._sealed and (len(self._sealed) > keep or self._sealed[0].compressed.done()):
            sealed = self._sealed.popleft()
            compressed, crc = sealed.compressed.result()
            chunk = self._serialize(Chunk(
                compression="zstd", data=compressed, message_start_time=sealed.start,
                message_end_time=sealed.end, uncompressed_crc=crc,
                uncompressed_size=sealed.size))
            chunk_start = self._offset
            self._write(chunk)
            index_builder, index_offsets = RecordBuilder(), {}
            for channel_id, records in sealed.index.items():
                index_offsets[channel_id] = self._offset + index_builder.count
                MessageIndex(channel_id=channel_id, records=records).write(index_builder)
            indexes = index_builder.end()
            self._write(indexes)
            self._chunk_indexes.append(ChunkIndex(
                message_start_time=sealed.start, message_end_time=sealed.end,
                chunk_start_offset=chunk_start, chunk_length=len(chunk),
                message_index_offsets=index_offsets, message_index_length=len(indexes),
                compression="zstd", compressed_size=len(compressed),
                uncompressed_size=sealed.size))
            if self._start < 0 or sealed.start < self._start:
                self._start = sealed.start
            self._end = max(self._end, sealed.end)

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._offset += len(data)

    @staticmethod
    def _serialize(record: McapRecord) -> bytes:
        builder = RecordBuilder()
        record.write(builder)
        return builder.end()
