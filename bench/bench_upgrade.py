"""In-place upgrade pause (issue #14) as a client sees it, and the daemon's memory and fds before/after.

pause: a client attached to a ticker session (`printf` every 2 ms) sends `upgrade` (no command: the same code
       re-executed); the pause is the gap from the last output frame received before the `ok` to the first one
       after it (the ticker's output meanwhile waits in the PTY). Also the daemon's own `pause_ms` (its quiesce to
       the end of its restore, CLOCK_MONOTONIC across the exec). Scenarios: 1 session (the ticker), and 100
       sessions with 10,000 lines of scrollback each plus the ticker. `--runs` upgrades each, median and max.
memory/fds: RSS of the daemon plus its emulator processes, and the daemon's open fds, before the first and after
       the last upgrade (they should be equal: the emulators keep running, nothing is re-made).
floor: the same run's wall time of `python -c 'import asyncio, uvloop, msgpack, logging'` (median of 7): what any
       re-executed asyncio daemon pays before its first line runs; the pause is also given as a ratio to it (the
       box is shared and its load varies, so the ratio travels better than the milliseconds).
Targets: < 50 ms (1 session), < 300 ms (100 x 10k lines).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

TICK = "while :; do printf 't\\n'; sleep 0.002; done"


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def total_rss(d: Any) -> int:
    rss = common.rss_bytes(d.pid)
    for pid in common.emulator_pids(d):
        try:
            rss += common.rss_bytes(pid)
        except OSError:
            pass
    return rss


def settled_rss(d: Any, timeout: float = 15.0) -> int:
    """RSS once it stops moving (the emulators parse lazily: a session's history lands after its output did)."""
    last = total_rss(d)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = total_rss(d)
        if abs(now - last) <= last // 200:  # within 0.5 %
            return now
        last = now
    return last


def one_upgrade(c: Any, sid: int) -> tuple[float, float]:
    """(client-seen gap in ms, daemon's pause_ms) of one upgrade."""
    last_before = time.perf_counter()
    rid = c.send_request("upgrade")
    ok = None
    first_after = None
    while first_after is None:
        m = c.next_message()
        now = time.perf_counter()
        if m.get("id") == rid and m.get("type") in ("ok", "error"):
            if m["type"] == "error":
                raise RuntimeError(f"upgrade failed: {m}")
            ok = m
        elif m.get("type") == "output" and m.get("session") == sid:
            if ok is None:
                last_before = now
            else:
                first_after = now
    assert ok is not None
    return (first_after - last_before) * 1000, float(ok["pause_ms"])


def floor_ms(n: int = 7) -> float:
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import asyncio, uvloop, msgpack, logging"], check=True)
        xs.append((time.perf_counter() - t0) * 1000)
    return common.med(xs)


def scenario(sessions: int, lines: int, runs: int) -> dict[str, Any]:
    d = common.new_daemon({"RUST_PTY_SCROLLBACK_LINES": str(max(lines, 1000)), "RUST_PTY_MAX_SESSIONS": "1000"})
    d.start()
    try:
        with common.client(d) as c:
            for i in range(sessions):
                s = c.create(shell="/bin/sh", args=["-c", f"seq 1 {lines}; echo filled-{i}; exec sleep 100000"],
                             attach=True)
                common.wait_output(c, s["id"], f"filled-{i}".encode())
                c.request("detach", session=s["id"])
            tick = c.create(shell="/bin/sh", args=["-c", TICK], attach=True)
            common.wait_output(c, tick["id"], b"t\r\n")
            time.sleep(0.5)
            fds0, rss0 = fds(d.pid), settled_rss(d)  # fds first: total_rss opens a connection of its own
            gaps, pauses = [], []
            for _ in range(runs):
                gap, pause = one_upgrade(c, tick["id"])
                gaps.append(gap)
                pauses.append(pause)
                time.sleep(0.3)
            time.sleep(0.5)
            fds1, rss1 = fds(d.pid), settled_rss(d)
            assert c.request("hello", protocol=1)["pid"] == d.pid
    finally:
        d.stop()
    return {"sessions": sessions + 1, "lines": lines, "runs": runs,
            "gap_ms": {"p50": common.med(gaps), "max": max(gaps)},
            "pause_ms": {"p50": common.med(pauses), "max": max(pauses)},
            "rss_mb": [rss0 / 2**20, rss1 / 2**20], "fds": [fds0, fds1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="3 runs, 20 sessions")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.sessions = min(args.runs, 3), min(args.sessions, 20)
    res: dict[str, Any] = {"one": scenario(0, 0, args.runs),
                           "many": scenario(args.sessions, args.lines, args.runs), "floor_ms": floor_ms()}
    print(f"floor (python -c 'import asyncio, uvloop, msgpack, logging'): {res['floor_ms']:.0f} ms")
    for name in ("one", "many"):
        r = res[name]
        print(f"upgrade {name}: {r['sessions']} sessions x {r['lines']} lines: client-seen gap p50 "
              f"{r['gap_ms']['p50']:.0f} ms (max {r['gap_ms']['max']:.0f}), daemon pause p50 "
              f"{r['pause_ms']['p50']:.0f} ms; RSS {r['rss_mb'][0]:.1f} -> {r['rss_mb'][1]:.1f} MB, "
              f"fds {r['fds'][0]} -> {r['fds'][1]}; {r['gap_ms']['p50'] / res['floor_ms']:.2f} x the floor")
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
