"""Wire protocol v1, sans-I/O: frame encoding, an incremental decoder, and request validation.

Nothing here touches a socket, so the codec is tested on bytes alone and shared with clients as test vectors
(tests/vectors/). See docs/protocol.md for the contract.
"""

from __future__ import annotations

import signal as _signal
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from .queries import parse_colors
from .shapes import OutputEvent
from .sizing import POLICIES

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
MAX_ID: Final = 2**53 - 1
MAX_U32: Final = 2**32 - 1
MAX_COLS: Final = 1000
MAX_ROWS: Final = 1000
MAX_STR: Final = 4096  # characters in any string field, keys and values of maps included
MAX_LIST: Final = 4096  # items in a list or map field
MAX_METADATA: Final = 64 * 1024  # UTF-8 bytes of a session's shell, args, cwd, name and tags together

_HEADER = struct.Struct(">I")

# Error codes (docs/protocol.md).
BAD_FRAME: Final = "bad_frame"
BAD_MESSAGE: Final = "bad_message"
UNKNOWN_TYPE: Final = "unknown_type"
INVALID_ARGUMENT: Final = "invalid_argument"
SESSION_NOT_FOUND: Final = "session_not_found"
SESSION_EXITED: Final = "session_exited"
INPUT_QUEUE_FULL: Final = "input_queue_full"
LIMIT_REACHED: Final = "limit_reached"
SPAWN_FAILED: Final = "spawn_failed"
UNSUPPORTED_PROTOCOL: Final = "unsupported_protocol"
UNAUTHORIZED: Final = "unauthorized"
INTERNAL: Final = "internal"
DAEMON_RESTARTED: Final = "daemon_restarted"  # client-side: a reconnect found another daemon instance
READ_ONLY: Final = "read_only"
UPGRADE_FAILED: Final = "upgrade_failed"  # the in-place upgrade did not happen; nothing changed (docs/upgrade.md)
UPGRADE_IN_PROGRESS: Final = "upgrade_in_progress"

ERROR_CODES: Final = frozenset(
    {
        BAD_FRAME, BAD_MESSAGE, UNKNOWN_TYPE, INVALID_ARGUMENT, SESSION_NOT_FOUND, SESSION_EXITED,
        INPUT_QUEUE_FULL, LIMIT_REACHED, SPAWN_FAILED, UNSUPPORTED_PROTOCOL, UNAUTHORIZED, INTERNAL,
        DAEMON_RESTARTED,
        READ_ONLY, UPGRADE_FAILED, UPGRADE_IN_PROGRESS,
    }
)


class ProtocolError(Exception):
    """A request or frame the peer got wrong; `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FrameError(ProtocolError):
    """The byte stream cannot be framed any more: the connection must be closed after reporting it."""

    def __init__(self, message: str) -> None:
        super().__init__(BAD_FRAME, message)


# ---------------------------------------------------------------------------------------------------------------
# Encoding

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def pack(message: Mapping[str, Any]) -> bytes:
    """The MessagePack payload of `message` (no length prefix); a shapes.py TypedDict is a Mapping."""
    body: bytes = _packer.pack(message)
    return body


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame: u32 big-endian length, then the MessagePack map."""
    body = pack(message)
    return _HEADER.pack(len(body)) + body


def encode_output(session: int, offset: int, data: bytes) -> bytes:
    """The hot path's frame (encoded once per chunk, shared by every subscriber)."""
    event: OutputEvent = {"type": "output", "session": session, "data": data, "offset": offset}
    return encode(event)


# ---------------------------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True, slots=True)
class Malformed:
    """A complete frame whose payload is not a MessagePack map: reported as bad_message, framing stays intact."""

    reason: str


