"""Idle cost and memory, daemon vs tmux (same run).

idle:   100 idle sessions (each runs `cat`, blocked on its terminal), one client connected and attached to all of
        them (for tmux: 100 windows in one session, one normal client attached, status line off). Over `--idle-s`
        seconds (30; --quick 5): CPU seconds of the server process (utime+stime from /proc/PID/stat) and its
        voluntary context switches (= wake-ups, from /proc/PID/task/*/status). Target: ~0 and no periodic wake-ups.
memory: server RSS (/proc/PID/statm) with RUST_PTY_SCROLLBACK_LINES=10000 / history-limit 10000:
        - empty: the daemon after one hello (tmux: the server with one idle session, as it cannot run without one);
        - per idle session: (RSS after creating `--idle-n` more idle sessions - before) / idle-n;
        - per full session: the same for `--full-n` sessions that each printed 10,500 full 80-column lines
          (so 10,000 lines of history), a quarter of them coloured. RSS is read after the output has been consumed.
        The children (cat, sh) are not counted in either case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import workloads
from bench_attach import LINES, MARK, fill_session

MB = 1 << 20


def _settle_rss(pid: int) -> int:
    time.sleep(0.3)
    return common.rss_bytes(pid)


def idle_daemon(seconds: float, n: int) -> dict[str, Any]:
    with common.new_daemon({"RUST_PTY_MAX_SESSIONS": str(n + 10)}) as d:
        c = common.client(d)
        for _ in range(n):
            c.create(shell="/bin/cat", attach=True)
        time.sleep(1.0)
        c.events.clear()
        cpu0, cs0 = common.cpu_seconds(d.pid), common.ctx_switches(d.pid)
        time.sleep(seconds)
        cpu1, cs1 = common.cpu_seconds(d.pid), common.ctx_switches(d.pid)
        c.close()
    return {"cpu_s": cpu1 - cpu0, "wakeups": cs1 - cs0, "seconds": seconds}


def idle_tmux(seconds: float, n: int) -> dict[str, Any]:
    with common.Tmux() as t:
        t.cmd("new-session", "-d", "-s", "i", "-x", "80", "-y", "24", "cat")
        for _ in range(n - 1):
            t.cmd("new-window", "-d", "-t", "i", "cat")
        pid, fd = common.tmux_attach_pty(t, 80, 24, "i")
        common.drain_fd_thread(fd)
        try:
            time.sleep(1.0)
            spid = t.server_pid()
            cpu0, cs0 = common.cpu_seconds(spid), common.ctx_switches(spid)
            time.sleep(seconds)
            cpu1, cs1 = common.cpu_seconds(spid), common.ctx_switches(spid)
        finally:
            common.kill_wait(pid)
            os.close(fd)
    return {"cpu_s": cpu1 - cpu0, "wakeups": cs1 - cs0, "seconds": seconds}


def emulator_pids(pid: int) -> list[int]:
    """The daemon's emulator pool processes (children running vibest_pty.emulator_process)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"vibest_pty.emulator_process" in f.read():
                    out.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _total_rss(pid: int) -> tuple[int, int, int]:
    """(daemon, emulator processes summed, their count) after settling."""
    daemon = _settle_rss(pid)
    emus = emulator_pids(pid)
    return daemon, sum(common.rss_bytes(p) for p in emus), len(emus)


def memory_daemon(path: str, idle_n: int, full_n: int) -> dict[str, Any]:
    """Per-session figures count the daemon and its emulator processes together (the emulators live there)."""
    env = {"RUST_PTY_SCROLLBACK_LINES": "10000", "RUST_PTY_MAX_SESSIONS": str(idle_n + full_n + 10)}
    with common.new_daemon(env) as d:
        c = common.client(d)
        empty, empty_emu, _ = _total_rss(d.pid)
        for _ in range(idle_n):
            c.create(shell="/bin/cat")
        idle_d, idle_e, _ = _total_rss(d.pid)
        for _ in range(full_n):
            fill_session(c, path)
        full_d, full_e, members = _total_rss(d.pid)
        c.close()
    idle, full = idle_d + idle_e, full_d + full_e
    return {"empty_mb": empty / MB, "empty_emulators_mb": empty_emu / MB,
            "per_idle_session_mb": (idle - empty - empty_emu) / idle_n / MB,
            "per_full_session_mb": (full - idle) / full_n / MB,
            "daemon_mb": full_d / MB, "emulators_mb": full_e / MB, "emulator_processes": members}


