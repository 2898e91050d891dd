"""Writes bus frames into MCAP files: zstd chunks, index and summary, a schema per type,
a channel per topic and publisher, the run's metadata up front and the recording's
status (complete or not, and what was lost) at the end. Splits into numbered files by
size or duration; every part is a whole MCAP file with its own schemas and channels."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fleetbus
from fleetbus.messages.json_schema import wire_class
from fleetbus.recording import mcap_format as fmt
from fleetbus.recording.mcap_writer import McapWriter


class McapSink:
    """Frames in, MCAP out. `path` is the file, or with a split the pattern's stem:
    run.mcap becomes run_000.mcap, run_001.mcap, ... Not thread-safe."""

    def __init__(self, path: str | Path, metadata: Mapping[str, str] | None = None,
                 split_bytes: int = 0, split_ns: int = 0, chunk_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        self.latched: set[str] = set()  # topics whose publishers latch (a player does too)
        self.node_names: dict[str, str] = {}  # publisher uid -> node name
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.split_bytes, self.split_ns = split_bytes, split_ns
        # The file grows a compressed chunk at a time: small chunks keep a part's size
        # within an eighth of the split size.
        self.chunk_bytes = min(chunk_bytes, split_bytes // 8) if split_bytes else chunk_bytes
        self.files: list[Path] = []
        self.messages = 0
        self._writer: McapWriter | None = None
        self._file: Any = None
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str, str], tuple[int, str]] = {}
        self._first_ns: int | None = None
        self._part_messages = 0

    def write(self, topic: str, type_name: str, hash_: int, publisher: str, seq: int,
              log_ns: int, publish_ns: int, payload: bytes, buffers: Sequence[Any] = ()) -> None:
        if self._writer is None or self._due(log_ns):
            self._next_part(log_ns)
        key = (topic, type_name, publisher)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = self._channel(topic, type_name, hash_, publisher)
        channel_id, encoding = channel
        self._writer.add_message(channel_id, log_ns, fmt.pack(encoding, payload, buffers),
                                 publish_ns, seq & 0xFFFFFFFF)
        self.messages += 1
        self._part_messages += 1

    def close(self, status: Mapping[str, Any]) -> None:
        """Finish the current file with the recording's status (complete, dropped, ...)."""
        if self._writer is None:
            self._next_part(0)
        self._finish(status)

    def _due(self, log_ns: int) -> bool:
        if not self._part_messages:
            return False
        if self.split_ns and log_ns - self._first_ns >= self.split_ns:
            return True
        return bool(self.split_bytes) and self._writer.tell() >= self.split_bytes

    def _next_part(self, log_ns: int) -> None:
        if self._writer is not None:
            self._finish({"complete": True, "continued_in": self._part_path(len(self.files))
                          .name})
        path = self._part_path(len(self.files))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("wb")
        self._writer = McapWriter(self._file, self.chunk_bytes)
        self._writer.start(fmt.PROFILE, f"fleetbus {fleetbus.__version__}")
        self._writer.add_metadata(fmt.RUN_METADATA, {**self.metadata,
                                                     "part": str(len(self.files))})
        self.files.append(path)
        self._schemas.clear()
        self._channels.clear()
        self._first_ns, self._part_messages = log_ns, 0

    def _part_path(self, index: int) -> Path:
        if not (self.split_bytes or self.split_ns):
            return self.path
        return self.path.with_name(f"{self.path.stem}_{index:03d}{self.path.suffix}")

    def _channel(self, topic: str, type_name: str, hash_: int, publisher: str
                 ) -> tuple[int, str]:
        cls = wire_class(type_name)
        schema_id = 0
        if cls is not None:
            schema_id = self._schemas.get(type_name, 0)
            if not schema_id:
                schema_id = self._schemas[type_name] = self._writer.register_schema(
                    type_name, fmt.SCHEMA_ENCODING, fmt.schema_json(cls))
        encoding = fmt.message_encoding(cls)
        channel_id = self._writer.register_channel(
            topic, encoding, schema_id,
            fmt.channel_metadata(type_name, hash_, publisher,
                                 self.node_names.get(publisher, ""), topic in self.latched))
        return channel_id, encoding

    def _finish(self, status: Mapping[str, Any]) -> None:
        self._writer.add_metadata(fmt.STATUS_METADATA, {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in status.items()})
        self._writer.finish()
        self._file.close()
        self._writer = None
