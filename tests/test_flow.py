"""Flow control through a real daemon: a stuck client never costs memory without bound, never slows anyone
else, and never silently misses output (warnings, then a resync, or a disconnect when so configured)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from vibest_pty.client import Client

from .conftest import Daemon, RawPeer, check_slow_reader, collect_until_exit

FLOOD_BYTES = 20_000_000
# A paced flood (~8 MiB at a few MB/s): a stuck client overflows a 1 MiB queue, while a reading client keeps up
# even on a loaded machine (under auto-disconnect a lagging "fast" client would rightly be cut off too).
PACED_CHUNK, PACED_CHUNKS = 131072, 64
PACED_BYTES = PACED_CHUNK * PACED_CHUNKS
PACED_FLOOD = (f"stty -opost -echo; read go; for i in $(seq {PACED_CHUNKS}); do "
               f"head -c {PACED_CHUNK} /dev/zero | tr '\\0' x; sleep 0.04; done")
SMALL_QUEUE = {"RUST_PTY_FLOW_MAX_QUEUE_BYTES": str(2 << 20), "RUST_PTY_FLOW_MAX_QUEUE_SIZE": "2048",
               "RUST_PTY_FLOW_THRESHOLD": "512"}


async def _flood_with_stuck_and_fast_client(d: Daemon) -> tuple[RawPeer, bytes, dict[str, Any], int]:
    fast = await d.client()
    s = await fast.create(shell="/bin/sh", args=["-c", PACED_FLOOD])
    await fast.attach(s["id"])
    stuck = d.raw(rcvbuf=4096)
    stuck.send({"type": "attach", "id": 1, "session": s["id"]})
    for _ in range(200):  # the flood starts once both are subscribed (the stuck one's reply is never read)
        if len((await fast.stats())["queues"]) == 2:
            break
        await asyncio.sleep(0.02)
    await fast.input(s["id"], "\n")
    peak_rss = 0

    async def watch() -> None:
        nonlocal peak_rss
        w = await d.client()
        while True:
            peak_rss = max(peak_rss, (await w.stats())["rss"])
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    out, ev = await collect_until_exit(fast, s["id"], timeout=120)
    watcher.cancel()
    await fast.close()
    return stuck, out, ev, peak_rss


async def test_stuck_client_gets_warnings_then_resync_and_fast_client_everything(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env=SMALL_QUEUE)
    stuck, out, ev, peak_rss = await _flood_with_stuck_and_fast_client(d)
    assert ev["code"] == 0
    assert out == b"x" * PACED_BYTES, "the fast client got every byte, in order (offsets checked)"
    assert peak_rss < 150 * 1024 * 1024, f"daemon RSS {peak_rss / 2**20:.0f} MiB while a client was stuck"

    # Now the stuck client reads: whatever it got is contiguous, nothing is silently lost.
    frames = await stuck.read_until("exit")
    seen = check_slow_reader(frames, PACED_BYTES)  # after the resync it reaches the same end as everyone
    assert seen["yellow"] and seen["red"] and seen["resync"], seen
    stuck.close()


async def test_auto_disconnect_policy(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={**SMALL_QUEUE, "RUST_PTY_FLOW_AUTO_DISCONNECT": "true"})
    stuck, out, _, _ = await _flood_with_stuck_and_fast_client(d)
    assert len(out) == PACED_BYTES
    frames: list[dict[str, Any]] = []
    while await stuck.afill(10, 65536):  # until the daemon closes the connection
        frames += stuck.frames()
    warnings = [f for f in frames if f["type"] == "backpressure_warning"]
    assert warnings and warnings[-1]["level"] == "red"
    assert not any(f["type"] == "resync" for f in frames)
    stuck.close()


async def test_flood_does_not_delay_replies_or_other_sessions_on_same_connection(daemon: Daemon) -> None:
    """One connection, two sessions: one floods, the client reads slowly; a reply and an echo from the other
    session still come quickly because the writer serves control first and sessions round-robin."""
    c = await daemon.client()
    echo = await c.create(shell="/bin/sh", args=["-c", "stty -echo; cat"], attach=True)
    flood = await c.create(shell="/bin/sh", args=["-c", "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'"])
    slow = daemon.raw(rcvbuf=4096)
    slow.send({"type": "attach", "id": 1, "session": flood["id"]})
    slow.send({"type": "attach", "id": 2, "session": echo["id"]})
    for _ in range(400):  # let the flood build a backlog in the daemon (a few MiB)
        st = await c.stats()
        if max((q["bytes"] for q in st["queues"] if q["session"] == flood["id"]), default=0) > 2 * 1024 * 1024:
            break
        await asyncio.sleep(0.05)

    async def flood_bytes_before(pred: Any) -> int:
        """Read slowly until a frame matches; how many bytes of the flood's output came first."""
        n = 0
        while True:
            assert await slow.afill(60, 16384), "closed"
            for m in slow.frames():
                if pred(m):
                    return n
                if m["type"] == "output" and m["session"] == flood["id"]:
                    n += len(m["data"])
            await asyncio.sleep(0.005)  # ~3 MB/s at most: far slower than the flood

    slow.send({"type": "list", "id": 99})
    before_reply = await flood_bytes_before(lambda m: m.get("id") == 99)
    await c.input(echo["id"], "ping-7\n")
    before_echo = await flood_bytes_before(
        lambda m: m["type"] == "output" and m["session"] == echo["id"] and b"ping-7" in m["data"]
    )
    # Without fairness the reply and the echo would wait behind the flood's backlog (> 2 MiB). With it, only what
    # was already in the transport's and the socket's buffers comes first (the 64 KiB write buffer, ~200 KiB of
    # socket buffer, one batch): an assertion on order, not on time, so machine load does not matter.
    assert before_reply < 1024 * 1024, before_reply
    assert before_echo < 1024 * 1024, before_echo
    await c.kill(flood["id"])
    await c.close()
    slow.close()


