"""Frame codec and typed messages against the shared wire vectors (the TS side checks the same file)."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from flexy_worker import protocol as p

VECTORS_PATH = Path(__file__).resolve().parents[2] / "libs" / "contracts" / "src" / "wire" / "wire-vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def _ordered_keys(value):
    """Nested key order, so a test can tell two equal dicts with different wire order apart."""
    if isinstance(value, dict):
        return [(k, _ordered_keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_ordered_keys(v) for v in value]
    return None


def test_vectors_cover_every_message_type_with_and_without_payload():
    types = {v["header"]["type"] for v in VECTORS}
    assert types == set(p.ALL_MESSAGES)
    assert any(v["payload_hex"] for v in VECTORS) and any(not v["payload_hex"] for v in VECTORS)
    assert any(any(ord(c) > 0xFFFF for c in v["header"].get("prompt", "")) for v in VECTORS)
    image = next(v for v in VECTORS if v["header"]["type"] == "image")
    assert image["header"]["image"] == {"width": 2, "height": 2, "channels": 3, "byte_length": 12}
    assert len(bytes.fromhex(image["payload_hex"])) == 12


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_its_header_and_payload(vector):
    frame = p.decode_frame(bytes.fromhex(vector["frame_hex"]))
    assert frame.header == vector["header"]
    assert _ordered_keys(frame.header) == _ordered_keys(vector["header"])
    assert frame.payload == bytes.fromhex(vector["payload_hex"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_encodes_byte_identically(vector):
    payload = bytes.fromhex(vector["payload_hex"])
    assert p.encode_frame(vector["header"], payload).hex() == vector["frame_hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_typed_message_round_trips_in_wire_field_order(vector):
    message = p.parse_message(vector["header"])
    assert type(message).TYPE == vector["header"]["type"]
    # The dataclass field order is the TS interface order, so a typed message encodes canonically.
    assert p.encode_frame(message.to_header(), bytes.fromhex(vector["payload_hex"])).hex() == vector["frame_hex"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_json_stringify_gives_the_same_header_bytes():
    script = """
    const V = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
    process.stdout.write(JSON.stringify(V.map(v => Buffer.from(JSON.stringify(v.header), 'utf8').toString('hex'))));
    """
    out = subprocess.run(["node", "-e", script, str(VECTORS_PATH)], capture_output=True, text=True, check=True).stdout
    for vector, head_hex in zip(VECTORS, json.loads(out), strict=True):
        frame = bytes.fromhex(vector["frame_hex"])
        (header_len,) = struct.unpack(">I", frame[:4])
        assert frame[8 : 8 + header_len].hex() == head_hex, vector["name"]


@pytest.mark.parametrize(
    "value,expected",
    [
        (4.0, "4"),
        (-0.0, "0"),
        (3.5, "3.5"),
        (0.1, "0.1"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (1.5e-6, "0.0000015"),
        (1e21, "1e+21"),
        (1.5e16, "15000000000000000"),
        (123456789.125, "123456789.125"),
        (2**53 - 1, "9007199254740991"),
        (-42, "-42"),
    ],
)
def test_numbers_are_written_as_javascript_writes_them(value, expected):
    assert p.js_number(value) == expected


def test_unrepresentable_values_are_refused():
    with pytest.raises(ValueError):
        p.canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        p.canonical_json({"x": 2**53})
    with pytest.raises(TypeError):
        p.canonical_json({"x": object()})


class Dribble(io.RawIOBase):
    """A stream that hands out at most `chunk` bytes per read, as a pipe may."""

    def __init__(self, data: bytes, chunk: int = 1):
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(self._chunk, len(buf), len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_reader_reassembles_frames_from_one_byte_reads_and_stops_at_eof():
    stream = b"".join(bytes.fromhex(v["frame_hex"]) for v in VECTORS)
    frames = list(p.FrameReader(Dribble(stream, 1)))
    assert [f.header for f in frames] == [v["header"] for v in VECTORS]
    assert [f.payload.hex() for f in frames] == [v["payload_hex"] for v in VECTORS]


def test_reader_over_a_real_pipe_with_a_slow_writer():
    frame = p.encode_frame({"type": "image", "job_id": "j", "index": 0, "image": p.RawImageRef.rgb(64, 64).__dict__}, bytes(range(256)) * 48)
    r, w = os.pipe()

    def write_slowly():
        with os.fdopen(w, "wb", buffering=0) as out:
            for i in range(0, len(frame), 1000):
                out.write(frame[i : i + 1000])
                time.sleep(0.001)

    t = threading.Thread(target=write_slowly)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as inp:
        reader = p.FrameReader(inp)
        got = reader.read()
        assert reader.read() is None
    t.join()
    assert got is not None and got.payload == bytes(range(256)) * 48 and got.header["image"]["width"] == 64


def test_eof_inside_a_frame_is_a_truncated_frame():
    frame = bytes.fromhex(VECTORS[0]["frame_hex"])
    for cut in (3, 8, 20, len(frame) - 1):
        with pytest.raises(p.TruncatedFrame):
            p.FrameReader(io.BytesIO(frame[:cut])).read()
    assert p.FrameReader(io.BytesIO(b"")).read() is None


def test_oversized_frame_is_refused_before_its_body_is_read():
    # Only the prefix exists: the reader must refuse on the declared sizes alone, not wait for 256 MiB.
    prefix = struct.pack(">II", 100, p.MAX_FRAME_BYTES)
    with pytest.raises(p.FrameTooLarge):
        p.FrameReader(io.BytesIO(prefix)).read()
    small_limit = p.FrameReader(io.BytesIO(p.encode_frame({"type": "ping", "seq": 1}, b"x" * 100)), max_frame_bytes=64)
    with pytest.raises(p.FrameTooLarge):
        small_limit.read()


def test_oversized_frame_is_refused_by_the_encoder_and_writer():
    np = pytest.importorskip("numpy")
    huge = np.zeros(p.MAX_FRAME_BYTES, dtype=np.uint8)  # calloc'd: untouched pages cost nothing
    with pytest.raises(p.FrameTooLarge):
        p.encode_frame({"type": "ping", "seq": 1}, huge)
    sink = io.BytesIO()
    with pytest.raises(p.FrameTooLarge):
        p.FrameWriter(sink).write({"type": "ping", "seq": 1}, huge)
    assert sink.getvalue() == b""  # nothing half-written
    with pytest.raises(p.FrameTooLarge):
        p.FrameWriter(sink, max_frame_bytes=64).write({"type": "ping", "seq": 1}, b"x" * 100)
    assert p.decode_frame(p.encode_frame({"type": "ping", "seq": 1}, b"x" * 100)).payload == b"x" * 100


@pytest.mark.parametrize(
    "raw,message",
    [
        (b"{not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"seq":1}', "no string `type`"),
        (b'{"type":"ping","seq":NaN}', "not UTF-8 JSON"),
    ],
)
def test_unparseable_headers_are_protocol_errors(raw, message):
    frame = struct.pack(">II", len(raw), 0) + raw
    with pytest.raises(p.ProtocolError, match=message):
        p.FrameReader(io.BytesIO(frame)).read()


def test_unknown_type_and_bad_fields_name_the_problem():
    with pytest.raises(p.ProtocolError, match="unknown message type"):
        p.parse_message({"type": "launch_missiles"})
    good = dict(VECTORS[0]["header"])
    with pytest.raises(p.MessageError) as exc:
        p.parse_message({**good, "steps": "4"})
    assert exc.value.field == "steps"
    with pytest.raises(p.MessageError) as exc:
        p.parse_message({**good, "seed": True})
    assert exc.value.field == "seed"
    with pytest.raises(p.MessageError) as exc:
        p.parse_message({k: v for k, v in good.items() if k != "width"})
    assert exc.value.field == "width"
    with pytest.raises(p.MessageError) as exc:
        p.parse_message({**good, "references": [{"width": 2, "height": 2, "channels": 4, "byte_length": 16}]})
    assert exc.value.field == "references[0].channels"


def test_references_are_sliced_from_the_payload_and_checked():
    vector = next(v for v in VECTORS if v["name"] == "generate_two_references")
    message = p.parse_message(vector["header"])
    payload = bytes.fromhex(vector["payload_hex"])
    slices = p.split_references(message, payload)
    assert [bytes(s) for s in slices] == [payload[:12], payload[12:]]
    with pytest.raises(p.MessageError, match="runs past the end"):
        p.split_references(message, payload[:-1])
    with pytest.raises(p.MessageError, match="beyond the references"):
        p.split_references(message, payload + b"\0")
    lying = p.GenerateMessage(**{**message.__dict__, "references": [p.RawImageRef(2, 2, 3, 11)]})
    with pytest.raises(p.MessageError) as exc:
        p.split_references(lying, payload[:11])
    assert exc.value.field == "references[0].byte_length"


def test_writer_keeps_frames_whole_under_concurrent_writers():
    r, w = os.pipe()
    out = os.fdopen(w, "wb")
    writer = p.FrameWriter(out)
    threads_n, per_thread = 4, 25

    def produce(tag: int):
        for i in range(per_thread):
            # payloads larger than the pipe buffer force interleaving if the lock were missing
            writer.write({"type": "progress", "job_id": f"t{tag}", "step": i, "total_steps": per_thread, "elapsed_ms": 0, "preview": None},
                         bytes([tag]) * 70_000)

    received = []

    def consume():
        with os.fdopen(r, "rb") as inp:
            received.extend(p.FrameReader(inp))

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(t,)) for t in range(threads_n)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    out.close()
    consumer.join()
    assert len(received) == threads_n * per_thread
    for frame in received:
        tag = int(frame.header["job_id"][1:])
        assert frame.payload == bytes([tag]) * 70_000
    for tag in range(threads_n):
        steps = [f.header["step"] for f in received if f.header["job_id"] == f"t{tag}"]
        assert steps == list(range(per_thread))


def test_writer_accepts_numpy_buffers_without_copy_semantics_changing_bytes():
    np = pytest.importorskip("numpy")
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    sink = io.BytesIO()
    p.FrameWriter(sink).send(p.ImageMessage("j", 0, p.RawImageRef.rgb(3, 2)), image)
    frame = p.decode_frame(sink.getvalue())
    assert frame.payload == image.tobytes()
    assert frame.header == {"type": "image", "job_id": "j", "index": 0, "image": {"width": 3, "height": 2, "channels": 3, "byte_length": 18}}
