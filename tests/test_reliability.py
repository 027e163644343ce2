"""Reliability and security suite against a live daemon: protocol fuzzing, faults, floods, leaks, hostile peers.

Bounded for CI (the whole file runs in well under 90 s on a 2-core box). Longer, rerunnable versions live in
tests/soak/ (see tests/soak/README.md); they import the generators and helpers from this module.
The promises these tests pin are listed in docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vibest_pty import protocol
from vibest_pty.client import Client, PtyError, connect

from .conftest import Daemon, RawPeer, check_slow_reader, collect_until_exit, read_until

# ---------------------------------------------------------------------------------------------------------------
# Daemon probes (the raw peer is vibest_pty.testing.RawPeer)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """The daemon's children but its watchdog (one per daemon, for its whole life: docs/upgrade.md) and its emulator
    pool processes (which live as long as it does)."""
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if "vibest_pty.emulator_process" not in line and "vibest_pty.watchdog" not in line]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sleepers(mark: str) -> list[int]:
    """Live `sleep MARK` processes (to find grandchildren, also those that left the session)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f.read() == f"sleep\0{mark}\0".encode() and alive(int(d)):
                    found.append(int(d))
        except OSError:
            pass
    return found


def full_log(d: Daemon) -> str:
    return Path(d.log_path).read_text(errors="replace")


def assert_log_clean(d: Daemon) -> None:
    text = full_log(d)
    assert "Traceback" not in text and "internal error" not in text, text[-4000:]


class Echo:
    """A session that echoes lines back, on its own connection: the 'second client' that must keep working."""

    def __init__(self, path: str) -> None:
        self.raw = RawPeer(path)
        r = self.raw.call("create", options={
            "shell": "/bin/sh", "args": ["-c", "stty -echo; echo ready; exec cat"], "attach": True})
        assert r["type"] == "ok", r
        self.sid: int = r["session"]["id"]
        self.n = 0
        self._wait(b"ready")

    def _wait(self, needle: bytes, timeout: float = 10.0) -> None:
        buf = b""
        deadline = time.monotonic() + timeout
        while needle not in buf:
            assert time.monotonic() < deadline, f"echo {needle!r} not seen: {buf[-200:]!r}"
            m = self.raw.recv()
            assert m is not None, "echo connection closed"
            if m["type"] == "output" and m["session"] == self.sid:
                buf += m["data"]
            elif m["type"] in ("exit", "error"):
                raise AssertionError(f"echo session: {m}")

    def check(self) -> float:
        """Round trip of one line; returns its latency."""
        self.n += 1
        token = f"echo-{self.n}-{random.randrange(10**9)}".encode()
        t0 = time.monotonic()
        self.raw.send({"type": "input", "session": self.sid, "data": token + b"\n"})
        self._wait(token)
        return time.monotonic() - t0

    def close(self) -> None:
        self.raw.close()


# ---------------------------------------------------------------------------------------------------------------
# Protocol fuzzing: generators of hostile byte streams, each with the reply the protocol documents for it.

FUZZ_ENV = {"RUST_PTY_MAX_FRAME": str(256 * 1024), "RUST_PTY_INPUT_QUEUE_BYTES": str(64 * 1024)}
FUZZ_MAX_FRAME = 256 * 1024
FUZZ_INPUT_QUEUE = 64 * 1024
SENTINEL_ID = 2**53 - 1
MAX_ID = 2**53 - 1
U64 = 2**64 - 1
I64 = -(2**63)
SIGNAL_NUMBERS = frozenset(int(s) for s in signal.Signals)
SIGNAL_NAMES = frozenset(s.name for s in signal.Signals)


@dataclass
class Expect:
    """One reply: ok (code None) or error with a code in `codes`. `request` is the error's `request` field."""

    id: int | None
    codes: frozenset[str] | None = None
    request: str | None = None
    session: int | None = None
    either_ok: bool = False  # ok is acceptable too (input that may or may not fit the queue)


@dataclass
class Case:
    desc: str
    data: bytes
    expect: list[Expect] = field(default_factory=list)
    end: str = "open"  # open: a sentinel request must be answered; closed: bad_frame then EOF; abandon: we hang up
    cuts: list[int] = field(default_factory=list)
    resize: tuple[int, int] | None = None  # the sink session's size after this case if it succeeds
    lenient: bool = False  # a random payload that happened to decode to a map: any non-internal replies


@dataclass
class Targets:
    """Sessions of the fuzzed daemon: `sink` takes input (cat > /dev/null) and absorbs resizes."""

    sink: int
    protected: frozenset[int]  # sessions a fuzz case must never name (the echo session)


_int = st.integers(I64, U64)  # what MessagePack can carry
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(I64, U64), st.floats(), st.text(max_size=12), st.binary(max_size=12)
)
_keys = st.one_of(st.text(max_size=6), _int)
_flat = st.lists(_scalars, max_size=3) | st.dictionaries(_keys, _scalars, max_size=3)
# Two levels at most: a wrong value sits at most two levels down (options.args), and a message may nest 4 levels
# (the daemon's decoding limits, docs/protocol.md); deeper shapes are the "deep" and large-shape cases' job.
_nested = st.one_of(_scalars, _flat, st.lists(_scalars | _flat, max_size=3),
                    st.dictionaries(_keys, _scalars | _flat, max_size=3))
_not_none_nested = _nested.filter(lambda v: v is not None)


def _wrong_uint(lo: int, hi: int, required: bool) -> st.SearchStrategy[Any]:
    bad = [st.integers(I64, lo - 1), st.sampled_from([hi + 1, 65535, 2**32, 2**53, U64]).filter(lambda v: v > hi),
           st.integers(hi + 1, U64), st.booleans(), st.floats(), st.text(max_size=8), st.binary(max_size=8),
           st.lists(_int, max_size=2), st.dictionaries(st.text(max_size=4), _nested, max_size=2)]
    if required:
        bad.append(st.none())
    return st.one_of(*bad)


_wrong_bool = st.one_of(st.integers(I64, U64), st.floats(), st.text(max_size=8), st.binary(max_size=8),
                        st.lists(_nested, max_size=2), st.dictionaries(st.text(max_size=4), _nested, max_size=2))
_wrong_str = st.one_of(
    st.binary(max_size=16), st.integers(I64, U64), st.booleans(), st.floats(), st.lists(_nested, max_size=2),
    st.dictionaries(st.text(max_size=4), _nested, max_size=2),
    st.text(max_size=8).map(lambda s: s + "\x00" + s), st.just("a" * 4097),
)
_safe_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00="), min_size=1, max_size=8)
_wrong_str_list = st.one_of(
    st.text(max_size=8), st.binary(max_size=8), st.integers(I64, U64), st.booleans(),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    st.lists(st.one_of(st.binary(max_size=4), _int, st.none(), st.lists(st.text(), max_size=2)),
             min_size=1, max_size=3).flatmap(lambda bad: st.lists(_safe_text, max_size=2).map(lambda ok: ok + bad)),
    st.just(["fine", "nul\x00inside"]),
)
_wrong_str_map = st.one_of(
    st.text(max_size=8), st.binary(max_size=8), st.integers(I64, U64), st.lists(st.text(), max_size=2),
    st.dictionaries(_safe_text, st.one_of(st.binary(max_size=4), _int, st.none(),
                                          st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1)),
                    min_size=1, max_size=2),
    st.dictionaries(st.one_of(st.binary(min_size=1, max_size=4), _int), st.text(max_size=3), min_size=1,
                    max_size=2),
    st.just({"K": "v\x00"}),
)
_wrong_env = st.one_of(_wrong_str_map, st.just({"": "x"}), _safe_text.map(lambda k: {k + "=x": "y"}))
_wrong_data = st.one_of(st.none(), st.integers(I64, U64), st.booleans(), st.floats(), st.lists(_nested, max_size=2),
                        st.dictionaries(st.text(max_size=4), _nested, max_size=2))


