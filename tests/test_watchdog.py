"""A daemon that dies uncleanly (SIGKILL, OOM) leaves nothing of its sessions running: the watchdog hangs them up
and kills what ignores the hangup."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from vibest_pty import watchdog


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone, only not reaped yet
    except OSError:
        return False


def _session_members(sids: list[int]) -> list[int]:
    return watchdog.members(dict.fromkeys(sids, 0))


async def test_sigkill_of_the_daemon_leaves_no_process_of_any_session(daemon: Any, tmpdir_short: str) -> None:
    c = await daemon.client()
    marker = os.path.join(tmpdir_short, "nohup-ready")
    sessions = [
        # a loop that ignores SIGHUP
        await c.create(shell="/bin/sh", args=["-c", "trap '' HUP; while :; do sleep 0.2; done"]),
        # an interactive shell with a nohup job in its own process group (job control)
        await c.create(shell="/bin/bash", args=["--norc", "-i"]),
        await c.create(shell="/bin/sh", args=["-c", "sleep 1000"]),
    ]
    await c.input(sessions[1]["id"], f"nohup sleep 1000 >/dev/null 2>&1 & touch {marker}\n")
    sids = [s["id"] for s in sessions]
    pids = [s["pid"] for s in sessions]
    deadline = time.monotonic() + 10
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(marker), "the nohup job did not start"
    before = _session_members(pids)
    assert len(before) >= 5, before  # 3 leaders, the loop's sleep, the nohup job
    await c.close()
    assert sids
    daemon.stop(signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and any(_alive(p) for p in before):
        time.sleep(0.05)
    left = [p for p in before if _alive(p)]
    assert not left, f"still running 3 s after the daemon's SIGKILL: {left}\n{daemon.log()}"


async def test_daemon_that_keeps_running_keeps_its_sessions_and_its_watchdog(daemon: Any) -> None:
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "trap '' HUP; sleep 1000"])
    with open(f"/proc/{daemon.pid}/task/{daemon.pid}/children") as f:
        children = [int(x) for x in f.read().split()]
    watchers = [p for p in children if p != s["pid"]]
    assert len(watchers) == 1, children
    time.sleep(0.3)
    assert _alive(s["pid"]) and _alive(watchers[0])
    await c.kill(s["id"])
    await c.close()


def test_members_skips_a_reused_leader_pid() -> None:
    import subprocess

    sid = os.getsid(0)
    started = watchdog.start_time(sid)
    child = subprocess.Popen(["sleep", "5"])
    try:
        if started:
            assert child.pid in watchdog.members({sid: started})
            assert child.pid not in watchdog.members({sid: started + 1})  # a stranger now holds the leader's pid
    finally:
        child.kill()
        child.wait()
