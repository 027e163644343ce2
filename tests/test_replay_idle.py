"""The replay window of a session nobody attaches shrinks after RUST_PTY_REPLAY_IDLE_S, and grows back on attach."""

from __future__ import annotations

import asyncio
from typing import Any

from vibest_pty.replay import ReplayWindow
from vibest_pty.testing import Daemon


def test_set_limit_keeps_the_newest_bytes_and_offsets() -> None:
    w = ReplayWindow(1000)
    w.append(bytes(range(256)) * 3)
    w.set_limit(100)
    assert len(w) == 100 and w.end == 768 and w.start == 668
    assert w.since(700) == (bytes(range(256)) * 3)[700:]
    assert w.since(600) is None
    w.set_limit(1000)  # growing keeps what is there and lets the window refill
    w.append(b"x" * 500)
    assert len(w) == 600 and w.since(668) is not None


async def _replay_len(c: Any, sid: int) -> int | None:
    r = await c.attach(sid, since=0)
    await c.detach(sid)
    return len(r["replay"]) if "replay" in r else None


async def test_unattached_session_keeps_only_the_idle_replay_then_regrows(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_REPLAY_IDLE_S": "1", "RUST_PTY_REPLAY_IDLE_BYTES": "1000"})
    c = await d.client()
    # 20 KB of output in the first 0.3 s, then nothing: the whole stream fits the 1 MiB window at first.
    s = await c.create(shell="/bin/sh", args=["-c", "seq 1 4000; sleep 60"])
    await asyncio.sleep(0.3)
    r = await c.attach(s["id"], since=0)
    assert r.get("replay") is not None and len(r["replay"]) == r["offset"] > 10_000
    await c.detach(s["id"])
    # Nobody attached for the idle time: only the last 1000 bytes are kept, so `since=0` gets a snapshot and a
    # `since` within the last 1000 bytes still gets replay.
    await asyncio.sleep(1.6)
    r = await c.attach(s["id"], since=0)
    assert "replay" not in r and r["snapshot"]["offset"] == r["offset"]
    tail = await c.attach(s["id"], since=r["offset"] - 1000)
    assert len(tail["replay"]) == 1000
    await c.kill(s["id"])
    await c.close()


async def test_attached_session_keeps_its_whole_replay(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_REPLAY_IDLE_S": "1", "RUST_PTY_REPLAY_IDLE_BYTES": "1000"})
    c = await d.client()
    s = await c.create(shell="/bin/sh", args=["-c", "seq 1 4000; sleep 60"], attach=True)
    await asyncio.sleep(1.6)
    watcher = await d.client()
    r = await watcher.attach(s["id"], since=0)
    assert r.get("replay") is not None and len(r["replay"]) == r["offset"]
    await c.kill(s["id"])
    await c.close()
    await watcher.close()
