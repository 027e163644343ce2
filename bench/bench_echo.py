"""Keystroke echo round trip: send one key, wait until its echo comes back. p50/p99 over N keys (default 2000).

The program in the terminal is the same everywhere: `sh -c 'stty raw -echo; exec cat'`, so the echo is made by a
process (as with a shell's line editor), not by the kernel's line discipline. Keys cycle a-z; every 60 keys an
unmeasured carriage return keeps the cursor on one line. Keys are sent one at a time, each after the previous echo.

- direct: the benchmark holds the PTY master itself (Python os.write / select / os.read): the floor.
- daemon: a minimal blocking client (socket + msgpack C extension): `input` frame -> daemon -> PTY -> cat ->
          PTY -> daemon (emulator, framing) -> `output` frame -> client.
- tmux:   a normal tmux client attached in a PTY that the benchmark holds: key -> tmux client -> tmux server ->
          pane PTY -> cat -> tmux server -> redraw -> tmux client -> PTY -> benchmark.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

CMD = "stty raw -echo; exec cat"
KEYS = b"abcdefghijklmnopqrstuvwxyz"
WARMUP = 20  # keys sent first and not counted


def _read_until(fd: int, key: int, timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.perf_counter()))
        if not r:
            raise TimeoutError("no echo")
        if key in os.read(fd, 65536):
            return


def _drain(fd: int, quiet: float = 0.02) -> None:
    while select.select([fd], [], [], quiet)[0]:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def _fd_loop(fd: int, n: int) -> list[float]:
    # Readiness: the first echo proves `stty raw` is done.
    while True:
        os.write(fd, b"z")
        try:
            _read_until(fd, ord("z"), 0.5)
            break
        except TimeoutError:
            continue
    _drain(fd)
    lat = []
    for i in range(n + WARMUP):
        if i and i % 60 == 0:
            os.write(fd, b"\r")
            _drain(fd, 0.005)
        key = KEYS[i % 26]
        t0 = time.perf_counter()
        os.write(fd, bytes([key]))
        _read_until(fd, key)
        lat.append(time.perf_counter() - t0)
    return lat[WARMUP:]


def echo_direct(n: int) -> list[float]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", CMD])
    try:
        return _fd_loop(fd, n)
    finally:
        common.kill_wait(pid)
        os.close(fd)


def daemon_echo_loop(c: common.RawPeer, sid: int, n: int) -> list[float]:
    """Echo round trips on a session running CMD that `c` is attached to."""
    c.sock.settimeout(10)
    while True:  # readiness
        c.send({"type": "input", "session": sid, "data": b"z"})
        try:
            c.sock.settimeout(0.5)
            common.wait_output(c, sid, b"z", timeout=0.5)
            break
        except (TimeoutError, OSError):
            continue
    c.sock.settimeout(10)
    lat = []
    for i in range(n + WARMUP):
        if i and i % 60 == 0:
            c.send({"type": "input", "session": sid, "data": b"\r"})
            common.wait_output(c, sid, b"\r")
        key = KEYS[i % 26 : i % 26 + 1]
        t0 = time.perf_counter()
        c.send({"type": "input", "session": sid, "data": key})
        while True:
            msg = c.next_message()
            if msg.get("type") == "output" and msg.get("session") == sid and key in msg["data"]:
                break
        lat.append(time.perf_counter() - t0)
    c.sock.settimeout(None)
    return lat[WARMUP:]


def echo_daemon(d: common.Daemon, n: int) -> list[float]:
    c = common.client(d)
    try:
        sid = c.create(shell="/bin/sh", args=["-c", CMD], attach=True)["id"]
        lat = daemon_echo_loop(c, sid, n)
        c.request("kill", session=sid)
        return lat
    finally:
        c.close()


def echo_tmux(n: int) -> list[float]:
    with common.Tmux() as t:
        t.cmd("new-session", "-d", "-s", "e", "-x", "80", "-y", "24", CMD)
        pid, fd = common.tmux_attach_pty(t, 80, 24, "e")
        try:
            deadline = time.time() + 10
            while not t.cmd("list-clients", check=False).strip():
                if time.time() > deadline:
                    raise RuntimeError("tmux client did not attach")
                time.sleep(0.01)
            _drain(fd, 0.2)
            return _fd_loop(fd, n)
        finally:
            common.kill_wait(pid)
            os.close(fd)


def summarize(lat: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in lat]
    return {"p50_ms": common.pct(ms, 50), "p99_ms": common.pct(ms, 99), "max_ms": max(ms), "n": len(ms)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3, help="each system is measured this many times, interleaved")
    ap.add_argument("--no-tmux", action="store_true")
    ap.add_argument("--quick", action="store_true", help="500 keys")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.keys = min(args.keys, 500)
    tmux = None if args.no_tmux else common.ensure_tmux()
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "daemon": [], "tmux": []}
    with common.new_daemon() as d:
        for _ in range(args.runs):
            runs["direct"].append(summarize(echo_direct(args.keys)))
            runs["daemon"].append(summarize(echo_daemon(d, args.keys)))
            if tmux:
                runs["tmux"].append(summarize(echo_tmux(args.keys)))
    res: dict[str, Any] = {"keys": args.keys, "runs": runs}
    for k, v in runs.items():
        if v:
            res[k] = {"p50_ms": common.med([r["p50_ms"] for r in v]), "p99_ms": common.med([r["p99_ms"] for r in v])}
    res["daemon_p50_vs_direct"] = res["daemon"]["p50_ms"] / res["direct"]["p50_ms"]
    if "tmux" in res:
        res["daemon_p50_vs_tmux"] = res["daemon"]["p50_ms"] / res["tmux"]["p50_ms"]
        res["daemon_p99_vs_tmux"] = res["daemon"]["p99_ms"] / res["tmux"]["p99_ms"]
    for k in ("direct", "daemon", "tmux"):
        if k in res:
            print(f"  echo {k:7} p50={res[k]['p50_ms']:.3f}ms p99={res[k]['p99_ms']:.3f}ms", flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
