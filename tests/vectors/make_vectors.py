"""Writes tests/vectors/frames.json from the cases below with the Python codec. Run it only when adding a case:
the file is the contract, and every implementation's tests check it byte for byte.

Format: {"frames": [{"name", "hex" (the whole frame, length prefix included), "value"}], "invalid": [...]}.
JSON cannot hold MessagePack bin, so a bin value is written {"$bin": "<hex>"}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibest_pty import protocol

B = bytes

CASES: list[tuple[str, dict[str, Any]]] = [
    ("hello", {"type": "hello", "id": 1, "protocol": 1, "client": "sdk"}),
    ("hello_ok", {"type": "ok", "id": 1, "protocol": 1, "version": "0.1.0", "pid": 4242,
                  "features": ["snapshot", "replay"]}),
    ("create", {"type": "create", "id": 2, "options": {"shell": "/bin/sh", "args": ["-c", "echo hi"],
                "cwd": "/tmp", "env": {"FOO": "bar"}, "cols": 120, "rows": 40, "name": "build",
                "tags": {"worktree": "wt-1"}, "attach": True}}),
    ("attach_since", {"type": "attach", "id": 3, "session": 7, "snapshot": True, "since": 1048576}),
    ("input_bin", {"type": "input", "session": 7, "data": B([0x03, 0x1B, 0x5B, 0x41, 0xFF, 0x00])}),
    ("input_str", {"type": "input", "id": 4, "session": 7, "data": "ls -la\n"}),
    ("resize", {"type": "resize", "id": 5, "session": 7, "cols": 65535, "rows": 1}),
    ("signal_name", {"type": "signal", "id": 6, "session": 4294967295, "signal": "SIGINT"}),
    ("signal_number", {"type": "signal", "id": 7, "session": 1, "signal": 15}),
    ("kill", {"type": "kill", "id": 8, "session": 1}),
    ("ack", {"type": "ack", "session": 1, "count": 3}),
    ("list", {"type": "list", "id": 9}),
    ("output", {"type": "output", "session": 7, "data": "héllo 世界 🎉\r\n".encode(), "offset": 0}),
    ("output_large_offset", {"type": "output", "session": 7, "data": B(range(256)), "offset": 4294967296}),
    ("output_empty_big_id", {"type": "ok", "id": 9007199254740991}),
    ("exit_code", {"type": "exit", "session": 7, "code": 3, "signal": None}),
    ("exit_signal", {"type": "exit", "session": 7, "code": None, "signal": 9}),
    ("backpressure", {"type": "backpressure_warning", "session": 7, "queue_size": 12289, "level": "yellow"}),
    ("error", {"type": "error", "id": None, "code": "session_not_found", "message": "no session 99",
               "request": "input", "session": 99}),
    ("shutdown", {"type": "shutdown", "reason": "daemon stopping"}),
    ("snapshot_ok", {"type": "ok", "id": 10, "snapshot": {"data": b"\x1b[1mhi\x1b[0m", "offset": 12, "cols": 80,
                     "rows": 24, "cursor": [2, 0], "cursor_visible": True, "alt_screen": False,
                     "modes": {"bracketed_paste": True}, "title": "t", "cwd": "/home/u", "scrollback_lines": 0}}),
    ("negative_and_float", {"type": "ok", "id": 11, "n": -1, "big_neg": -2147483649, "f": 1.5}),
]

# Frames every decoder must reject, with the error a daemon answers.
INVALID: list[tuple[str, str, str]] = [
    ("zero_length", "00000000", "bad_frame"),
    ("oversized_length", "7fffffff", "bad_frame"),
    ("not_a_map", "0000000193", "bad_message"),  # fixarray of 3... truncated -> invalid msgpack
    ("array_payload", "00000003920102", "bad_message"),
    ("trailing_bytes", "0000000380c0c0", "bad_message"),
    ("str_payload_with_trailing_byte", "00000004a2c3284f", "bad_message"),
]


def to_json(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"$bin": v.hex()}
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [to_json(x) for x in v]
    return v


def from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"$bin"}:
            return bytes.fromhex(v["$bin"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def main() -> None:
    out = {
        "frames": [{"name": n, "hex": protocol.encode(v).hex(), "value": to_json(v)} for n, v in CASES],
        "invalid": [{"name": n, "hex": h, "error": e} for n, h, e in INVALID],
    }
    path = Path(__file__).with_name("frames.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path} ({len(CASES)} frames, {len(INVALID)} invalid)")


if __name__ == "__main__":
    main()
