"""Isolation: keystroke echo in one session while another session floods.

One daemon. Client B is attached to session E (`stty raw -echo; exec cat`) and measures echo round trips as in
bench_echo.py. Phase 1 (baseline): nothing else runs. Phase 2: client A (its socket receive buffer set small) creates
session F running `yes` with attach=true and never reads its socket; once F has flooded for a second, B measures
again. Reported: echo p50/p99 of both phases and their ratio, F's output rate during phase 2 (stats bytes_out: the
daemon keeps reading the flooding PTY, the slow client does not pause it) and the daemon's CPU share. Control, same phases: the direct PTY echo of bench_echo.py (no daemon), which shows what the
flood costs the machine itself (2 cores: `yes` and the kernel's PTY work take one).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from bench_echo import CMD, daemon_echo_loop, echo_direct, summarize


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="500 keys")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.keys = min(args.keys, 500)
    res: dict[str, Any] = {"keys": args.keys}
    with common.new_daemon() as d:
        b = common.client(d)
        sid = b.create(shell="/bin/sh", args=["-c", CMD], attach=True)["id"]
        res["baseline_direct"] = summarize(echo_direct(args.keys))
        res["baseline"] = summarize(daemon_echo_loop(b, sid, args.keys))
        a = common.client(d, rcvbuf=4096)
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.send({"type": "create", "id": 1, "options": {"shell": "yes", "attach": True}})
        time.sleep(1.0)
        probe = common.client(d)
        s0 = probe.request("stats")
        cpu0, t0 = common.cpu_seconds(d.pid), time.perf_counter()
        emu0 = common.cpu_with_emulators(d) - cpu0
        res["flood"] = summarize(daemon_echo_loop(b, sid, args.keys))
        cpu1, t1 = common.cpu_seconds(d.pid), time.perf_counter()
        emu1 = common.cpu_with_emulators(d) - cpu1
        s1 = probe.request("stats")
        res["flood_mbps"] = (s1["bytes_out"] - s0["bytes_out"]) / (t1 - t0) / 1e6
        res["daemon_cpu_share"] = (cpu1 - cpu0) / (t1 - t0)  # the daemon process (the loop) only
        res["emulators_cpu_share"] = (emu1 - emu0) / (t1 - t0)  # its emulator processes, parsing the flood
        res["slow_client_queues"] = [q for q in s1["queues"] if q.get("session") != sid]
        res["flood_direct"] = summarize(echo_direct(args.keys))  # the machine's share: CPU taken by `yes`
        res["p50_ratio"] = res["flood"]["p50_ms"] / res["baseline"]["p50_ms"]
        res["p99_ratio"] = res["flood"]["p99_ms"] / res["baseline"]["p99_ms"]
        a.close()
        b.close()
        probe.close()
    print(f"  isolation: echo p50 {res['baseline']['p50_ms']:.3f} -> {res['flood']['p50_ms']:.3f} ms, "
          f"p99 {res['baseline']['p99_ms']:.3f} -> {res['flood']['p99_ms']:.3f} ms while `yes` floods at "
          f"{res['flood_mbps']:.1f} MB/s to a client that never reads (daemon CPU {res['daemon_cpu_share']:.0%})",
          flush=True)
    print(f"  isolation control (direct PTY echo, no daemon): p50 {res['baseline_direct']['p50_ms']:.3f} -> "
          f"{res['flood_direct']['p50_ms']:.3f} ms, p99 {res['baseline_direct']['p99_ms']:.3f} -> "
          f"{res['flood_direct']['p99_ms']:.3f} ms", flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
