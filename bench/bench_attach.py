"""Attach time with a full history: a session (80x24, RUST_PTY_SCROLLBACK_LINES=10000) has printed 10,500 full
80-column lines (a quarter with colours) and keeps running; a second connection attaches with snapshot=true,
`--n` times (detach in between). Measured: request sent -> `ok` with its snapshot received and decoded by the client
(p50, p99 of all but the first; the first attach after the output is reported on its own, as `first_ms`: the
emulator's first snapshot of a terminal is much slower), the snapshot's `data` size and the whole frame's size.

Reference, same run: tmux (history-limit 10000) `capture-pane -p -e -J -S -10000`, the command a tmux-based app runs
to fetch history with attributes: time to the full output (includes starting the tmux client process), and its
size. Not the same operation (tmux has no snapshot that restores modes/cursor/alternate screen), so it is a
reference, not a target.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import workloads

from vibest_pty import protocol

LINES = 10_500
MARK = "__FILLED__"


def fill_session(c: common.RawPeer, path: str, cols: int = 80, rows: int = 24) -> int:
    """Create a session that cats `path`, prints a mark and waits (cat); returns its id once the mark was seen."""
    sid = c.create(shell="/bin/sh", args=["-c", f"cat '{path}'; printf '{MARK}'; exec cat"], cols=cols, rows=rows,
                   attach=True)["id"]
    common.wait_output(c, sid, MARK.encode(), timeout=120)
    c.request("detach", session=sid)
    c.events.clear()
    return sid


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="10 attaches")
    ap.add_argument("--no-tmux", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 10)
    tmux = None if args.no_tmux else common.ensure_tmux()
    work = tempfile.mkdtemp(prefix="vpb-at-")
    path = os.path.join(work, "history.txt")
    with open(path, "wb") as f:
        f.write(workloads.scrollback_lines(LINES))
    res: dict[str, Any] = {"lines_written": LINES, "n": args.n}
    try:
        with common.new_daemon({"RUST_PTY_SCROLLBACK_LINES": "10000"}) as d:
            c = common.client(d)
            sid = fill_session(c, path)
            c2 = common.client(d)
            times = []
            snap_size = frame_size = 0
            snap_lines = 0
            for _ in range(args.n):
                t0 = time.perf_counter()
                msg = c2.reply(c2.send_request("attach", session=sid, snapshot=True))
                times.append(time.perf_counter() - t0)
                if msg["type"] != "ok":
                    raise RuntimeError(msg)
                frame_size = len(protocol.encode(msg))  # the same bytes: msgpack packs a map one way
                snap_size = len(msg["snapshot"]["data"])
                snap_lines = msg["snapshot"]["scrollback_lines"]
                c2.request("detach", session=sid)
            ms = [t * 1e3 for t in times[1:]] or [times[0] * 1e3]
            res["daemon"] = {"first_ms": times[0] * 1e3,
                             "p50_ms": common.pct(ms, 50), "p99_ms": common.pct(ms, 99), "snapshot_bytes": snap_size,
                             "frame_bytes": frame_size, "scrollback_lines": snap_lines}
            c.close()
            c2.close()
        if tmux:
            with common.Tmux(history=10000) as t:
                t.cmd("new-session", "-d", "-s", "h", "-x", "80", "-y", "24",
                      f"cat '{path}'; printf '{MARK}'; exec cat")
                deadline = time.time() + 60
                while MARK not in t.cmd("capture-pane", "-p", "-t", "h"):
                    if time.time() > deadline:
                        raise RuntimeError("tmux did not fill")
                    time.sleep(0.05)
                tt = []
                size = 0
                for _ in range(args.n):
                    t0 = time.perf_counter()
                    out = subprocess.run(["tmux", "-S", t.sock, "capture-pane", "-p", "-e", "-J", "-S", "-10000",
                                          "-t", "h"], capture_output=True, check=True).stdout
                    tt.append(time.perf_counter() - t0)
                    size = len(out)
                ms = [x * 1e3 for x in tt]
                res["tmux_capture"] = {"p50_ms": common.pct(ms, 50), "p99_ms": common.pct(ms, 99), "bytes": size}
                res["daemon_p50_vs_tmux_capture"] = res["daemon"]["p50_ms"] / res["tmux_capture"]["p50_ms"]
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    dd = res["daemon"]
    print(f"  attach first={dd['first_ms']:.1f}ms p50={dd['p50_ms']:.2f}ms p99={dd['p99_ms']:.2f}ms snapshot={dd['snapshot_bytes'] / 1e6:.2f}MB "
          f"({dd['scrollback_lines']} lines)"
          + (f"; tmux capture-pane p50={res['tmux_capture']['p50_ms']:.2f}ms "
             f"{res['tmux_capture']['bytes'] / 1e6:.2f}MB" if "tmux_capture" in res else ""), flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