class FrameDecoder:
    """Incremental decoder: feed() any chunking of the byte stream, then iterate messages().

    messages() yields each complete frame's map (or Malformed) and raises FrameError on a zero or oversized length;
    after that the decoder stays broken, like the connection.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, requests: bool = False) -> None:
        self.max_frame = max_frame
        # The daemon decodes requests within the decoding limits (docs/protocol.md); a client decodes replies
        # from its daemon (a `list` of many sessions has more containers than any request), within msgpack's own.
        self._unpack = _unpack_request if requests else _unpack_reply
        self._buf = bytearray()
        self._pos = 0
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (a partial frame)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def messages(self) -> Iterator[dict[str, Any] | Malformed]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        try:
            while len(buf) - self._pos >= 4:
                (n,) = _HEADER.unpack_from(buf, self._pos)
                if n == 0 or n > self.max_frame:
                    self._error = FrameError(
                        "frame length 0" if n == 0 else f"frame length {n} exceeds the maximum {self.max_frame}"
                    )
                    raise self._error
                end = self._pos + 4 + n
                if len(buf) < end:
                    break
                payload = bytes(memoryview(buf)[self._pos + 4 : end])
                self._pos = end
                yield self._unpack(payload)
        finally:
            # Compact once the consumed prefix is large, so a long-lived connection does not grow the buffer.
            if self._pos > 65536 and self._pos * 2 > len(buf):
                del buf[: self._pos]
                self._pos = 0


# Decode limits (docs/protocol.md, "Decoding limits"): what a valid request needs, with room to grow. The largest
# valid request, `create` with 4096 args and 4096 env and tag entries, has 5 containers, depth 3 and ~20k items.
MAX_CONTAINER_ITEMS: Final = 4096  # elements of an array, entries of a map
MAX_CONTAINERS: Final = 16  # arrays and maps in one message, the message itself included
MAX_DEPTH: Final = 4  # the message map is level 1
MAX_ITEMS: Final = 32768  # elements and map entries in one message, all containers together
SCAN_ABOVE: Final = 1024  # payloads this small are decoded at once (at most ~1024 objects) and checked after

# Bytes that follow a type byte, for the MessagePack types whose size does not depend on a length field.
_FIXED: Final = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1,
                 0xD1: 2, 0xD2: 4, 0xD3: 8}
_LENGTH: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8/16/32, str8/16/32: size of the length
_CONTAINER_LEN: Final = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (size of the count, slots per item)


def _scan(p: bytes) -> str | None:
    """Walk the payload's structure without building it; the first decode limit it breaks, or None.

    Strings and binaries are skipped by their length, so a large `input` costs a few steps. Anything malformed is
    left to msgpack to report (None)."""
    n = len(p)
    pos = 0
    containers = items = 0
    todo = [1]  # values still to read at each open level
    while todo:
        if not todo[-1]:
            todo.pop()
            continue
        todo[-1] -= 1
        if pos >= n:
            return None
        b = p[pos]
        pos += 1
        if b < 0x80 or b >= 0xE0:
            continue  # fixint
        if b < 0xA0 or b in _CONTAINER_LEN:
            if b < 0xA0:
                count, slots = b & 0x0F, (2 if b < 0x90 else 1)
            else:
                size, slots = _CONTAINER_LEN[b]
                count = int.from_bytes(p[pos : pos + size], "big")
                pos += size
            containers += 1
            items += count
            if count > MAX_CONTAINER_ITEMS:
                return f"a container of {count} items (at most {MAX_CONTAINER_ITEMS})"
            if containers > MAX_CONTAINERS:
                return f"more than {MAX_CONTAINERS} arrays and maps"
            if len(todo) > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if items > MAX_ITEMS:
                return f"more than {MAX_ITEMS} items in total"
            todo.append(count * slots)
        elif b < 0xC0:
            pos += b & 0x1F  # fixstr
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _LENGTH:
            size = _LENGTH[b]
            pos += size + int.from_bytes(p[pos : pos + size], "big")
        else:
            return None  # ext or 0xc1: msgpack refuses it
    return None


def _unpack_reply(payload: bytes) -> dict[str, Any] | Malformed:
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        return Malformed("trailing bytes after the MessagePack value")
    except Exception as exc:  # msgpack raises several types (ValueError, FormatError, StackError, ...)
        return Malformed(f"payload is not valid MessagePack: {exc.__class__.__name__}")
    if not isinstance(value, dict):
        return Malformed(f"payload is a {type(value).__name__}, not a map")
    return value


def _unpack_request(payload: bytes) -> dict[str, Any] | Malformed:
    # Bounded before anything is built: a 16 MiB frame of 16.7M empty maps would otherwise cost seconds and a
    # gigabyte (issue #11 item 1). Large payloads are walked first (_scan); msgpack's own limits apply to all.
    n = len(payload)
    if n > SCAN_ABOVE and (why := _scan(payload)) is not None:
        return Malformed(f"payload exceeds the decoding limits: {why}")
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False, max_str_len=n, max_bin_len=n,
                                max_array_len=MAX_CONTAINER_ITEMS, max_map_len=MAX_CONTAINER_ITEMS, max_ext_len=0)
    except msgpack.ExtraData:
        return Malformed("trailing bytes after the MessagePack value")
    except Exception as exc:  # msgpack raises several types (ValueError, FormatError, StackError, ...)
        return Malformed(f"payload is not valid MessagePack: {exc.__class__.__name__}: {str(exc)[:100]}")
    if not isinstance(value, dict):
        return Malformed(f"payload is a {type(value).__name__}, not a map")
    if n > SCAN_ABOVE:
        return value
    if (why := _shape(value)) is not None:  # small: decoded at once (at most ~1000 objects), checked after
        return Malformed(f"payload exceeds the decoding limits: {why}")
    return value


def _shape(message: dict[Any, Any]) -> str | None:
    """The decoding limit a small decoded message breaks (the same limits _scan applies to large ones)."""
    containers = items = 0
    level: list[Any] = [message]
    for depth in range(1, MAX_DEPTH + 2):
        nested: list[Any] = []
        for c in level:
            containers += 1
            items += len(c)
            nested.extend(v for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list)))
        if not nested:
            break
        if depth == MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        level = nested
    if containers > MAX_CONTAINERS:
        return f"more than {MAX_CONTAINERS} arrays and maps"
    return None


def decode_all(
    data: bytes, max_frame: int = DEFAULT_MAX_FRAME, *, requests: bool = False
) -> list[dict[str, Any] | Malformed]:
    """Decode a complete byte string of frames (tests, vectors)."""
    dec = FrameDecoder(max_frame, requests=requests)
    dec.feed(data)
    out = list(dec.messages())
    if dec.buffered:
        raise FrameError(f"{dec.buffered} trailing bytes do not make a frame")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Request validation: turns a decoded map into typed fields or a ProtocolError with the right code.

REQUEST_TYPES: Final = frozenset(
    {"hello", "create", "attach", "detach", "input", "resize", "kill", "signal", "ack", "list", "snapshot", "stats",
     "prune", "run", "wait", "text", "watch", "unwatch", "upgrade"}
)


def request_id(msg: dict[str, Any]) -> int | None:
    """The request's id; raises bad_message for one that is not an unsigned int below 2^53."""
    rid = msg.get("id")
    if rid is None:
        return None
    if type(rid) is not int or not 0 <= rid <= MAX_ID:
        raise ProtocolError(BAD_MESSAGE, "id must be an unsigned integer below 2^53")
    return rid