def memory_tmux(path: str, idle_n: int, full_n: int) -> dict[str, Any]:
    with common.Tmux(history=10000) as t:
        t.cmd("new-session", "-d", "-s", "m0", "-x", "80", "-y", "24", "cat")
        spid = t.server_pid()
        empty = _settle_rss(spid)
        for i in range(idle_n):
            t.cmd("new-session", "-d", "-s", f"i{i}", "-x", "80", "-y", "24", "cat")
        idle = _settle_rss(spid)
        for i in range(full_n):
            t.cmd("new-session", "-d", "-s", f"f{i}", "-x", "80", "-y", "24",
                  f"cat '{path}'; printf '{MARK}'; exec cat")
        deadline = time.time() + 300
        for i in range(full_n):
            while MARK not in t.cmd("capture-pane", "-p", "-t", f"f{i}"):
                if time.time() > deadline:
                    raise RuntimeError("tmux did not fill")
                time.sleep(0.05)
        full = _settle_rss(spid)
        hist = t.cmd("display-message", "-p", "-t", "f0", "#{history_size}").strip()
    return {"empty_mb": empty / MB, "per_idle_session_mb": (idle - empty) / idle_n / MB,
            "per_full_session_mb": (full - idle) / full_n / MB, "history_size": int(hist or 0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--idle-sessions", type=int, default=100)
    ap.add_argument("--idle-n", type=int, default=50, help="idle sessions for the per-session memory figure")
    ap.add_argument("--full-n", type=int, default=10, help="full-history sessions for the memory figure")
    ap.add_argument("--quick", action="store_true", help="5 s idle, 20 idle / 4 full sessions for memory")
    ap.add_argument("--no-tmux", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.idle_s = min(args.idle_s, 5.0)
        args.idle_n = min(args.idle_n, 20)
        args.full_n = min(args.full_n, 4)
    tmux = None if args.no_tmux else common.ensure_tmux()
    common.raise_nofile()
    work = tempfile.mkdtemp(prefix="vpb-res-")
    path = os.path.join(work, "history.txt")
    with open(path, "wb") as f:
        f.write(workloads.scrollback_lines(LINES))
    res: dict[str, Any] = {}
    try:
        res["idle"] = {"daemon": idle_daemon(args.idle_s, args.idle_sessions)}
        if tmux:
            res["idle"]["tmux"] = idle_tmux(args.idle_s, args.idle_sessions)
        res["memory"] = {"daemon": memory_daemon(path, args.idle_n, args.full_n)}
        if tmux:
            res["memory"]["tmux"] = memory_tmux(path, args.idle_n, args.full_n)
            m = res["memory"]
            m["ratios_daemon_vs_tmux"] = {k: common.ratio(m["daemon"][k], m["tmux"][k])
                                          for k in ("empty_mb", "per_idle_session_mb", "per_full_session_mb")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for who, r in res["idle"].items():
        print(f"  idle {who:6}: {r['cpu_s']:.3f} CPU s, {r['wakeups']} wake-ups in {r['seconds']:.0f} s "
              f"({args.idle_sessions} sessions)", flush=True)
    dm = res["memory"]["daemon"]
    print(f"  memory daemon: at the end {dm['daemon_mb']:.1f} MB in the daemon + {dm['emulators_mb']:.1f} MB in "
          f"{dm['emulator_processes']} emulator processes", flush=True)
    for who, r in res["memory"].items():
        if who in ("daemon", "tmux"):
            print(f"  memory {who:6}: empty {r['empty_mb']:.1f} MB, per idle session {r['per_idle_session_mb']:.3f} MB,"
                  f" per 10k-line session {r['per_full_session_mb']:.2f} MB", flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
