"""Output throughput: a program `cat`s a pre-generated file to its terminal; how fast does it get through?

Measured, for each workload (see workloads.py), interleaved, `--runs` times each, median reported:

- raw:         the physical limit. A C program (compiled now) forkpty()s `cat FILE` and read()s the master in 64 KiB
               reads until EIO. Time: fork to last byte. No terminal emulation at all.
- daemon:      vibest-pty-daemon with one attached client. The session runs `sh -c 'read go; exec cat FILE'`,
               created with attach=true; the clock starts when the client sends the "go" line and stops when the
               client has received the session's `exit` event, which the daemon sends only after every output byte
               (so: PTY read + emulator + replay + framing + socket + the client's own msgpack decoding).
- tmux:        tmux 3.x (private server, -f with history-limit = the daemon's scrollback, status off) with one
               normal client attached in a PTY that the benchmark drains. The pane runs
               `tmux wait-for go; cat FILE; tmux wait-for -S done`; the clock runs from `wait-for -S go` to the
               return of `wait-for done`: tmux has read and parsed every byte (cat has exited after writing the
               last byte into the PTY, whose buffer tmux empties before it handles the next command).
               tmux's redraw to the client is rate-limited by design, so it renders only some frames.
- tmux_detached: the same without any attached client (tmux's parser and grid alone).

Throughput is the file's size / time (MB = 10^6 bytes). Ratios are against raw and tmux of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import workloads


def run_raw(exe: str, path: str, cols: int, rows: int) -> float:
    out = subprocess.run([exe, str(cols), str(rows), path], capture_output=True, text=True, check=True).stdout
    return float(out.split()[1])


def run_daemon(d: common.Daemon, path: str, cols: int, rows: int) -> float:
    c = common.client(d)
    try:
        info = c.create(shell="/bin/sh", args=["-c", f"read go; exec cat '{path}'"], cols=cols, rows=rows,
                        attach=True)
        sid = info["id"]
        time.sleep(0.05)  # let sh reach its read
        t0 = time.perf_counter()
        c.send({"type": "input", "session": sid, "data": b"\n"})
        for ev in c.events:
            if ev.get("type") == "exit":
                break
        else:
            done = False
            while not done:
                if not c.fill():
                    raise ConnectionError("the daemon closed the connection")
                for msg in c.frames():
                    if msg.get("type") == "exit" and msg.get("session") == sid:
                        done = True
        dt = time.perf_counter() - t0
        c.request("kill", session=sid)  # removes the exited record
        return dt
    finally:
        c.close()


def run_tmux(path: str, cols: int, rows: int, history: int, attached: bool) -> float:
    with common.Tmux(history=history) as t:
        t.cmd("new-session", "-d", "-s", "w", "-x", str(cols), "-y", str(rows),
              f"tmux wait-for go; cat '{path}'; tmux wait-for -S done")
        pid = fd = -1
        if attached:
            pid, fd = common.tmux_attach_pty(t, cols, rows, "w")
            common.drain_fd_thread(fd)
            deadline = time.time() + 10
            while not t.cmd("list-clients", check=False).strip():
                if time.time() > deadline:
                    raise RuntimeError("tmux client did not attach")
                time.sleep(0.01)
            time.sleep(0.1)
        try:
            t0 = time.perf_counter()
            t.cmd("wait-for", "-S", "go")
            t.cmd("wait-for", "done")
            return time.perf_counter() - t0
        finally:
            if attached:
                common.kill_wait(pid)
                os.close(fd)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(workloads.WORKLOADS))
    ap.add_argument("--no-tmux", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 MB per workload, 3 runs")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.size_mb = min(args.size_mb, 2.0)
    size = int(args.size_mb * 1e6)
    tmux = None if args.no_tmux else common.ensure_tmux()
    work = tempfile.mkdtemp(prefix="vpb-tp-")
    scrollback = 1000
    results: dict[str, Any] = {"size_bytes": {}, "runs": args.runs, "workloads": {}}
    try:
        exe = common.build_rawpty(work)
        with common.new_daemon({"RUST_PTY_SCROLLBACK_LINES": str(scrollback)}) as d:
            for name in args.workloads.split(","):
                _, cols, rows = workloads.WORKLOADS[name]
                path = os.path.join(work, f"{name}.bin")
                nbytes = workloads.write_file(name, size, path)
                times: dict[str, list[float]] = {"raw": [], "daemon": [], "tmux": [], "tmux_detached": []}
                for _ in range(args.runs):
                    if exe:
                        times["raw"].append(run_raw(exe, path, cols, rows))
                    times["daemon"].append(run_daemon(d, path, cols, rows))
                    if tmux:
                        times["tmux"].append(run_tmux(path, cols, rows, scrollback, attached=True))
                        times["tmux_detached"].append(run_tmux(path, cols, rows, scrollback, attached=False))
                mbps = {k: nbytes / common.med(v) / 1e6 for k, v in times.items() if v}
                r: dict[str, Any] = {"bytes": nbytes, "cols": cols, "rows": rows, "mbps": mbps,
                                     "times_s": times}
                if "raw" in mbps:
                    r["daemon_vs_raw"] = mbps["daemon"] / mbps["raw"]
                    if "tmux" in mbps:
                        r["tmux_vs_raw"] = mbps["tmux"] / mbps["raw"]
                if "tmux" in mbps:
                    r["daemon_vs_tmux"] = mbps["daemon"] / mbps["tmux"]
                    r["daemon_vs_tmux_detached"] = mbps["daemon"] / mbps["tmux_detached"]
                results["workloads"][name] = r
                os.unlink(path)
                print(f"  {name:11} " + "  ".join(f"{k}={v:7.1f}MB/s" for k, v in mbps.items())
                      + (f"  daemon/raw={r.get('daemon_vs_raw', float('nan')):.2f}"
                         f"  daemon/tmux={r.get('daemon_vs_tmux', float('nan')):.2f}"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
