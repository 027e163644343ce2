"""Scale: 1000 sessions and 100 connected clients on one daemon.

The benchmark raises its own RLIMIT_NOFILE soft limit (inherited by the daemon) and the daemon's
RUST_PTY_MAX_SESSIONS / RUST_PTY_MAX_CONNECTIONS. Measured:
- create: `--sessions` creates (each `cat`) in a row from one client: total time, per-create p50/p99;
- RSS of the daemon after that, and per session;
- 100 clients connected, each attached to sessions/100 of them (every session has a subscriber);
- echo round trip p50/p99 in one extra session (as bench_echo.py) while, in the background, every client sends a key
  to one of its sessions every 100 ms (1000 keys/s over the daemon) and drains its socket; compared with the same
  measurement on an otherwise empty daemon in the same run.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from bench_echo import CMD, daemon_echo_loop, summarize

MB = 1 << 20


def background(clients: list[common.RawPeer], targets: list[int], stop: threading.Event) -> None:
    """Every 100 ms each client sends one key to its session; all sockets are drained."""
    period = 0.1
    n = len(clients)
    next_t = time.perf_counter()
    i = 0
    socks = {c.sock.fileno(): c for c in clients}
    while not stop.is_set():
        now = time.perf_counter()
        while now >= next_t:
            c = clients[i % n]
            c.sock.sendall(_input_frame(targets[i % n]))
            i += 1
            next_t += period / n
        r, _, _ = select.select(list(socks), [], [], max(0.0, min(0.005, next_t - now)))
        for fd in r:
            try:
                socks[fd].sock.recv(1 << 16)
            except BlockingIOError:
                pass


def _input_frame(sid: int) -> bytes:
    import msgpack

    body = msgpack.packb({"type": "input", "session": sid, "data": b"k"}, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="200 sessions, 20 clients, 300 keys")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.sessions, args.clients, args.keys = min(args.sessions, 200), min(args.clients, 20), min(args.keys, 300)
    nofile = common.raise_nofile(max(65536, args.sessions * 4 + args.clients * 2 + 256))
    env = {"RUST_PTY_MAX_SESSIONS": str(args.sessions + 10), "RUST_PTY_MAX_CONNECTIONS": str(args.clients + 10)}
    res: dict[str, Any] = {"sessions": args.sessions, "clients": args.clients, "nofile": nofile}
    with common.new_daemon(env) as d:
        c0 = common.client(d)
        esid = c0.create(shell="/bin/sh", args=["-c", CMD], attach=True)["id"]
        res["echo_empty"] = summarize(daemon_echo_loop(c0, esid, args.keys))
        rss0 = common.rss_bytes(d.pid)
        lat = []
        sids = []
        t0 = time.perf_counter()
        for _ in range(args.sessions):
            t1 = time.perf_counter()
            sids.append(c0.create(shell="/bin/cat")["id"])
            lat.append(time.perf_counter() - t1)
        total = time.perf_counter() - t0
        time.sleep(0.5)
        rss1 = common.rss_bytes(d.pid)
        res["create"] = {"total_s": total, "p50_ms": common.pct(lat, 50) * 1e3, "p99_ms": common.pct(lat, 99) * 1e3,
                         "first100_p50_ms": common.pct(lat[:100], 50) * 1e3,
                         "last100_p50_ms": common.pct(lat[-100:], 50) * 1e3}
        clients = [common.client(d) for _ in range(args.clients)]
        per = max(1, len(sids) // len(clients))
        targets = []
        for i, cl in enumerate(clients):
            mine = sids[i * per : (i + 1) * per] or sids[-1:]
            for s in mine:
                cl.request("attach", session=s, snapshot=True)
            targets.append(mine[0])
            cl.sock.setblocking(False)
        rss2 = common.rss_bytes(d.pid)
        res["rss"] = {"empty_mb": rss0 / MB, "with_sessions_mb": rss1 / MB, "per_session_mb": (rss1 - rss0) /
                      args.sessions / MB, "with_clients_mb": rss2 / MB}
        stop = threading.Event()
        th = threading.Thread(target=background, args=(clients, targets, stop), daemon=True)
        th.start()
        time.sleep(0.5)
        cpu0, w0 = common.cpu_seconds(d.pid), time.perf_counter()
        res["echo_loaded"] = summarize(daemon_echo_loop(c0, esid, args.keys))
        res["daemon_cpu_share_loaded"] = (common.cpu_seconds(d.pid) - cpu0) / (time.perf_counter() - w0)
        stop.set()
        th.join()
        res["echo_p99_ratio"] = res["echo_loaded"]["p99_ms"] / res["echo_empty"]["p99_ms"]
        res["echo_p50_ratio"] = res["echo_loaded"]["p50_ms"] / res["echo_empty"]["p50_ms"]
        for cl in clients:
            cl.close()
        c0.close()
    cr, r = res["create"], res["rss"]
    print(f"  scale: {args.sessions} creates in {cr['total_s']:.2f} s (p50 {cr['p50_ms']:.2f} ms, p99 "
          f"{cr['p99_ms']:.2f} ms; first/last 100 p50 {cr['first100_p50_ms']:.2f}/{cr['last100_p50_ms']:.2f} ms), "
          f"RSS {r['with_clients_mb']:.0f} MB ({r['per_session_mb'] * 1024:.0f} KiB/session)", flush=True)
    print(f"  scale: echo p50/p99 empty {res['echo_empty']['p50_ms']:.3f}/{res['echo_empty']['p99_ms']:.3f} ms, "
          f"loaded ({args.clients} clients, {args.clients * 10} keys/s) {res['echo_loaded']['p50_ms']:.3f}/"
          f"{res['echo_loaded']['p99_ms']:.3f} ms", flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
