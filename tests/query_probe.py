"""Probe: ask the terminal every query a session answers, record what comes back.

Run inside a session: `python query_probe.py OUT.json [SPLIT]`. The terminal is put in raw mode, the screen cleared
and the cursor put at row 3, column 5. Each query is written followed by DSR (`CSI 5 n`, answered `CSI 0 n`) as a
sentinel, and the answers are read until the sentinel's answer (3 s at most); with SPLIT the query is written one
byte per write, 20 ms apart (a query split across PTY reads). Then anything arriving in the next 0.5 s is recorded
as `late` (a second answerer). OUT gets {"replies": {name: hex of the bytes before the sentinel's answer}, "late":
hex, "ms": {name: milliseconds to the sentinel's answer}}; "done" is printed last.
"""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import time
import tty

SENTINEL_Q = b"\x1b[5n"
SENTINEL_A = b"\x1b[0n"


def hexs(s: str) -> str:
    return s.encode().hex()


QUERIES: list[tuple[str, bytes]] = [
    ("da1", b"\x1b[c"),
    ("da2", b"\x1b[>c"),
    ("cpr", b"\x1b[6n"),
    ("decxcpr", b"\x1b[?6n"),
    ("dsr", b"\x1b[5n"),
    ("decrqm", b"\x1b[?2004$p"),
    ("decrqm_ansi", b"\x1b[4$p"),
    ("decrqss", b"\x1bP$qm\x1b\\"),
    ("xtversion", b"\x1b[>q"),
    ("osc10", b"\x1b]10;?\x1b\\"),
    ("osc11", b"\x1b]11;?\x07"),
    ("osc12", b"\x1b]12;?\x1b\\"),
    ("osc4", b"\x1b]4;1;?\x1b\\"),
    ("kitty", b"\x1b[?u"),
    ("size14", b"\x1b[14t"),
    ("size16", b"\x1b[16t"),
    ("size18", b"\x1b[18t"),
    ("xtgettcap", b"\x1bP+q" + hexs("TN").encode() + b"\x1b\\"),
    ("color_scheme", b"\x1b[?996n"),
]


def read_until(fd: int, buf: bytearray, count: int, deadline: float) -> None:
    while buf.count(SENTINEL_A) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return
        buf += os.read(fd, 4096)


def main() -> None:
    out_path = sys.argv[1]
    split = len(sys.argv) > 2 and sys.argv[2] == "split"
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    replies: dict[str, str] = {}
    ms: dict[str, float] = {}
    try:
        os.write(1, b"\x1b[2J\x1b[3;5H")
        pending = bytearray()
        for name, q in QUERIES:
            t0 = time.monotonic()
            if split:
                for b in q:
                    os.write(1, bytes([b]))
                    time.sleep(0.02)
            else:
                os.write(1, q)
            os.write(1, SENTINEL_Q)
            want = 2 if q == SENTINEL_Q else 1
            buf = pending
            read_until(fd, buf, want, time.monotonic() + 3)
            ms[name] = round((time.monotonic() - t0) * 1000, 1)
            # Split after the `want`-th sentinel answer: the rest belongs to later queries (or is a late answer).
            cut = -1
            for _ in range(want):
                cut = buf.find(SENTINEL_A, cut + 1)
                if cut < 0:
                    break
            if cut < 0:
                replies[name] = bytes(buf).hex() + "|timeout"
                pending = bytearray()
                continue
            replies[name] = bytes(buf[:cut]).hex()  # for dsr itself: its own answer, before the sentinel's
            pending = bytearray(buf[cut + len(SENTINEL_A) :])
        late = bytearray(pending)
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
            late += os.read(fd, 4096)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    with open(out_path + ".tmp", "w") as f:
        json.dump({"replies": replies, "late": bytes(late).hex(), "ms": ms}, f)
    os.rename(out_path + ".tmp", out_path)
    print("\r\ndone")


if __name__ == "__main__":
    main()
