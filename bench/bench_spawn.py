"""Start-up time and spawn latency under a large heap.

startup: from starting `python -m vibest_pty` (what vibest-pty-daemon runs) to the first `hello` answered on its
         socket (the benchmark polls connect+hello every 2 ms), median of `--starts`. Reference: the same for a bare
         `python -c pass` start (the interpreter's share), so the ratio is the daemon's own start-up cost.
spawn:   `create` round trips (a session running `cat`, killed after) on an empty daemon, then again after the
         daemon's heap was grown to `--heap-mb` (1024; --quick 128) of RSS by filling 200-column sessions with
         history (RUST_PTY_SCROLLBACK_LINES=100000). A fork()-based spawn would slow down with the heap (page
         tables copied); posix_spawn/vfork should not. p50/p99 of `--n` creates each, and the ratio.
"""

from __future__ import annotations

import argparse
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

MB = 1 << 20


def spawn_latencies(c: common.RawPeer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sid = c.create(shell="/bin/cat")["id"]
        out.append(time.perf_counter() - t0)
        c.request("kill", session=sid)
    time.sleep(0.2)
    for s in c.request("list")["sessions"]:  # drop the exited records
        if not s["running"]:
            c.request("kill", session=s["id"])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--starts", type=int, default=7)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--heap-mb", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="3 starts, 30 creates, 128 MB heap")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.starts, args.n, args.heap_mb = min(args.starts, 3), min(args.n, 30), min(args.heap_mb, 128)
    res: dict[str, Any] = {}
    starts, bare = [], []
    for _ in range(args.starts):
        d = common.new_daemon()
        try:
            d.start()
            starts.append(d.start_s)
        finally:
            d.stop()
        t0 = time.perf_counter()
        subprocess.run([common.PYTHON, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
    res["startup"] = {"p50_ms": common.med(starts) * 1e3, "max_ms": max(starts) * 1e3,
                      "python_bare_ms": common.med(bare) * 1e3,
                      "ratio_vs_bare_python": common.med(starts) / common.med(bare)}

    work = tempfile.mkdtemp(prefix="vpb-sp-")
    path = os.path.join(work, "wide.txt")
    with open(path, "wb") as f:
        f.write(workloads.scrollback_lines(20_000, cols=200))
    try:
        env = {"RUST_PTY_SCROLLBACK_LINES": "100000", "RUST_PTY_MAX_SESSIONS": "1000"}
        with common.new_daemon(env) as d:
            c = common.client(d)
            spawn_latencies(c, 5)  # warm-up: the first creates pay for imports and caches
            empty = spawn_latencies(c, args.n)
            rss0 = common.rss_bytes(d.pid)
            fill_sessions = 0
            t_fill = time.perf_counter()
            while common.rss_bytes(d.pid) < args.heap_mb * MB and fill_sessions < 900:
                # 5 rounds of 20,000 lines = 100,000 lines of history per session
                sid = c.create(shell="/bin/sh", args=["-c", f"for i in 1 2 3 4 5; do cat '{path}'; done; "
                                                      "printf __FULL__; exec cat"], cols=200, rows=50,
                               attach=True)["id"]
                common.wait_output(c, sid, b"__FULL__", timeout=600)
                c.request("detach", session=sid)
                c.events.clear()
                fill_sessions += 1
            rss1 = common.rss_bytes(d.pid)
            big = spawn_latencies(c, args.n)
            c.close()
        res["spawn"] = {
            "empty": {"p50_ms": common.pct(empty, 50) * 1e3, "p99_ms": common.pct(empty, 99) * 1e3,
                      "rss_mb": rss0 / MB},
            "big_heap": {"p50_ms": common.pct(big, 50) * 1e3, "p99_ms": common.pct(big, 99) * 1e3,
                         "rss_mb": rss1 / MB, "sessions": fill_sessions,
                         "fill_s": time.perf_counter() - t_fill},
        }
        res["spawn"]["p50_ratio"] = res["spawn"]["big_heap"]["p50_ms"] / res["spawn"]["empty"]["p50_ms"]
        res["spawn"]["p99_ratio"] = res["spawn"]["big_heap"]["p99_ms"] / res["spawn"]["empty"]["p99_ms"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = res["startup"]
    print(f"  startup: {s['p50_ms']:.0f} ms to hello (bare python {s['python_bare_ms']:.0f} ms, "
          f"{s['ratio_vs_bare_python']:.1f}x)", flush=True)
    sp = res["spawn"]
    print(f"  spawn: empty p50={sp['empty']['p50_ms']:.2f} p99={sp['empty']['p99_ms']:.2f} ms; with "
          f"{sp['big_heap']['rss_mb']:.0f} MB RSS p50={sp['big_heap']['p50_ms']:.2f} p99={sp['big_heap']['p99_ms']:.2f}"
          f" ms (x{sp['p50_ratio']:.2f} / x{sp['p99_ratio']:.2f})", flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
