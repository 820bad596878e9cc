"""Wire protocol between the supervisor and this worker, over the worker's stdin/stdout.

Mirrors ``libs/contracts/src/wire/protocol.ts`` (the definition); both sides are checked against
``libs/contracts/src/wire/wire-vectors.json``.

Frame layout::

    u32 big-endian header length | u32 big-endian payload length | header (UTF-8 JSON object) | payload

Canonical header serialisation (what makes Python and TypeScript frames byte-identical): the output
of JavaScript's ``JSON.stringify(header)`` -- compact (no whitespace), keys in insertion order (for
typed messages: the field order of the TS interface), non-ASCII characters written as raw UTF-8,
control characters as ``\\u00xx`` (lowercase hex) except ``\\b \\f \\n \\r \\t``, lone surrogates as
``\\udxxx``, and numbers as ECMAScript ``Number#toString`` writes them (``4.0`` -> ``4``,
``1e-7`` -> ``1e-7``, ``0.000001`` -> ``0.000001``). NaN and Infinity are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import threading
import types
import typing
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Literal, Union

PROTOCOL_VERSION = 1
#: A frame whose header + payload exceed this is a protocol error (the 8-byte prefix is not counted).
MAX_FRAME_BYTES = 256 * 1024 * 1024
FRAME_PREFIX_BYTES = 8
#: Largest integer both sides represent exactly (JS numbers are doubles).
MAX_SAFE_INTEGER = 2**53 - 1

_PREFIX = struct.Struct(">II")


class ExitCode:
    """Process exit codes with a meaning the supervisor acts on."""

    OK = 0
    CUDA_POISONED = 70
    PRELOAD_OOM = 71
    PROTOCOL_ERROR = 72
    RANK_LOST = 73  # a process of the worker's device group died or fell out of step (group.py)


WeightsKind = Literal["demo", "random", "hub"]
ErrorCode = Literal[
    "bad_input", "oom", "cancelled", "interrupted", "engine_unavailable", "text_encoder_unavailable", "cuda_fatal",
    "internal",
]
#: ``unavailable``: the engine's files or load failed; its jobs fail at once until ``retry_at`` (ms since the epoch).
EngineState = Literal["available", "unavailable"]
#: ``cancelled`` answers a cancel message only; a job stopped for any other reason is ``interrupted``.
JobStatus = Literal["succeeded", "failed", "cancelled", "interrupted"]


class ProtocolError(Exception):
    """A frame or message that does not follow the protocol."""


class FrameTooLarge(ProtocolError):
    pass


class TruncatedFrame(ProtocolError):
    """The stream ended in the middle of a frame."""


class MessageError(ProtocolError):
    """A well-formed frame whose header does not match its message type; ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# ---- canonical JSON ------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    return _ESCAPES.get(ch) or "\\u%04x" % ord(ch)


def _js_string(value: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, value) + '"'


def js_number(value: int | float) -> str:
    """Format a number exactly as ECMAScript ``Number#toString`` (and so ``JSON.stringify``) does."""
    if isinstance(value, bool):
        raise TypeError("bool is not a number here")
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside the range both sides represent exactly")
        return str(value)
    if not math.isfinite(value):
        raise ValueError("NaN and Infinity have no JSON form")
    if value == 0:
        return "0"  # also -0, as JS writes it
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-tripping digits, as JS does; only the layout differs.
    mantissa, _, exp = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    leading = len(all_digits) - len(all_digits.lstrip("0"))
    digits = all_digits.strip("0")
    # value == 0.<digits> * 10**n
    n = len(int_part) + (int(exp) if exp else 0) - leading
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp_str = ("+" if e >= 0 else "-") + str(abs(e))
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + exp_str
    return sign + out