def _not_a_signal(v: Any) -> bool:
    if type(v) is int:
        return v not in SIGNAL_NUMBERS
    if isinstance(v, str):
        name = v.upper()
        return ("SIG" + name if not name.startswith("SIG") else name) not in SIGNAL_NAMES
    return True


_wrong_signal = st.one_of(st.integers(I64, U64), st.text(max_size=10), st.sampled_from(["SIGFOO", "", "SIG", "9"]),
                          st.binary(max_size=6), st.floats(), st.booleans(), st.none(),
                          st.lists(_int, max_size=2)).filter(_not_a_signal)
_wrong_id = st.one_of(st.integers(I64, -1), st.integers(MAX_ID + 1, U64), st.floats(), st.booleans(),
                      st.text(max_size=6), st.binary(max_size=6), st.lists(_int, max_size=2),
                      st.dictionaries(st.text(max_size=3), _int, max_size=2))
_ids = st.integers(0, MAX_ID)

# (request type, its valid fields given the sink session, {field: wrong-value strategy}); one field is made wrong.
def _field_table(sink: int) -> list[tuple[str, dict[str, Any], dict[str, st.SearchStrategy[Any]]]]:
    sess = _wrong_uint(0, 2**32 - 1, required=True)
    return [
        ("attach", {"session": sink, "snapshot": False},
         {"session": sess, "snapshot": _wrong_bool, "since": _wrong_uint(0, 2**63 - 1, required=False)}),
        ("detach", {"session": sink}, {"session": sess}),
        ("input", {"session": sink, "data": b""}, {"session": sess, "data": _wrong_data}),
        ("resize", {"session": sink, "cols": 80, "rows": 24},
         {"session": sess, "cols": _wrong_uint(1, 1000, required=True), "rows": _wrong_uint(1, 1000, required=True)}),
        ("kill", {"session": sink}, {"session": sess}),
        ("signal", {"session": sink, "signal": "WINCH"}, {"session": sess, "signal": _wrong_signal}),
        ("ack", {"session": sink, "count": 1}, {"session": sess, "count": _wrong_uint(0, 2**63 - 1, required=False)}),
        ("snapshot", {"session": sink}, {"session": sess}),
        ("hello", {"protocol": 1}, {"client": _wrong_str}),
    ]


_CREATE_OK = {"shell": "/bin/true", "args": [], "cwd": "/", "env": {}, "cols": 80, "rows": 24, "name": "",
              "tags": {}, "attach": False}
_CREATE_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "shell": _wrong_str, "args": _wrong_str_list, "cwd": _wrong_str, "env": _wrong_env,
    "cols": _wrong_uint(1, 1000, required=False), "rows": _wrong_uint(1, 1000, required=False), "name": _wrong_str,
    "tags": _wrong_str_map, "attach": _wrong_bool,
}
KNOWN_FIELDS = {"type", "id", "session", "snapshot", "since", "data", "cols", "rows", "signal", "count", "options",
                "protocol", "client"}


