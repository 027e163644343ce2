"""The emulators' pool processes, through a real daemon: started on demand, reported in stats, and survivable."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from vibest_pty.client import Client

from .conftest import Daemon, read_until


async def _emulators(c: Client) -> list[dict[str, object]]:
    st = await c.stats()
    return list(st["emulators"])  # type: ignore[arg-type]


async def test_empty_daemon_starts_no_emulator_process_and_stats_report_them(daemon: Daemon) -> None:
    c = await daemon.client()
    assert await _emulators(c) == []
    s = await c.create(shell="/bin/sh", args=["-c", "echo hi; exec sleep 100"], attach=True)
    await read_until(c, s["id"], b"hi")
    ems = await _emulators(c)
    assert len(ems) == 1 and ems[0]["sessions"] == 1 and int(ems[0]["rss"]) > 0  # type: ignore[call-overload]
    st = await c.stats()
    assert st["emulators_rss"] == sum(int(e["rss"]) for e in ems)  # type: ignore[call-overload]
    await c.kill(s["id"])
    await c.close()


async def test_sigkilled_emulator_process_is_restarted_and_its_sessions_attach_again(daemon: Daemon) -> None:
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", attach=True, args=["-c",
        "printf '\\033]2;mytitle\\007'; echo before; read x; echo after-$x; exec sleep 100"])
    await read_until(c, s["id"], b"before")
    ems = await _emulators(c)
    victim = int(ems[0]["pid"])  # type: ignore[call-overload]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        ems = await _emulators(c)
        if ems and int(ems[0]["pid"]) != victim and ems[0]["restarts"] == 1:  # type: ignore[call-overload]
            break
    assert ems and int(ems[0]["pid"]) != victim, "the emulator process was not restarted"  # type: ignore[call-overload]
    ev = await c.next_event("resync", timeout=20)  # the subscriber is told to repaint from the rebuilt state
    assert b"before" in ev["snapshot"]["data"]
    await c.input(s["id"], b"ok\n")
    await read_until(c, s["id"], b"after-ok", timeout=20)
    c2 = await daemon.client()
    reply = await c2.attach(s["id"])
    data = reply["snapshot"]["data"]
    assert b"before" in data and b"after-ok" in data and b"mytitle" in data
    assert "died" in daemon.log() and "rebuilding" in daemon.log()
    await c.kill(s["id"])
    await c.close()
    await c2.close()