def request_type(msg: dict[str, Any]) -> str:
    t = msg.get("type")
    if not isinstance(t, str):
        raise ProtocolError(BAD_MESSAGE, "message has no str 'type'")
    if t not in REQUEST_TYPES:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown request type {t[:64]!r}")
    return t


def _bad(field: str, expected: str) -> ProtocolError:
    return ProtocolError(INVALID_ARGUMENT, f"'{field}' must be {expected}")


def get_int(
    msg: dict[str, Any], field: str, *, lo: int = 0, hi: int = MAX_U32, default: int | None = None
) -> int:
    v = msg.get(field)
    if v is None:
        if default is None:
            raise ProtocolError(INVALID_ARGUMENT, f"'{field}' is required")
        return default
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(field, f"an integer in {lo}..{hi}")
    return v


def get_session(msg: dict[str, Any]) -> int:
    return get_int(msg, "session")


def get_bool(msg: dict[str, Any], field: str, default: bool) -> bool:
    v = msg.get(field)
    if v is None:
        return default
    if type(v) is not bool:
        raise _bad(field, "a boolean")
    return v


def get_str(msg: dict[str, Any], field: str, default: str | None = None, *, max_len: int = MAX_STR) -> str | None:
    v = msg.get(field)
    if v is None:
        return default
    if not isinstance(v, str) or len(v) > max_len or "\x00" in v:
        raise _bad(field, f"a string of at most {max_len} characters without NUL")
    return v


def _is_str(v: object, max_len: int) -> bool:
    return isinstance(v, str) and len(v) <= max_len and "\x00" not in v


def get_str_list(msg: dict[str, Any], field: str, *, max_items: int = MAX_LIST, max_len: int = MAX_STR) -> list[str]:
    v = msg.get(field)
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > max_items or not all(_is_str(s, max_len) for s in v):
        raise _bad(field, f"a list of at most {max_items} strings of at most {max_len} characters without NUL")
    return list(v)


def get_str_map(
    msg: dict[str, Any], field: str, *, max_items: int = MAX_LIST, max_len: int = MAX_STR
) -> dict[str, str]:
    v = msg.get(field)
    if v is None:
        return {}
    if (
        not isinstance(v, dict)
        or len(v) > max_items
        or not all(_is_str(k, max_len) and _is_str(s, max_len) for k, s in v.items())
    ):
        raise _bad(field, f"a map of at most {max_items} strings to strings, each of at most {max_len} characters "
                          "without NUL")
    return dict(v)


def get_data(msg: dict[str, Any], field: str = "data") -> bytes:
    v = msg.get(field)
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    raise _bad(field, "bin or str")


_SIGNALS: Final = {s.name: int(s) for s in _signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}
_SIGNAL_NUMBERS: Final = frozenset(_SIGNALS.values())