def _dump(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_js_string(value))
    elif isinstance(value, (int, float)):
        out.append(js_number(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {key!r}")
            if not first:
                out.append(",")
            first = False
            out.append(_js_string(key))
            out.append(":")
            _dump(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _dump(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} in a frame header")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` exactly as ``JSON.stringify`` would (see the module docstring)."""
    out: list[str] = []
    _dump(value, out)
    return "".join(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_header(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    if not isinstance(header.get("type"), str):
        raise ProtocolError("frame header has no string `type`")
    return header


# ---- frames --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    payload: bytes = b""

    @property
    def type(self) -> str:
        return self.header["type"]


def _as_bytes_view(payload: Any) -> memoryview:
    view = memoryview(payload)
    if not view.c_contiguous:
        raise ValueError("payload buffer must be C-contiguous")
    return view.cast("B") if (view.format != "B" or view.ndim != 1) else view


def encode_frame(header: dict[str, Any], payload: Any = b"", max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One frame as bytes; ``payload`` may be any C-contiguous buffer (bytes, numpy array, ...)."""
    head = canonical_json(header).encode("utf-8")
    body = _as_bytes_view(payload)
    _check_sizes(len(head), body.nbytes, max_frame_bytes)
    return _PREFIX.pack(len(head), body.nbytes) + head + body.tobytes()


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame from ``data`` (used by tests and vectors)."""
    if len(data) < FRAME_PREFIX_BYTES:
        raise TruncatedFrame("shorter than the frame prefix")
    header_len, payload_len = _PREFIX.unpack_from(data)
    _check_sizes(header_len, payload_len)
    end = FRAME_PREFIX_BYTES + header_len + payload_len
    if len(data) < end:
        raise TruncatedFrame(f"frame needs {end} bytes, got {len(data)}")
    if len(data) > end:
        raise ProtocolError(f"{len(data) - end} trailing bytes after the frame")
    header = parse_header(data[FRAME_PREFIX_BYTES : FRAME_PREFIX_BYTES + header_len])
    return Frame(header, bytes(data[FRAME_PREFIX_BYTES + header_len : end]))


def _check_sizes(header_len: int, payload_len: int, limit: int = MAX_FRAME_BYTES) -> None:
    if header_len + payload_len > limit:
        raise FrameTooLarge(f"frame body of {header_len + payload_len} bytes exceeds the limit of {limit}")
    if header_len == 0:
        raise ProtocolError("frame has an empty header")


class FrameReader:
    """Blocking reader of frames from a binary stream; ``read()`` returns None at a clean EOF."""

    def __init__(self, stream: BinaryIO, max_frame_bytes: int = MAX_FRAME_BYTES):
        self._stream = stream
        self._max = max_frame_bytes

    def _read_exact(self, n: int, *, at_boundary: bool) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            # readinto may return fewer bytes than asked (pipes, raw streams): loop until full.
            count = self._stream.readinto(view[got:])  # type: ignore[attr-defined]
            if count is None:  # non-blocking stream with nothing ready: not how we use it
                raise ProtocolError("FrameReader needs a blocking stream")
            if count == 0:
                if got == 0 and at_boundary:
                    return None
                raise TruncatedFrame(f"stream ended after {got} of {n} bytes")
            got += count
        return buf

    def read(self) -> Frame | None:
        prefix = self._read_exact(FRAME_PREFIX_BYTES, at_boundary=True)
        if prefix is None:
            return None
        header_len, payload_len = _PREFIX.unpack(prefix)
        _check_sizes(header_len, payload_len, self._max)
        raw_header = self._read_exact(header_len, at_boundary=False)
        header = parse_header(raw_header)  # type: ignore[arg-type]
        payload = bytes(self._read_exact(payload_len, at_boundary=False)) if payload_len else b""  # type: ignore[arg-type]
        return Frame(header, payload)

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame


class FrameWriter:
    """Thread-safe frame writer: one lock, each frame written whole and flushed before the next."""

    def __init__(self, stream: BinaryIO, max_frame_bytes: int = MAX_FRAME_BYTES):
        self._stream = stream
        self._max = max_frame_bytes
        self._lock = threading.Lock()

    def _write_all(self, data: memoryview) -> None:
        while data.nbytes:
            written = self._stream.write(data)
            if written is None:  # BufferedWriter in blocking mode returns the count; raw may not
                return
            data = data[written:]

    def write(self, header: dict[str, Any], payload: Any = b"") -> None:
        head = canonical_json(header).encode("utf-8")
        body = _as_bytes_view(payload)
        _check_sizes(len(head), body.nbytes, self._max)
        with self._lock:
            self._write_all(memoryview(_PREFIX.pack(len(head), body.nbytes) + head))
            if body.nbytes:
                self._write_all(body)
            self._stream.flush()

    def send(self, message: "Message", payload: Any = b"") -> None:
        self.write(message.to_header(), payload)


# ---- typed messages ------------------------------------------------------------------------------
# Field order is the field order of the TS interfaces: it is the key order on the wire.


class Message:
    """Base of every message: a dataclass whose ``TYPE`` is the header's ``type``."""

    TYPE: ClassVar[str] = ""

    def to_header(self) -> dict[str, Any]:
        header: dict[str, Any] = {"type": self.TYPE}
        header.update(_to_wire(self))
        return header

    @classmethod
    def from_header(cls, header: dict[str, Any]):
        if header.get("type") != cls.TYPE:
            raise MessageError(f"expected type {cls.TYPE!r}, got {header.get('type')!r}", "type")
        return _from_wire(cls, header, "")


@dataclass(frozen=True)
class RawImageRef:
    width: int
    height: int
    channels: Literal[3]
    byte_length: int

    @staticmethod
    def rgb(width: int, height: int) -> "RawImageRef":
        return RawImageRef(width, height, 3, width * height * 3)


@dataclass(frozen=True)
class GenerateMessage(Message):
    TYPE: ClassVar[str] = "generate"
    job_id: str
    engine: str
    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    num_images: int
    references: list[RawImageRef]
    preview_every: int


@dataclass(frozen=True)
class CancelMessage(Message):
    TYPE: ClassVar[str] = "cancel"
    job_id: str


@dataclass(frozen=True)
class InterruptMessage(Message):
    TYPE: ClassVar[str] = "interrupt"
    job_id: str


@dataclass(frozen=True)
class PingMessage(Message):
    TYPE: ClassVar[str] = "ping"
    seq: int


@dataclass(frozen=True)
class UnloadMessage(Message):
    TYPE: ClassVar[str] = "unload"
    engine: str | None


@dataclass(frozen=True)
class ShutdownMessage(Message):
    TYPE: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class StartMessage(Message):
    """Ends a standby worker's wait (``--standby``): it resolves its device, loads its preload set, sends ``ready``."""

    TYPE: ClassVar[str] = "start"


@dataclass(frozen=True)
class ResidentEngine:
    engine: str
    location: Literal["device", "host"]
    bytes: int


@dataclass(frozen=True)
class ResidencyReport:
    engines: list[ResidentEngine]
    device_bytes_used: int
    device_budget_bytes: int
    last_load_ms: float | None
    last_swap_ms: float | None

    @staticmethod
    def empty(budget_bytes: int = 0) -> "ResidencyReport":
        return ResidencyReport([], 0, budget_bytes, None, None)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "ResidencyReport":
        return _from_wire(ResidencyReport, data, "residency")


@dataclass(frozen=True)
class EngineInfo:
    engine: str
    weights: WeightsKind
    revision: str
    state: EngineState = "available"
    reason: str | None = None
    retry_at: float | None = None


@dataclass(frozen=True)
class ReadyMessage(Message):
    TYPE: ClassVar[str] = "ready"
    protocol: int
    pid: int
    device: str
    torch_version: str
    diffusers_version: str
    engines: list[EngineInfo]
    residency: ResidencyReport


@dataclass(frozen=True)
class PongMessage(Message):
    TYPE: ClassVar[str] = "pong"
    seq: int
    busy_job_id: str | None
    last_progress_at: float | None
    residency: ResidencyReport
    engines: list[EngineInfo]


@dataclass(frozen=True)
class ProgressMessage(Message):
    TYPE: ClassVar[str] = "progress"
    job_id: str
    step: int
    total_steps: int
    elapsed_ms: float
    preview: RawImageRef | None


@dataclass(frozen=True)
class ImageMessage(Message):
    TYPE: ClassVar[str] = "image"
    job_id: str
    index: int
    image: RawImageRef


@dataclass(frozen=True)
class Timings:
    load_ms: float = 0
    text_encode_ms: float = 0
    denoise_ms: float = 0
    decode_ms: float = 0
    total_ms: float = 0


@dataclass(frozen=True)
class ErrorInfo:
    code: ErrorCode
    message: str
    field: str | None


@dataclass(frozen=True)
class ResultMessage(Message):
    TYPE: ClassVar[str] = "result"
    job_id: str
    status: JobStatus
    error: ErrorInfo | None
    timings: Timings
    weights: WeightsKind | None
    model_revision: str | None
    num_images: int


SUPERVISOR_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (GenerateMessage, CancelMessage, InterruptMessage, PingMessage, UnloadMessage, ShutdownMessage, StartMessage)
}
WORKER_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (ReadyMessage, PongMessage, ProgressMessage, ImageMessage, ResultMessage)
}
ALL_MESSAGES: dict[str, type[Message]] = {**SUPERVISOR_MESSAGES, **WORKER_MESSAGES}


def parse_message(header: dict[str, Any], table: dict[str, type[Message]] = ALL_MESSAGES) -> Message:
    """Turn a header into its typed message; unknown types raise ProtocolError, bad fields MessageError."""
    cls = table.get(header.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message type {header.get('type')!r}")
    return cls.from_header(header)


def split_references(message: GenerateMessage, payload: bytes) -> list[memoryview]:
    """Slice a generate payload into one raw RGB buffer per reference, checking every length."""
    view = memoryview(payload)
    out: list[memoryview] = []
    offset = 0
    for i, ref in enumerate(message.references):
        name = f"references[{i}]"
        if ref.width <= 0 or ref.height <= 0:
            raise MessageError(f"{name} has a non-positive size {ref.width}x{ref.height}", name)
        if ref.byte_length != ref.width * ref.height * ref.channels:
            raise MessageError(
                f"{name}.byte_length is {ref.byte_length}, expected {ref.width}x{ref.height}x{ref.channels}",
                f"{name}.byte_length",
            )
        if offset + ref.byte_length > len(view):
            raise MessageError(f"{name} runs past the end of the payload ({len(view)} bytes)", name)
        out.append(view[offset : offset + ref.byte_length])
        offset += ref.byte_length
    if offset != len(view):
        raise MessageError(f"payload has {len(view) - offset} bytes beyond the references", "references")
    return out


# ---- generic (de)serialisation of the dataclasses ------------------------------------------------


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _from_wire(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise MessageError(f"{path or 'header'} must be an object", path or None)
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            sub = f"{path}.{f.name}" if path else f.name
            if f.name not in value:
                if f.default is not dataclasses.MISSING:
                    continue
                raise MessageError(f"{sub} is missing", sub)
            kwargs[f.name] = _from_wire(hints[f.name], value[f.name], sub)
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise MessageError(f"{path} must not be null", path)
        non_null = [a for a in args if a is not type(None)]
        last: MessageError | None = None
        for arg in non_null:
            try:
                return _from_wire(arg, value, path)
            except MessageError as exc:
                last = exc
        raise last or MessageError(f"{path} has the wrong type", path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool):
            raise MessageError(f"{path} must be one of {', '.join(map(repr, allowed))}, got {value!r}", path)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise MessageError(f"{path} must be an array", path)
        (item_tp,) = typing.get_args(tp)
        return [_from_wire(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{path} must be an integer, got {value!r}", path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MessageError(f"{path} must be a number, got {value!r}", path)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise MessageError(f"{path} must be a string, got {value!r}", path)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise MessageError(f"{path} must be a boolean", path)
        return value
    raise TypeError(f"unsupported wire type {tp!r} at {path}")