async def _echo_median(c: Client, sid: int, tag: str, keys: int = 20) -> float:
    """Median round trip of `keys` lines echoed by `cat` in session `sid`."""
    times = []
    for i in range(keys):
        t0 = time.monotonic()
        await c.input(sid, f"{tag}{i}\n")
        while True:
            ev = await c.next_event("output")
            if ev["session"] == sid and f"{tag}{i}".encode() in ev["data"]:
                break
        times.append(time.monotonic() - t0)
    times.sort()
    return times[len(times) // 2]


async def test_stuck_client_does_not_slow_other_sessions(daemon_factory: Any) -> None:
    """Echo in one session while another floods a client that never reads stays within a small factor of the same
    echo measured just before the flood, on the same daemon: a ratio to a control from the same run, so machine
    load moves both (a fixed budget in seconds had to be retuned for load). Without per-connection flow control
    the echo would queue behind the stuck client's backlog and the ratio would grow without bound."""
    d: Daemon = daemon_factory(env=SMALL_QUEUE)
    c: Client = await d.client()
    s = await c.create(shell="/bin/sh", args=["-c", "stty -echo; cat"], attach=True)
    await asyncio.sleep(0.2)
    control = await _echo_median(c, s["id"], "c")
    flood = await c.create(shell="/bin/sh", args=["-c", "yes"])
    stuck = d.raw(rcvbuf=4096)
    stuck.send({"type": "attach", "id": 1, "session": flood["id"]})
    await asyncio.sleep(0.3)
    loaded = await _echo_median(c, s["id"], "k")
    # 10x the control plus 50 ms: the flood competes for the 2 cores (the `yes` process, the daemon's reads of
    # it), which costs a few ms per echo; a stuck backlog would cost seconds.
    assert loaded < 10 * control + 0.05, (loaded, control)
    await c.kill(flood["id"])
    await c.close()
    stuck.close()


async def test_python_client_with_bounded_queue_pushes_back(daemon_factory: Any) -> None:
    """A vibest_pty.client consumer that lags stops reading its socket (max_events), so the daemon's flow
    control applies to it too: warnings, a resync, and a contiguous stream to the end."""
    from vibest_pty.client import connect

    d: Daemon = daemon_factory(env=SMALL_QUEUE)
    lagging = await connect(d.socket, max_events=20)
    s = await lagging.create(shell="/bin/sh", args=["-c", f"stty -opost; sleep 0.3; yes | head -c {FLOOD_BYTES}"])
    await lagging.attach(s["id"])
    watcher = await d.client()
    for _ in range(200):
        st = await watcher.stats()
        if any(q["resyncs"] or q["discarded"] for q in st["queues"]):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the daemon never saw the lagging client push back: {st['queues']}")
    expected: int | None = None
    seen = set()
    while True:
        ev = await lagging.next_event(timeout=60)
        seen.add(ev["type"])
        if ev["type"] == "output":
            assert expected is None or ev["offset"] == expected
            expected = ev["offset"] + len(ev["data"])
        elif ev["type"] == "resync":
            expected = ev["snapshot"]["offset"]
        elif ev["type"] == "exit":
            break
    assert expected == FLOOD_BYTES
    assert {"backpressure_warning", "resync"} <= seen
    await lagging.close()
    await watcher.close()
