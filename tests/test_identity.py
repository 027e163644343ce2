"""A daemon's identity: `instance` (random per start, kept across an upgrade) lets clients tell a dropped socket
from a restarted daemon, whose session ids name other programs' sessions."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from vibest_pty import __version__
from vibest_pty.client import connect


async def test_hello_and_stats_carry_the_instance_and_a_restart_changes_it(daemon: Any) -> None:
    c = await daemon.client()
    hello = c.hello_info
    assert isinstance(hello["instance"], str) and len(hello["instance"]) >= 16
    assert hello["started_at"] > 0
    stats = await c.stats()
    assert stats["instance"] == hello["instance"]
    assert stats["version"] == __version__
    assert stats["upgrades"] == 0 and stats["last_upgrade_pause_ms"] is None
    await c.close()
    c2 = await daemon.client()
    assert c2.hello_info["instance"] == hello["instance"]  # same daemon, same instance
    await c2.close()
    daemon.stop(signal.SIGTERM)
    daemon.start()
    c3 = await daemon.client()
    assert c3.hello_info["instance"] != hello["instance"]
    await c3.close()


async def test_reconnect_to_a_restarted_daemon_reports_daemon_restarted_and_attaches_nothing(daemon: Any) -> None:
    c = await connect(daemon.socket, reconnect=True)
    await c.hello()
    s = await c.create(shell="/bin/sh", args=["-c", "exec sleep 100"], attach=True)
    daemon.stop(signal.SIGKILL)  # no exit events: the client still tracks the session
    daemon.start()
    stranger = await daemon.client()
    other = await stranger.create(shell="/bin/sh", args=["-c", "while :; do echo STRANGER; sleep 0.05; done"])
    assert other["id"] == s["id"]  # ids restart at 1: re-attaching by id would pick up a stranger's program
    ev = await c.next_event("reconnect", timeout=20)
    assert [r["mode"] for r in ev["sessions"]] == ["failed"]
    assert ev["sessions"][0]["error"] == "daemon_restarted"
    err = await c.next_event("error", timeout=5)
    assert err["code"] == "daemon_restarted" and err["session"] == s["id"]
    await asyncio.sleep(0.3)
    outputs = []
    while True:
        try:
            outputs.append(await c.next_event("output", timeout=0.1))
        except TimeoutError:
            break
    assert outputs == []
    await stranger.close()
    await c.close()