@st.composite
def _with_id(draw: Any, msg: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Give the request an id, or none (fire-and-forget)."""
    if draw(st.integers(0, 4)) == 0:
        return msg, None
    rid = draw(_ids)
    return {**msg, "id": rid}, rid


def _session_of(msg: dict[str, Any]) -> int | None:
    s = msg.get("session")
    return s if type(s) is int else None


@st.composite
def message_case(draw: Any, t: Targets) -> Case:
    """One complete, well-framed message and the reply it must get."""
    kind = draw(st.sampled_from(["wrong_field", "wrong_field", "wrong_field", "create_wrong", "bad_id", "bad_type",
                                 "unknown_type", "not_found", "resize", "huge_input", "hello_protocol",
                                 "extra_keys", "spawn", "deep"]))
    if kind == "wrong_field":
        rtype, base, wrong = draw(st.sampled_from(_field_table(t.sink)))
        fld = draw(st.sampled_from(sorted(wrong)))
        value = draw(wrong[fld])
        msg, rid = draw(_with_id({"type": rtype, **base, fld: value}))
        return Case(f"{rtype}.{fld}={value!r:.60}", protocol.encode(msg),
                    [Expect(rid, frozenset({"invalid_argument"}), rtype, _session_of(msg))])
    if kind == "create_wrong":
        if draw(st.booleans()):
            fld = draw(st.sampled_from(sorted(_CREATE_WRONG)))
            options: Any = {**_CREATE_OK, fld: draw(_CREATE_WRONG[fld])}
        else:
            options = draw(st.one_of(st.lists(_nested, max_size=3), st.text(max_size=5), _int, st.binary()))
        msg, rid = draw(_with_id({"type": "create", "options": options}))
        return Case(f"create options={options!r:.80}", protocol.encode(msg),
                    [Expect(rid, frozenset({"invalid_argument"}), "create")])
    if kind == "bad_id":
        rtype = draw(st.sampled_from(sorted(protocol.REQUEST_TYPES)))
        msg = {"type": rtype, "id": draw(_wrong_id), "session": t.sink}
        return Case(f"{rtype} id={msg['id']!r}", protocol.encode(msg), [Expect(None, frozenset({"bad_message"}))])
    if kind == "bad_type":
        msg = draw(st.dictionaries(st.sampled_from(["session", "data", "x"]), _nested, max_size=2))
        ty = draw(st.one_of(st.none(), _int, st.binary(max_size=8), st.lists(st.text(), max_size=2),
                            st.sampled_from([b"list", b"hello"]), st.dictionaries(st.text(max_size=3), st.text())))
        if ty is not None:
            msg["type"] = ty
        msg.pop("id", None)
        msg, rid = draw(_with_id(msg))
        if _session_of(msg) in t.protected:
            msg["session"] = t.sink
        return Case(f"type={ty!r:.40}", protocol.encode(msg), [Expect(rid, frozenset({"bad_message"}))])
    if kind == "unknown_type":
        ty = draw(st.text(max_size=30).filter(lambda s: s not in protocol.REQUEST_TYPES))
        msg, rid = draw(_with_id({"type": ty, "session": t.sink}))
        return Case(f"unknown type {ty!r:.40}", protocol.encode(msg), [Expect(rid, frozenset({"unknown_type"}))])
    if kind == "not_found":
        rtype, extra = draw(st.sampled_from([
            ("attach", {}), ("detach", {}), ("input", {"data": "x"}), ("resize", {"cols": 10, "rows": 10}),
            ("kill", {}), ("signal", {"signal": "INT"}), ("snapshot", {}),
        ]))
        sid = draw(st.integers(10_000, 2**32 - 1))
        msg, rid = draw(_with_id({"type": rtype, "session": sid, **extra}))
        return Case(f"{rtype} session {sid}", protocol.encode(msg),
                    [Expect(rid, frozenset({"session_not_found"}), rtype, sid)])
    if kind == "resize":
        def dim() -> st.SearchStrategy[int]:
            return st.one_of(st.sampled_from([0, 1, 1000, 1001, 65535, -1]), st.integers(-5, 70000),
                             st.integers(1, 300))
        cols, rows = draw(dim()), draw(dim())
        if 1 <= cols <= 1000 and 1 <= rows <= 1000 and cols * rows > 20000:
            # Snapshots of very large terminals take the emulator thread a while (they no longer stall the loop:
            # test_snapshot_of_largest_terminal_does_not_freeze_others): keep the fuzz about validation.
            rows = max(1, 20000 // cols)
        msg, rid = draw(_with_id({"type": "resize", "session": t.sink, "cols": cols, "rows": rows}))
        good = 1 <= cols <= 1000 and 1 <= rows <= 1000
        exp = [Expect(rid, None)] if good else [Expect(rid, frozenset({"invalid_argument"}), "resize", t.sink)]
        if good and rid is None:
            exp = []
        return Case(f"resize {cols}x{rows}", protocol.encode(msg), exp, resize=(cols, rows) if good else None)
    if kind == "huge_input":
        n = draw(st.one_of(st.integers(0, 4096), st.integers(FUZZ_INPUT_QUEUE - 16, FUZZ_INPUT_QUEUE + 16),
                           st.integers(0, FUZZ_MAX_FRAME + 64 * 1024)))
        data: bytes | str = draw(st.sampled_from([b"x", "y"])) * n
        rid = draw(_ids)  # with an id: an input that fits may still meet a busy queue, the reply says which
        msg = {"type": "input", "session": t.sink, "data": data, "id": rid}
        encoded = protocol.encode(msg)
        if len(encoded) - 4 > FUZZ_MAX_FRAME:
            return Case(f"input of {n} bytes over the frame limit", encoded,
                        [Expect(None, frozenset({"bad_frame"}))], end="closed")
        if n > FUZZ_INPUT_QUEUE:
            return Case(f"input of {n} bytes over the input queue", encoded,
                        [Expect(rid, frozenset({"input_queue_full"}), "input", t.sink)])
        # Fits the bound: written, unless earlier input still waits in the queue (the sink drains it quickly).
        return Case(f"input of {n} bytes", encoded,
                    [Expect(rid, frozenset({"input_queue_full"}), "input", t.sink, either_ok=True)])
    if kind == "hello_protocol":
        p = draw(st.one_of(st.integers(I64, U64).filter(lambda v: v != 1), st.just(True), st.text(max_size=4),
                           st.floats(), st.binary(max_size=3)))
        msg, rid = draw(_with_id({"type": "hello", "protocol": p}))
        return Case(f"hello protocol={p!r}", protocol.encode(msg),
                    [Expect(rid, frozenset({"unsupported_protocol"}), "hello")])
    if kind == "extra_keys":
        extra = draw(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in KNOWN_FIELDS), _nested,
                                     min_size=1, max_size=4))
        rtype, base = draw(st.sampled_from([("list", {}), ("stats", {}), ("snapshot", {"session": t.sink}),
                                            ("hello", {"protocol": 1}), ("ack", {"session": t.sink})]))
        rid = draw(_ids)
        msg = {**extra, "type": rtype, "id": rid, **base}
        return Case(f"{rtype} with unknown keys {sorted(extra)!r:.60}", protocol.encode(msg), [Expect(rid, None)])
    if kind == "spawn":
        bad = draw(st.sampled_from([("shell", "/nonexistent/prog", "spawn_failed"),
                                    ("shell", "/etc/hostname", "spawn_failed"),
                                    ("cwd", "/nonexistent/dir", "invalid_argument"),
                                    ("cwd", "relative/dir", "invalid_argument"),
                                    ("shell", "", "invalid_argument")]))
        msg, rid = draw(_with_id({"type": "create", "options": {"shell": "/bin/true", bad[0]: bad[1]}}))
        return Case(f"create {bad[0]}={bad[1]!r}", protocol.encode(msg), [Expect(rid, frozenset({bad[2]}), "create")])
    assert kind == "deep"
    depth = draw(st.integers(1, 3000))
    rid = draw(_ids)
    nested = (b"\x91" if depth % 2 else b"\x81\xa1k") * depth + b"\x00"  # [[[...0]]] or {"k": {"k": ...}}
    payload = b"\x83" + b"".join(msgpack.packb(v) for v in ("type", "list", "id", rid, "junk")) + nested
    # The daemon's decoding limits bound nesting (depth 4, docs/protocol.md): reply as its decoder decides.
    decoded = protocol.decode_all(frame(payload), requests=True)[0]
    exp = Expect(rid, None) if isinstance(decoded, dict) else Expect(None, frozenset({"bad_message"}))
    return Case(f"nesting depth {depth}", frame(payload), [exp])


@st.composite
def frame_case(draw: Any, t: Targets) -> Case:
    """Damage at the framing level."""
    kind = draw(st.sampled_from(["zero", "too_long", "not_msgpack", "non_map", "trailing", "truncated",
                                 "truncated_header"]))
    if kind == "zero":
        return Case("frame length 0", struct.pack(">I", 0) + draw(st.binary(max_size=8)),
                    [Expect(None, frozenset({"bad_frame"}))], end="closed")
    if kind == "too_long":
        n = draw(st.one_of(st.integers(FUZZ_MAX_FRAME + 1, 2**32 - 1), st.just(FUZZ_MAX_FRAME + 1),
                           st.just(0xFFFFFFFF)))
        return Case(f"frame length {n}", struct.pack(">I", n) + draw(st.binary(max_size=64)),
                    [Expect(None, frozenset({"bad_frame"}))], end="closed")
    if kind == "not_msgpack":
        payload = draw(st.binary(min_size=1, max_size=64))
        try:
            v = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:
            return Case(f"payload {payload!r:.40}", frame(payload), [Expect(None, frozenset({"bad_message"}))])
        if not isinstance(v, dict):
            return Case(f"payload {payload!r:.40}", frame(payload), [Expect(None, frozenset({"bad_message"}))])
        return Case(f"random map {v!r:.40}", frame(payload), lenient=True)
    if kind == "non_map":
        v = draw(_nested.filter(lambda v: not isinstance(v, dict)))
        return Case(f"non-map {v!r:.40}", frame(msgpack.packb(v, use_bin_type=True)),
                    [Expect(None, frozenset({"bad_message"}))])
    if kind == "trailing":
        tail = draw(st.binary(min_size=1, max_size=8))
        return Case(f"trailing {tail!r}", frame(protocol.pack({"type": "list", "id": 1}) + tail),
                    [Expect(None, frozenset({"bad_message"}))])
    if kind == "truncated":
        full = protocol.encode({"type": "list", "id": 5, "pad": "p" * draw(st.integers(0, 100))})
        cut = draw(st.integers(4, len(full) - 1))
        return Case(f"truncated at {cut}/{len(full)}", full[:cut], end="abandon")
    cut = draw(st.integers(1, 3))
    return Case(f"truncated header {cut}", struct.pack(">I", 20)[:cut], end="abandon")


@st.composite
def fuzz_case(draw: Any, t: Targets) -> Case:
    """One connection's worth: 1-4 pipelined messages (replies in order), maybe ending in a framing error."""
    parts = draw(st.lists(message_case(t), min_size=1, max_size=4))
    if draw(st.integers(0, 2)) == 0:
        parts.append(draw(frame_case(t)))
    case = Case(" | ".join(p.desc for p in parts), b"".join(p.data for p in parts))
    for p in parts:
        case.expect.extend(p.expect)
        case.lenient |= p.lenient
        if p.resize is not None:
            case.resize = p.resize
        if p.end != "open":
            case.end = p.end
            break  # nothing after a fatal or truncated frame is read by anyone
    if case.end != "open":
        case.data = b"".join(p.data for p in parts[: parts.index(p) + 1])
    if len(case.data) > 1:
        case.cuts = sorted(draw(st.lists(st.integers(1, len(case.data) - 1), max_size=4, unique=True)))
    return case


class FuzzTarget:
    """A live daemon with an echo session on its own connection and a sink session; runs one Case at a time."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.echo = Echo(d.socket)
        ctl = RawPeer(d.socket)
        r = ctl.call("create", options={
            "shell": "/bin/sh", "args": ["-c", "stty raw -echo; exec cat > /dev/null"], "cols": 80, "rows": 24})
        ctl.close()
        self.t = Targets(sink=r["session"]["id"], protected=frozenset({self.echo.sid}))
        self.size = (80, 24)
        self.count = 0
        self.hangers: list[RawPeer] = []

    def run(self, case: Case) -> None:
        self.count += 1
        if case.resize is not None:
            self.size = case.resize  # the daemon handles every complete frame before a broken one
        s = RawPeer(self.d.socket, timeout=30)
        try:
            self._run(case, s)
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"{exc}\n--- daemon log tail ---\n{self.d.log()[-3000:]}") from exc
        finally:
            if s.sock.fileno() >= 0 and s not in self.hangers:
                s.close()

    def _run(self, case: Case, s: RawPeer) -> None:
        pos = 0
        for c in [*case.cuts, len(case.data)]:
            s.send_bytes(case.data[pos:c])
            pos = c
        if case.end == "abandon":
            if len(self.hangers) < 16 and random.random() < 0.5:
                self.hangers.append(s)  # half a frame, then silence, kept open for a while
            return
        if case.end == "open":
            s.send({"type": "list", "id": SENTINEL_ID})
        got: list[dict[str, Any]] = []
        for exp in case.expect if not case.lenient else []:
            m = s.recv()
            assert m is not None, f"{case.desc}: connection closed before the reply to {exp}"
            got.append(m)
            self._check(case, exp, m)
        if case.end == "closed":
            m = s.recv()
            assert m is None, f"{case.desc}: not closed after bad_frame, got {m}"
            return
        while True:
            m = s.recv()
            assert m is not None, f"{case.desc}: connection closed; got {got}"
            if case.lenient:
                assert not (m["type"] == "error" and m["code"] == "internal"), m
            if m.get("id") == SENTINEL_ID and m["type"] == "ok":
                assert case.lenient or not s.events, f"{case.desc}: extra frames {list(s.events)}"
                self._check_size(case, m["sessions"])
                break
            assert case.lenient, f"{case.desc}: unexpected frame {m}; expected {case.expect}"

    def _check(self, case: Case, exp: Expect, m: dict[str, Any]) -> None:
        where = f"{case.desc}: expected {exp}, got {m}"
        assert m.get("id") == exp.id, where
        if exp.codes is None or (exp.either_ok and m["type"] == "ok"):
            assert m["type"] == "ok", where
            return
        assert m["type"] == "error" and m["code"] in exp.codes, where
        assert isinstance(m["message"], str) and m["message"], where
        if exp.request is not None:
            assert m.get("request") == exp.request, where
        if exp.session is not None:
            assert m.get("session") == exp.session, where

    def _check_size(self, case: Case, sessions: list[dict[str, Any]]) -> None:
        sink = next(x for x in sessions if x["id"] == self.t.sink)
        assert sink["running"], f"{case.desc}: the sink session died: {sink}"
        assert (sink["cols"], sink["rows"]) == self.size, f"{case.desc}: last valid resize must win"

    def after_batch(self) -> None:
        assert self.d.proc is not None and self.d.proc.poll() is None, "daemon died:\n" + self.d.log()
        try:
            self.echo.check()
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"echo session stopped answering after case {self.count}: {exc}\n"
                                 f"{self.diagnose()}") from exc

    def diagnose(self) -> str:
        """What the daemon is doing (a stall, a dead session, a closed connection), for a failure message."""
        pid = self.d.pid
        lines = []
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            lines.append(f"daemon state {stat[0]} utime {stat[11]} stime {stat[12]} "
                         f"wchan {Path(f'/proc/{pid}/wchan').read_text()!r}")
        try:
            probe = RawPeer(self.d.socket, timeout=5)
            st_ = probe.call("stats")
            sessions = probe.call("list")["sessions"]
            probe.close()
            lines.append(f"stats {st_}")
            lines.append(f"sessions {[(x['id'], x['running'], x['cols'], x['rows']) for x in sessions]}")
        except Exception as e:
            lines.append(f"a fresh connection gets no stats: {e!r}")
        lines.append(f"echo pending frames {list(self.echo.raw.events)[:5]}")
        lines.append("--- daemon log tail ---\n" + self.d.log()[-4000:])
        return "\n".join(lines)

    def finish(self) -> None:
        for h in self.hangers:
            h.close()
        self.after_batch()
        self.echo.close()
        assert_log_clean(self.d)


def run_fuzz(target: FuzzTarget, examples: int, seed: int | None = None) -> int:
    """Run `examples` hypothesis cases against the target (the soak script calls this in a loop)."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        case = data.draw(fuzz_case(target.t), label="case")
        target.run(case)
        target.after_batch()

    before = target.count
    prop()
    return target.count - before


def test_fuzz_protocol_against_live_daemon(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env=FUZZ_ENV)
    target = FuzzTarget(d)
    n = run_fuzz(target, examples=int(os.environ.get("VP_FUZZ_EXAMPLES", "300")))
    target.finish()
    print(f"fuzz: {n} cases")
    assert n >= 50


# ---------------------------------------------------------------------------------------------------------------
# Faults

VICTIM = """
import asyncio, sys
from vibest_pty.client import connect
async def main():
    c = await connect(sys.argv[1])
    await c.attach(int(sys.argv[2]), snapshot=False)
    print("attached", flush=True)
    n, said = 0, False
    while True:
        ev = await c.events.get()
        if ev["type"] == "output":
            n += len(ev["data"])
            if n > 200000 and not said:
                print("flowing", flush=True)
                said = True
asyncio.run(main())
"""


async def test_client_sigkilled_mid_flood_next_attach_is_exact(daemon: Daemon) -> None:
    from vibest_pty.emulator import Emulator

    size = 6_000_000
    watcher = await daemon.client()
    s = await watcher.create(shell="/bin/sh", attach=True, args=[
        "-c", f"stty -opost -echo; echo go; read x; yes 'sigkill flood line' | head -c {size}; echo; echo END"])
    sid = s["id"]
    head = await read_until(watcher, sid, b"go\n")
    victim = await asyncio.create_subprocess_exec(
        sys.executable, "-c", VICTIM, daemon.socket, str(sid), stdout=subprocess.PIPE)
    assert victim.stdout is not None
    assert await asyncio.wait_for(victim.stdout.readline(), 15) == b"attached\n"
    watch = asyncio.create_task(collect_until_exit(watcher, sid, timeout=90, start=len(head)))
    await watcher.input(sid, "\n")
    assert await asyncio.wait_for(victim.stdout.readline(), 30) == b"flowing\n"
    victim.kill()  # SIGKILL mid-flood: its socket is reset with output still queued for it
    await victim.wait()
    other = await daemon.client()
    deadline = time.monotonic() + 10
    while (await other.stats())["connections"] != 2:  # watcher + other: the victim's connection is gone
        assert time.monotonic() < deadline, "the killed client's connection was never reaped"
        await asyncio.sleep(0.05)
    r = await other.attach(sid)
    assert r["snapshot"]["offset"] == r["offset"]
    mid_flood = r["session"]["running"] and r["offset"] < size
    tail, ev2 = await collect_until_exit(other, sid, timeout=90, start=r["offset"])
    rest, ev = await watch
    out = head + rest
    assert ev["code"] == 0 and ev2 == ev
    assert out.endswith(b"\nEND\n") and len(out) == len(b"go\n") + size + len(b"\nEND\n")
    assert out[r["offset"]:] == tail, "the re-attached client continues exactly where its snapshot ends"
    # The snapshot on attach is the terminal state at exactly ok.offset: a fresh emulator fed the same prefix agrees.
    em = Emulator(r["snapshot"]["cols"], r["snapshot"]["rows"], 1000)
    try:
        em.feed(out[: r["offset"]])
        assert em.snapshot().data == r["snapshot"]["data"]
    finally:
        em.close()
    # After the end, an attach snapshot equals a fresh `snapshot` request.
    r2 = await other.attach(sid)
    fresh = await other.snapshot(sid)
    assert r2["snapshot"] == fresh and fresh["offset"] == len(out)
    await other.close()
    await watcher.close()
    assert mid_flood or r["offset"] > 200_000, "the victim was killed while the session was still flooding"


def test_silent_and_half_frame_clients_harm_no_one(daemon: Daemon) -> None:
    """Peers that connect and say nothing, or stop inside a header or a frame, cost nothing to others; a frame
    finished much later is still understood (framing survives pauses)."""
    echo = Echo(daemon.socket)
    silent = [RawPeer(daemon.socket) for _ in range(10)]
    half_header = RawPeer(daemon.socket)
    half_header.send_bytes(protocol.encode({"type": "list", "id": 41})[:2])
    full = protocol.encode({"type": "list", "id": 42})
    half_frame = RawPeer(daemon.socket)
    half_frame.send_bytes(full[:9])
    lat = [echo.check() for _ in range(5)]
    assert statistics.median(lat) < 0.5, lat
    ctl = RawPeer(daemon.socket)
    assert ctl.call("stats")["connections"] == 14
    time.sleep(0.5)
    half_header.send_bytes(protocol.encode({"type": "list", "id": 41})[2:5])
    half_header.send_bytes(protocol.encode({"type": "list", "id": 41})[5:])
    assert half_header.recv() == {"type": "ok", "id": 41, "sessions": ctl.call("list")["sessions"]}
    half_frame.send_bytes(full[9:])
    assert half_frame.recv()["id"] == 42  # type: ignore[index]
    for s in [*silent, half_header, half_frame]:
        s.close()
    echo.check()
    deadline = time.monotonic() + 5
    while ctl.call("stats")["connections"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ctl.close()
    echo.close()


async def test_hundred_clients_connect_and_vanish(daemon: Daemon) -> None:
    """100 peers that vanish in every way a peer can (mid-request, mid-frame, attached to a flood with output
    unread, right after connecting): the daemon's connections and fds return to where they were."""
    c = await daemon.client()
    flood = await c.create(shell="/bin/sh", args=["-c", "yes vanish"])
    echo = Echo(daemon.socket)
    await asyncio.sleep(0.3)
    base_fds = open_fds(daemon.pid)
    rnd = random.Random(3)
    for i in range(100):
        s = RawPeer(daemon.socket, rcvbuf=4096)
        mode = i % 5
        if mode == 1:
            s.send({"type": "attach", "id": 1, "session": flood["id"]})  # then leave with output unread (RST)
            await asyncio.sleep(0.002)
        elif mode == 2:
            s.send_bytes(protocol.encode({"type": "list", "id": 1})[: rnd.randrange(1, 10)])
        elif mode == 3:
            s.send({"type": "snapshot", "id": 1, "session": flood["id"]})
        elif mode == 4:
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
            s.send({"type": "create", "id": 1, "options": {"shell": "/bin/true"}})
        s.close()
        if i % 20 == 19:
            echo.check()
    deadline = time.monotonic() + 10
    while True:
        st_ = await c.stats()
        if st_["connections"] == 2 and open_fds(daemon.pid) <= base_fds:
            break
        assert time.monotonic() < deadline, (st_["connections"], open_fds(daemon.pid), base_fds)
        await asyncio.sleep(0.05)
    # mode 4 created up to 20 /bin/true sessions: they all exited and were reaped
    deadline = time.monotonic() + 10
    while any(x["running"] for x in await c.list() if x["id"] not in (flood["id"], echo.sid)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert set(children(daemon.pid)) == {flood["pid"], next(x["pid"] for x in await c.list() if x["id"] == echo.sid)}
    echo.check()
    await c.kill(flood["id"])
    echo.close()
    await c.close()
    assert_log_clean(daemon)


async def test_kill_leaves_no_survivor_in_the_session_group(daemon_factory: Any) -> None:
    """test_session covers a child that ignores SIGHUP; here the whole group does, with a background job too:
    after the grace SIGKILL takes every process of the group."""
    d: Daemon = daemon_factory(env={"RUST_PTY_KILL_GRACE_MS": "300"})
    c = await d.client()
    mark = str(random.randrange(10**8, 10**9))
    s = await c.create(shell="/bin/sh", attach=True, args=[
        "-c", f"trap '' HUP TERM INT; sleep {mark} & sleep {mark} & echo armed; while :; do sleep 0.05; done"])
    await read_until(c, s["id"], b"armed")
    deadline = time.monotonic() + 10
    while len(sleepers(mark)) < 2 and time.monotonic() < deadline:  # a forked job may not have exec'd sleep yet
        await asyncio.sleep(0.05)
    assert len(sleepers(mark)) == 2
    t0 = time.monotonic()
    await c.kill(s["id"])
    _, ev = await collect_until_exit(c, s["id"])
    assert ev["signal"] == signal.SIGKILL and time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while sleepers(mark):
        assert time.monotonic() < deadline, "background jobs of the session survived its kill"
        await asyncio.sleep(0.05)
    await c.close()


async def test_child_that_daemonizes_does_not_delay_exit(daemon: Daemon) -> None:
    """A grandchild that leaves the session (setsid) keeps the PTY slave open: the session's exit is still
    reported promptly, kill still works, and the escaped process is not the daemon's to reap (docs/security.md)."""
    c = await daemon.client()
    mark = str(random.randrange(10**8, 10**9))
    try:
        t0 = time.monotonic()
        # Wait until the job has left the session (setsid execs sleep only after setsid()): else the hangup
        # at the leader's exit could kill it first.
        wait_setsid = f"until [ \"$(tr '\\0' ' ' < /proc/$!/cmdline)\" = 'sleep {mark} ' ]; do sleep 0.01; done"
        s = await c.create(shell="/bin/sh", attach=True,
                           args=["-c", f"setsid sleep {mark} & {wait_setsid}; echo started; exit 7"])
        out, ev = await collect_until_exit(c, s["id"])
        assert ev["code"] == 7 and b"started" in out
        assert time.monotonic() - t0 < 2.0, "exit reported promptly although a grandchild holds the PTY"
        s2 = await c.create(shell="/bin/sh", attach=True,
                            args=["-c", f"setsid sleep {mark} & {wait_setsid}; echo started; exec sleep 1000"])
        await read_until(c, s2["id"], b"started")
        t0 = time.monotonic()
        await c.kill(s2["id"])
        _, ev = await collect_until_exit(c, s2["id"])
        assert ev["signal"] == signal.SIGHUP and time.monotonic() - t0 < 1.5
        escaped = sleepers(mark)
        assert len(escaped) == 2, "processes that left the session are not killed (documented)"
        await c.kill(s["id"])  # removing exited records works with the orphans still around
        await c.kill(s2["id"])
        assert [x for x in await c.list() if x["id"] in (s["id"], s2["id"])] == []
        # The killed leader stays an unreaped zombie until the kill escalation settles (after the 2 s grace), so
        # that its group id cannot be reused meanwhile; then nothing is left.
        deadline = time.monotonic() + 10
        while children(daemon.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert children(daemon.pid) == [], "nothing left for the daemon to reap"
    finally:
        for pid in sleepers(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    await c.close()


async def test_kill_reaches_hup_ignoring_background_job_after_leader_died(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_KILL_GRACE_MS": "300"})
    c = await d.client()
    mark = str(random.randrange(10**8, 10**9))
    try:
        s = await c.create(shell="/bin/sh", attach=True, args=[
            "-c", f"(trap '' HUP; exec sleep {mark}) & echo armed; exec sleep 1000"])
        await read_until(c, s["id"], b"armed")
        await c.kill(s["id"])
        t0 = time.monotonic()
        _, ev = await collect_until_exit(c, s["id"])
        assert ev["signal"] == signal.SIGHUP and time.monotonic() - t0 < 1.5, "exit reported promptly"
        await asyncio.sleep(1.0)  # well past the 300 ms grace
        assert sleepers(mark) == [], "a job of the killed session's own process group survived kill"
    finally:
        for pid in sleepers(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await c.close()


async def test_sigterm_with_stuck_client_and_stubborn_child(daemon_factory: Any) -> None:
    """test_server covers a clean SIGTERM. Here the worst case: a child ignoring SIGHUP/SIGTERM, a flood and a
    client that never reads. The daemon still exits 0 within the grace plus its close timeout, kills the child,
    removes its socket, and a new daemon starts on the same path."""
    d: Daemon = daemon_factory(env={"RUST_PTY_KILL_GRACE_MS": "500"})
    c = await d.client()
    stubborn = await c.create(shell="/bin/sh", attach=True,
                              args=["-c", "trap '' HUP TERM INT; echo armed; while :; do sleep 0.05; done"])
    await read_until(c, stubborn["id"], b"armed")
    flood = await c.create(shell="/bin/sh", args=["-c", "yes stuck"])
    stuck = RawPeer(d.socket, rcvbuf=4096)
    stuck.send({"type": "attach", "id": 1, "session": flood["id"]})
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert (await c.next_event("shutdown"))["reason"]
    rc = await asyncio.to_thread(d.proc.wait, 20)
    elapsed = time.monotonic() - t0
    assert rc == 0 and elapsed < 0.5 + 1.0 + 2.0 + 2.0, elapsed
    assert not os.path.exists(d.socket)
    assert not alive(stubborn["pid"]) and not alive(flood["pid"])
    stuck.close()
    await c.close()
    d2 = Daemon(d.dir).start()
    c2 = await d2.client()
    assert await c2.list() == []
    await c2.close()
    assert d2.stop() == 0


async def test_socket_deleted_under_running_daemon(daemon: Daemon) -> None:
    """Documented in docs/security.md: existing connections keep working, new clients cannot connect, a second
    daemon refuses to start (the lock is still held); after SIGTERM of the first, a new daemon starts normally."""
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "stty -echo; cat"], attach=True)
    os.unlink(daemon.socket)
    await c.input(s["id"], "after unlink\n")
    await read_until(c, s["id"], b"after unlink")
    with pytest.raises(FileNotFoundError):
        await connect(daemon.socket)
    second = Daemon(daemon.dir).start(wait=False)
    assert second.proc is not None
    assert await asyncio.to_thread(second.proc.wait, 15) == 1
    assert "lock" in second.log() and "already running" in second.log()
    assert (await c.list())[0]["running"], "the first daemon is unaffected"
    assert daemon.stop() == 0  # its shutdown tolerates the missing socket
    third = Daemon(daemon.dir).start()
    c3 = await third.client()
    assert await c3.list() == [], "sessions of the old daemon do not survive it"
    await c3.close()
    assert third.stop() == 0
    await c.close()


# ---------------------------------------------------------------------------------------------------------------
# Floods

PROBE = """
import asyncio, json, sys, time
from vibest_pty.client import connect
async def main():
    c = await connect(sys.argv[1])
    s = await c.create(shell="/bin/sh", args=["-c", "stty -echo; echo ready; exec cat"], attach=True)
    buf = b""
    while b"ready" not in buf:
        buf += (await c.next_event("output"))["data"]
    print("ready", flush=True)
    n = 0
    for line in sys.stdin:
        lat = []
        for _ in range(int(line)):
            n += 1
            tok = f"p{n}x".encode()
            t0 = time.monotonic()
            c.send_input(s["id"], tok + b"\\n")
            got = b""
            while tok not in got:
                got += (await c.next_event("output"))["data"]
            lat.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)
        print(json.dumps(lat), flush=True)
asyncio.run(main())
"""
FAST = """
import asyncio, hashlib, json, sys
from vibest_pty.client import connect
async def main():
    c = await connect(sys.argv[1])
    sid = int(sys.argv[2])
    r = await c.attach(sid, since=0)
    h = hashlib.sha256(r["replay"])
    offset, resyncs = r["offset"], 0
    print("attached", flush=True)
    while True:
        ev = await c.events.get()
        if ev["type"] == "output":
            assert ev["offset"] == offset, (ev["offset"], offset)
            h.update(ev["data"])
            offset += len(ev["data"])
        elif ev["type"] == "resync":
            resyncs += 1
        elif ev["type"] == "exit":
            print(json.dumps({"total": offset, "sha256": h.hexdigest(), "resyncs": resyncs}), flush=True)
            return
asyncio.run(main())
"""
# Room for a fast client that loses the CPU for a while (16 busy processes share 2 cores here, and the daemon
# parses on a second thread, so it outruns a Python client); a stuck client still overflows it within a second.
FLOOD_QUEUE_BYTES = 4 * 1024 * 1024
FLOOD_ENV = {"RUST_PTY_FLOW_MAX_QUEUE_BYTES": str(FLOOD_QUEUE_BYTES), "RUST_PTY_FLOW_MAX_QUEUE_SIZE": "1024",
             "RUST_PTY_FLOW_THRESHOLD": "256"}


class Probe:
    """Echo latency measured from a separate process (so the test's own busy event loop does not count)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, path: str) -> Probe:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", PROBE, path, stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready\n"
        return cls(proc)

    async def pings(self, n: int) -> list[float]:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n".encode())
        await self.proc.stdin.drain()
        return json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 60))  # type: ignore[no-any-return]

    async def stop(self) -> None:
        self.proc.kill()
        await self.proc.wait()


async def test_five_floods_fast_and_slow_clients_and_echo_latency(daemon_factory: Any) -> None:
    """`yes` in five sessions at once, each with a fast and a stuck client: fast clients get every byte, stuck
    ones get warnings and a resync, queues stay within their byte budget, and an echo in a sixth session stays
    responsive. Fast clients and the echo probe are separate processes, like real clients."""
    import hashlib
    import json

    size = int(os.environ.get("VP_FLOOD_BYTES", "16000000"))
    d: Daemon = daemon_factory(env=FLOOD_ENV)
    probe = await Probe.start(d.socket)
    ctl = await d.client()
    idle = await probe.pings(30)
    base_rss = (await ctl.stats())["rss"]
    sids, fast, slow = [], [], []
    for i in range(5):
        s = await ctl.create(shell="/bin/sh", attach=True, args=[
            "-c", f"stty -opost -echo; echo go; read x; yes 'flood {i} line' | head -c {size}"])
        sids.append(s["id"])
        await read_until(ctl, s["id"], b"go\n")
        await ctl.detach(s["id"])
        p = await asyncio.create_subprocess_exec(sys.executable, "-c", FAST, d.socket, str(s["id"]),
                                                 stdout=subprocess.PIPE)
        assert p.stdout is not None
        assert await asyncio.wait_for(p.stdout.readline(), 20) == b"attached\n"
        fast.append(p)
        r = RawPeer(d.socket, rcvbuf=4096, timeout=60)
        r.send({"type": "attach", "id": 1, "session": s["id"], "snapshot": False})
        slow.append(r)
    peak = {"rss": 0, "queue": 0}

    async def sample() -> None:
        while True:
            st_ = await ctl.stats()
            peak["rss"] = max(peak["rss"], st_["rss"])
            peak["queue"] = max([peak["queue"], *(q["bytes"] for q in st_["queues"])])
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    for sid in sids:
        ctl.send_input(sid, "\n")
    results = [asyncio.create_task(p.stdout.readline()) for p in fast]  # type: ignore[union-attr]
    await asyncio.sleep(0.2)
    loaded = await probe.pings(20)
    still_flooding = sum(not t.done() for t in results)
    outs = [json.loads(x) for x in await asyncio.wait_for(asyncio.gather(*results), 120)]
    sampler.cancel()
    for i, o in enumerate(outs):
        line = f"flood {i} line\n".encode()
        expected = b"go\n" + (line * (size // len(line) + 1))[:size]
        assert o == {"total": len(expected), "sha256": hashlib.sha256(expected).hexdigest(), "resyncs": 0}, i
    stats = []
    for r in slow:
        frames = []
        while True:
            m = await asyncio.to_thread(r.recv)
            assert m is not None
            frames.append(m)
            if m["type"] == "exit":
                break
        stats.append(check_slow_reader(frames, 3 + size))
        r.close()
    assert all(x["yellow"] >= 1 and x["red"] >= 1 and x["resync"] >= 1 for x in stats), stats
    assert peak["queue"] <= FLOOD_QUEUE_BYTES, peak
    med_idle, med_load = statistics.median(idle), statistics.median(loaded)
    print(f"echo latency idle median {med_idle * 1000:.1f} ms, under flood median {med_load * 1000:.1f} ms "
          f"(max {max(loaded) * 1000:.1f} ms); {still_flooding}/5 floods running after the pings; "
          f"peak rss +{(peak['rss'] - base_rss) / 2**20:.1f} MiB; slow readers {stats}")
    assert still_flooding >= 3, "the floods ended before the latency was measured: raise VP_FLOOD_BYTES"
    # 10 subscriber queues of at most 4 MiB, 5 emulator backlogs of at most ~4 MiB, replay windows, buffers.
    assert peak["rss"] - base_rss < 128 * 2**20, "memory stays bounded by the queue budgets"
    # "Within 2x of idle" cannot hold here: idle is ~0.5 ms, and under the flood 16 busy processes (5 yes, 5 head,
    # 5 fast clients, the daemon) share 2 cores, so every hop waits for a CPU slice. Measured medians are
    # 10-50 ms on the reference box; what is asserted is that the echo stays interactive (no queueing behind
    # the floods' megabytes, which would take seconds).
    assert med_load < max(2 * med_idle, 0.25), (med_idle, med_load)
    await probe.stop()
    for p in fast:
        await p.wait()
    await ctl.close()


# ---------------------------------------------------------------------------------------------------------------
# Leaks


async def _settle(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (got := await pred())[0]:
        assert time.monotonic() < deadline, f"did not settle: {got[1]}"
        await asyncio.sleep(0.05)


async def create_kill_cycles(d: Daemon, c: Client, n: int, batch: int = 10) -> None:
    """n sessions created, killed, their exit seen and their record removed, `batch` at a time."""
    for _ in range(n // batch):
        sids = [(await c.create(shell="/bin/sh", args=["-c", "exec sleep 100"], attach=True))["id"]
                for _ in range(batch)]
        for sid in sids:
            await c.kill(sid)
        exited: set[int] = set()
        while len(exited) < batch:
            ev = await c.next_event("exit", timeout=15)
            exited.add(ev["session"])
        assert exited == set(sids)
        for sid in sids:
            await c.kill(sid)  # removes the exited record


async def connect_cycles(d: Daemon, n: int, sid: int) -> None:
    """n clients that connect, attach (snapshot), list and leave; every fifth leaves without a word."""
    for i in range(n):
        if i % 5 == 4:
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(d.socket)  # closed at once by the GC
            continue
        c = await connect(d.socket)
        await c.attach(sid)
        await c.list()
        await c.close()


def _resources(d: Daemon) -> tuple[int, list[int], int]:
    return open_fds(d.pid), children(d.pid), rss(d.pid)


async def _leak_run(d: Daemon, c: Client, n: int, cycle: Callable[[int], Any], expect_children: list[int],
                    label: str) -> dict[str, float]:
    """Run n cycles (c is the only other connection): fds and children return to the baseline at n/2 and n,
    RSS settles."""
    await cycle(20)  # warm-up: first-use allocations (emulator library, caches) are not leaks
    fds0, _, rss0 = _resources(d)

    async def back_to_baseline() -> tuple[bool, str]:
        fds, kids, _ = _resources(d)
        conns = (await c.stats())["connections"]
        ok = fds <= fds0 and sorted(kids) == sorted(expect_children) and conns == 1
        return ok, f"fds {fds} (baseline {fds0}), children {kids}, connections {conns}"

    await cycle(n // 2)
    await _settle(back_to_baseline)
    rss_half = rss(d.pid)
    await cycle(n - n // 2)
    await _settle(back_to_baseline)
    rss_full = rss(d.pid)
    fig = {"cycles": n, "fds": fds0, "rss0_mib": rss0 / 2**20, "rss_half_mib": rss_half / 2**20,
           "rss_full_mib": rss_full / 2**20}
    print(f"{label}: {fig}")
    # Settles: the second half of the cycles grows RSS by at most a few MiB (allocator noise), not in
    # proportion to the cycles.
    assert rss_full - rss_half < 6 * 2**20, fig
    return fig


async def test_create_kill_cycles_leak_nothing(daemon: Daemon) -> None:
    n = int(os.environ.get("VP_LEAK_CYCLES", "500"))
    c = await daemon.client()
    await _leak_run(daemon, c, n, lambda k: create_kill_cycles(daemon, c, k), [], "create/kill")
    assert (await c.stats())["sessions"] == 0
    await c.close()
    assert_log_clean(daemon)


async def test_connect_disconnect_cycles_leak_nothing(daemon: Daemon) -> None:
    n = int(os.environ.get("VP_LEAK_CYCLES", "500"))
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "seq 1 2000; exec cat"])
    await asyncio.sleep(0.2)
    await _leak_run(daemon, c, n, lambda k: connect_cycles(daemon, k, s["id"]), [s["pid"]], "connect/disconnect")
    await c.kill(s["id"])
    await c.close()
    assert_log_clean(daemon)


# ---------------------------------------------------------------------------------------------------------------
# Hostile peers and data that looks like code


async def test_input_never_reaches_another_session(daemon: Daemon) -> None:
    """Random bytes (all 256 values) from two connections, interleaved over three sessions: each session's
    program reads exactly the bytes addressed to it, and output goes only to subscribers of its session."""
    rnd = random.Random(11)
    a, b, watcher = await daemon.client(), await daemon.client(), await daemon.client()
    tmp = tempfile.mkdtemp(prefix="vp-iso-")
    sent: list[bytearray] = [bytearray() for _ in range(3)]
    chunks: list[tuple[int, bytes]] = []
    for _ in range(150):
        k = rnd.randrange(3)
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
        chunks.append((k, data))
        sent[k] += data
    sids = []
    for k in range(3):
        s = await a.create(shell="/bin/sh", attach=True, args=[
            "-c", f"stty raw -echo; echo ready; head -c {len(sent[k])} > {tmp}/in{k}; echo done{k}"])
        sids.append(s["id"])
        await read_until(a, s["id"], b"ready")
    await watcher.attach(sids[1], snapshot=False)
    for i, (k, data) in enumerate(chunks):
        await (a if i % 2 else b).input(sids[k], data)
    done = 0
    while done < 3:
        ev = await a.next_event("exit", timeout=20)
        assert ev["code"] == 0
        done += 1
    for k in range(3):
        assert Path(f"{tmp}/in{k}").read_bytes() == bytes(sent[k]), f"session {k} got someone else's input"
    while not watcher.events.empty():
        ev = watcher.events.get_nowait()
        assert ev.get("session") == sids[1], f"an event of a session this connection never attached: {ev}"
    subprocess.run(["rm", "-rf", tmp], check=False)
    for c in (a, b, watcher):
        await c.close()


HOSTILE = ["$(touch {canary}/a)", "`touch {canary}/b`", "; touch {canary}/c", "&& touch {canary}/d",
           "| touch {canary}/e", "x\ntouch {canary}/f\n", "'; touch {canary}/g; '", '"; touch {canary}/h; "',
           "> {canary}/i", "$((1+1)) ${{HOME}} * ? [a] ~", "-c", "\\", "--", " leading and trailing ", ""]


async def test_create_fields_are_data_never_shell(daemon: Daemon, tmpdir_short: str) -> None:
    """shell, args, env, cwd, name and tags go to posix_spawn and the session record as data: no shell ever
    sees them, so nothing in them is executed or expanded."""
    canary = os.path.join(tmpdir_short, "canary")
    os.mkdir(canary)
    hostile = [h.format(canary=canary) for h in HOSTILE]
    weird = os.path.join(tmpdir_short, "dir with 'quotes' \"and\" $(touch x) `y` ;z")
    os.mkdir(weird)
    script_dir = os.path.join(weird, "bin dir")
    os.mkdir(script_dir)
    script = os.path.join(script_dir, "print $args; #")
    Path(script).write_text('#!/bin/sh\nstty raw -echo\nprintf "%s\\0" "$@" "$PWD" "$V1" "$V2"\n')
    os.chmod(script, 0o755)
    c = await daemon.client()
    env = {"V1": hostile[0] + hostile[5], "V2": "$(touch " + canary + "/env)", "BAD;NAME": "`touch x`"}
    s = await c.create(shell=script, args=hostile, env=env, cwd=weird, name=hostile[2], tags={"t": hostile[1]},
                       attach=True)
    out, ev = await collect_until_exit(c, s["id"])
    assert ev["code"] == 0
    assert out.split(b"\0")[:-1] == [x.encode() for x in [*hostile, weird, env["V1"], env["V2"]]]
    assert s["command"] == [script, *hostile] and s["name"] == hostile[2] and s["tags"] == {"t": hostile[1]}
    # A shell string in `shell` is a file name, not a command line.
    with pytest.raises(PtyError) as e:
        await c.create(shell=f"/bin/sh -c 'touch {canary}/shell'")
    assert e.value.code == "spawn_failed"
    with pytest.raises(PtyError) as e:
        await c.create(shell="/bin/sh", cwd=f"/tmp; touch {canary}/cwd")
    assert e.value.code == "invalid_argument"
    assert os.listdir(canary) == [], "something was executed"
    assert not os.path.exists(os.path.join(weird, "x"))
    await c.close()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40), max_size=6),
       value=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60))
def test_any_args_and_env_arrive_byte_exact(args: list[str], value: str) -> None:
    """Whatever text the args and an env value hold, the program receives exactly it."""
    out, code = asyncio.run(_run_printargs(args, value))
    assert code == 0
    assert out.split(b"\0")[:-1] == [x.encode() for x in [*args, value]]


_PRINTARGS_DAEMON: list[Daemon] = []


async def _run_printargs(args: list[str], value: str) -> tuple[bytes, int]:
    d = _PRINTARGS_DAEMON[0]
    async with await d.client() as c:
        s = await c.create(shell="/bin/sh", attach=True, env={"V": value},
                           args=["-c", 'stty raw -echo; printf "%s\\0" "$@" "$V"', "sh", *args])
        out, ev = await collect_until_exit(c, s["id"])
    return out, ev["code"]


@pytest.fixture(autouse=True)
def _printargs_daemon(request: pytest.FixtureRequest) -> Any:
    if request.node.name != "test_any_args_and_env_arrive_byte_exact":
        yield
        return
    d = Daemon(tempfile.mkdtemp(prefix="vp-")).start()
    _PRINTARGS_DAEMON.append(d)
    yield
    _PRINTARGS_DAEMON.clear()
    d.stop()
    subprocess.run(["rm", "-rf", d.dir], check=False)


async def test_pipelined_requests_from_a_non_reader_are_bounded(daemon: Daemon) -> None:
    """Flow control bounds output queues; a peer that pipelines requests and never reads their replies must be
    bounded too (e.g. by no longer reading its requests while its replies wait), else any local process can make
    the daemon allocate without limit with a few KiB of `snapshot` requests."""
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", cols=300, rows=50, attach=True, args=[
        "-c", "i=0; while [ $i -lt 1200 ]; do i=$((i+1)); printf '\\033[3%dm%0290d\\n' $((i % 8)) $i; done; "
              "echo filled; exec sleep 100"])
    await read_until(c, s["id"], b"filled", timeout=30)
    per_reply = len((await c.snapshot(s["id"]))["data"])
    base = rss(daemon.pid)
    greedy = RawPeer(daemon.socket, rcvbuf=4096)
    n = 400  # ~13 KiB of requests asking for n * per_reply bytes of replies
    greedy.send_bytes(b"".join(protocol.encode({"type": "snapshot", "id": i, "session": s["id"]}) for i in range(n)))
    peak = 0
    for _ in range(50):
        await asyncio.sleep(0.1)
        peak = max(peak, rss(daemon.pid) - base)
        if peak >= 64 * 2**20:
            break
    greedy.close()
    await c.kill(s["id"])
    await c.close()
    assert peak < 64 * 2**20, f"daemon grew {peak / 2**20:.0f} MiB for {n} unread replies of {per_reply} bytes"


async def test_snapshot_of_largest_terminal_does_not_freeze_others(daemon: Daemon) -> None:
    """cols/rows up to 1000 are valid; one `snapshot` of such a session must not stall an echo elsewhere."""
    echo = Echo(daemon.socket)
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "exec sleep 100"], cols=1000, rows=1000)
    c.send({"type": "snapshot", "id": 1, "session": s["id"]})
    await asyncio.sleep(0.05)
    lat = await asyncio.to_thread(echo.check)
    echo.close()
    await c.kill(s["id"])
    await c.close()
    assert lat < 1.0, f"an echo in another session waited {lat:.1f} s behind one snapshot"


# -- issue #11: the emulator cannot be monopolised (item 2), snapshots fit a frame (item 5), kill (item 8) ------------


async def test_a_resize_flood_is_coalesced_and_blocks_no_other_session(daemon: Daemon) -> None:
    """Thousands of `resize` frames to a large session used to queue one reflow each in front of every other
    session's jobs (54 s for 10,000). Only the latest pending size is applied, and other sessions attach at once."""
    c = await daemon.client()
    big = await c.create(shell="/bin/sh", cols=1000, rows=200, args=["-c", "seq 1 3000; exec sleep 100"])
    other = await c.create(shell="/bin/sh", args=["-c", "echo ready; exec sleep 100"])
    await asyncio.sleep(0.5)
    flood = RawPeer(daemon.socket)
    flood.send_bytes(b"".join(
        protocol.encode({"type": "resize", "session": big["id"], "cols": 1000 - i % 2, "rows": 200 - i % 3})
        for i in range(4000)))
    await asyncio.sleep(0.2)
    c2 = await daemon.client()
    t0 = time.monotonic()
    reply = await asyncio.wait_for(c2.attach(other["id"]), 60)
    took = time.monotonic() - t0
    snap = await asyncio.wait_for(c2.snapshot(big["id"]), 60)
    flood.close()
    for s in (big, other):
        await c.kill(s["id"])
    await c.close()
    await c2.close()
    assert b"ready" in reply["snapshot"]["data"]
    assert (snap["cols"], snap["rows"]) == (1000 - 3999 % 2, 200 - 3999 % 3), "the latest size is the one applied"
    assert took < 5.0, f"an attach of another session waited {took:.1f} s behind a resize flood"


async def test_snapshot_always_fits_the_frame_limit_by_trimming_history(daemon_factory: Any) -> None:
    """A snapshot larger than a frame could never be delivered (the session could not be attached again): history
    is trimmed oldest first until the reply fits, and scrollback_lines says how many rows were served."""
    max_frame = 256 * 1024
    d = daemon_factory(env={"RUST_PTY_MAX_FRAME": str(max_frame), "RUST_PTY_SCROLLBACK_LINES": "5000"})
    c = await d.client()
    s = await c.create(shell="/bin/sh", cols=200, rows=30, attach=True, args=["-c",
        "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); printf '\\033[38;2;%d;%d;9m%0190d\\n' $((i % 256)) "
        "$((i * 7 % 256)) $i; done; echo filled; exec sleep 100"])
    await read_until(c, s["id"], b"filled", timeout=60)
    c2 = await d.client()
    reply = await c2.attach(s["id"])
    snap = reply["snapshot"]
    await c.kill(s["id"])
    await c.close()
    await c2.close()
    assert len(protocol.encode(protocol.ok(1, **reply))) <= max_frame
    assert 0 < snap["scrollback_lines"] < 3000
    assert snap["data"].rstrip().endswith(b"filled") or b"filled" in snap["data"]


async def test_killed_leader_stays_unreaped_until_the_escalation_settles(daemon_factory: Any) -> None:
    """The SIGKILL after the grace goes to the session's process group by the leader's pid. Reaping the leader
    at once let that pid (and so that group id) be reused by someone else before the escalation; the leader is
    now kept a zombie (waitid WNOWAIT) until then, and the exit is still reported at once."""
    d = daemon_factory(env={"RUST_PTY_KILL_GRACE_MS": "1500"})
    c = await d.client()
    s = await c.create(shell="/bin/sh", args=["-c", "sleep 60; true"], attach=True)
    pid = s["pid"]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await c.kill(s["id"])
    ev = await c.next_event("exit", timeout=10)
    assert ev["signal"] == signal.SIGHUP
    assert time.monotonic() - t0 < 1.4, "the exit waited for the grace"
    with open(f"/proc/{pid}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    assert state == "Z", "the leader was reaped before the escalation settled"
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await c.close()
    assert not os.path.exists(f"/proc/{pid}"), "the leader was never reaped"