def parse_signal(value: object) -> int:
    """A signal given as a number or as a name ("SIGINT" or "INT", any case)."""
    if type(value) is int:
        if value in _SIGNAL_NUMBERS:
            return value
        raise ProtocolError(INVALID_ARGUMENT, f"unknown signal number {value}")
    if isinstance(value, str):
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name in _SIGNALS:
            return _SIGNALS[name]
        raise ProtocolError(INVALID_ARGUMENT, f"unknown signal name {value[:32]!r}")
    raise _bad("signal", "an integer or a signal name")


@dataclass(frozen=True, slots=True)
class CreateOptions:
    shell: str | None = None
    args: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    cols: int = 80
    rows: int = 24
    name: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    attach: bool = False
    kill_after_detach_s: float | None = None
    queries: str = "daemon"  # who answers terminal queries: the session's emulator, or the clients (queries.py)
    colors: dict[str, Any] | None = None  # validated; parsed over the daemon's default colours by the manager
    size_policy: str | None = None  # None: the daemon's default (RUST_PTY_SIZE_POLICY)
    env_mode: str = "merge"  # "replace": env is the whole environment (what node-pty's spawn passes)
    shell_integration: bool = True  # bash/zsh/fish get OSC 133 marks injected (shell_integration/, agent.py)


MAX_KILL_AFTER_DETACH_S: Final = 365 * 86400


def _kill_after_detach(o: dict[str, Any]) -> float | None:
    v = o.get("kill_after_detach_s")
    if v is None:
        return None
    if type(v) not in (int, float) or not 0 < v <= MAX_KILL_AFTER_DETACH_S:
        raise _bad("kill_after_detach_s", f"a number of seconds in (0, {MAX_KILL_AFTER_DETACH_S}]")
    return float(v)


def get_colors(msg: dict[str, Any], field: str = "colors") -> dict[str, Any] | None:
    """The `colors` map, checked (queries.parse_colors); None when absent."""
    v = msg.get(field)
    if v is None:
        return None
    try:
        parse_colors(v)
    except ValueError as exc:
        raise ProtocolError(INVALID_ARGUMENT, str(exc)[:200]) from None
    return v  # type: ignore[no-any-return]


def parse_create_options(msg: dict[str, Any]) -> CreateOptions:
    o = msg.get("options")
    if o is None:
        o = {}
    if not isinstance(o, dict):
        raise _bad("options", "a map")
    env = get_str_map(o, "env")
    for k in env:
        if not k or "=" in k:
            raise ProtocolError(INVALID_ARGUMENT, f"env name {k[:64]!r} is empty or contains '='")
    shell = get_str(o, "shell")
    if shell == "":
        raise ProtocolError(INVALID_ARGUMENT, "'shell' must not be empty")
    args, cwd, tags = get_str_list(o, "args"), get_str(o, "cwd"), get_str_map(o, "tags")
    name = get_str(o, "name", "") or ""
    # What `list` shows of a session is bounded, so a reply can always hold many sessions (issue #11 item 3).
    size = sum(len(x.encode()) for x in (shell or "", cwd or "", name, *args, *tags, *tags.values()))
    if size > MAX_METADATA:
        raise ProtocolError(INVALID_ARGUMENT, f"shell, args, cwd, name and tags hold {size} bytes together; at most "
                                              f"{MAX_METADATA}")
    return CreateOptions(
        shell=shell,
        args=tuple(args),
        cwd=cwd,
        env=tuple(env.items()),
        cols=get_int(o, "cols", lo=1, hi=MAX_COLS, default=80),
        rows=get_int(o, "rows", lo=1, hi=MAX_ROWS, default=24),
        name=name,
        tags=tuple(tags.items()),
        attach=get_bool(o, "attach", False),
        queries=_one_of(o, "queries", ("daemon", "client"), "daemon") or "daemon",
        colors=get_colors(o),
        size_policy=_one_of(o, "size_policy", POLICIES, None),
        kill_after_detach_s=_kill_after_detach(o),
        env_mode=_one_of(o, "env_mode", ("merge", "replace"), "merge") or "merge",
        shell_integration=get_bool(o, "shell_integration", True),
    )


def _one_of(o: dict[str, Any], field: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    v = get_str(o, field, default)
    if v is not default and v not in allowed:
        raise _bad(field, "one of " + ", ".join(allowed))
    return v


# ---------------------------------------------------------------------------------------------------------------
# Replies


def ok(rid: int | None, **fields: Any) -> dict[str, Any]:
    return {"type": "ok", "id": rid, **fields}


def error(
    rid: int | None, code: str, message: str, request: str | None = None, session: int | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "id": rid, "code": code, "message": message}
    if request is not None:
        msg["request"] = request
    if session is not None:
        msg["session"] = session
    return msg
