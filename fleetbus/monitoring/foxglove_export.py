"""`fleetbus export`: a recording as Foxglove reads it.

A recording keeps the bus's MessagePack payloads byte for byte (exact replays), which the
Foxglove app cannot decode. The export writes a second MCAP file through the Foxglove SDK
with what the live bridge would have served at each message's log time: every topic as
JSON with its JSON Schema, each vehicle's LocationFix, the fence as GeoJSON (see
foxglove_view.py), and the recording's run metadata.
"""

from __future__ import annotations

import collections
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import foxglove
from mcap.reader import make_reader

from fleetbus.monitoring.foxglove_view import FoxgloveView
from fleetbus.recording import mcap_format as fmt


@dataclass
class ExportResult:
    messages: int = 0  # recorded messages read
    topics: int = 0
    problems: collections.Counter[str] = field(default_factory=collections.Counter)
    first_problem: str = ""


def export_foxglove(files: Sequence[Path], out: Path,
                    topics: Sequence[str] = ("*",)) -> ExportResult:
    """Write the recording `files` (in order) as a Foxglove-readable MCAP file `out`."""
    result = ExportResult()

    def count(kind: str, text: str) -> None:
        result.problems[kind] += 1
        result.first_problem = result.first_problem or text

    context = foxglove.Context()
    writer = foxglove.open_mcap(str(out), allow_overwrite=True, context=context)
    try:
        view = FoxgloveView(context, lambda t: any(fnmatch.fnmatchcase(t, g) for g in topics),
                            count)
        for path in files:
            with Path(path).open("rb") as f:
                reader = make_reader(f)
                for record in reader.iter_metadata():
                    writer.write_metadata(record.name, dict(record.metadata))
                for _, channel, message in reader.iter_messages(log_time_order=True):
                    result.messages += 1
                    meta = channel.metadata
                    if channel.message_encoding not in (fmt.PAYLOAD, fmt.FRAMES):
                        continue
                    view.serve(channel.topic, meta.get("type_name", ""),
                               meta.get("latched") == "true")
                    if channel.topic not in view.topics:
                        continue
                    try:
                        payload, buffers = fmt.unpack(channel.message_encoding, message.data)
                        hash_ = int(meta.get("schema_hash", "0"), 16)
                    except ValueError as exc:
                        count("rejected_frame", f"{channel.topic}: {exc}")
                        continue
                    view.message(channel.topic, meta.get("type_name", ""), hash_, payload,
                                 buffers, message.log_time)
        result.topics = len(view.topics)
    finally:
        writer.close()
    return result
