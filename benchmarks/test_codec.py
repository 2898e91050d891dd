"""pytest-benchmark suite for the message codec (`python -m pytest benchmarks
--benchmark-only`): fleetbus's Codec against the reference msgpack library with dicts
and against a bare msgspec Struct, on the same Odometry."""

from __future__ import annotations

import msgpack
import msgspec
import numpy as np
import pytest

from fleetbus.messages import ArrayMsg, Codec, Odometry

ODOMETRY = Odometry(child_frame_id="base_link", pose_covariance=[0.1] * 36,
                    twist_covariance=[0.2] * 36)


@pytest.mark.benchmark(group="odometry encode+decode")
def test_fleetbus_codec(benchmark):
    codec = Codec(Odometry)
    assert benchmark(lambda: codec.decode(*codec.encode(ODOMETRY))) == ODOMETRY


@pytest.mark.benchmark(group="odometry encode+decode")
def test_reference_msgpack_dict(benchmark):
    data = msgspec.to_builtins(ODOMETRY)
    assert benchmark(lambda: msgpack.unpackb(msgpack.packb(data))) == data


@pytest.mark.benchmark(group="odometry encode+decode")
def test_bare_msgspec_struct(benchmark):
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Odometry)
    assert benchmark(lambda: dec.decode(enc.encode(ODOMETRY))) == ODOMETRY


@pytest.mark.benchmark(group="1 MiB array encode+decode")
def test_fleetbus_array_out_of_band(benchmark):
    codec = Codec(ArrayMsg)
    msg = ArrayMsg(data=np.zeros(2**17))

    def roundtrip():
        payload, buffers = codec.encode(msg)
        return codec.decode(payload, buffers)

    assert benchmark(roundtrip).data.shape == (2**17,)


@pytest.mark.benchmark(group="1 MiB array encode+decode")
def test_array_inside_msgpack_payload(benchmark):
    raw = np.zeros(2**17).tobytes()
    assert len(benchmark(lambda: msgpack.unpackb(msgpack.packb({"data": raw})))["data"]) == 2**20
