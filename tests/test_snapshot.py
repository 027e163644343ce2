"""Snapshots through the daemon: attach is atomic, and real full-screen programs come back as they were."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from vibest_pty.client import Client
from vibest_pty.emulator import Emulator

from .conftest import Daemon, read_until
from .test_emulator import _assert_same, _state


def replay(snapshot: dict[str, Any], outputs: list[bytes], scrollback: int = 1000) -> Emulator:
    emu = Emulator(snapshot["cols"], snapshot["rows"], scrollback)
    emu.feed(snapshot["data"])
    for chunk in outputs:
        emu.feed(chunk)
    return emu


async def test_attach_is_atomic_under_flood(daemon_factory: Any) -> None:
    """Attach again and again while numbered, coloured lines flood: every snapshot plus the output that follows it,
    replayed into a fresh emulator, equals the daemon's own final state."""
    daemon = daemon_factory(env={"RUST_PTY_SCROLLBACK_LINES": "100"})
    owner = await daemon.client()
    warm = await owner.create(shell="/bin/sh", args=["-c", "exec sleep 100"])
    await owner.snapshot(warm["id"])  # the emulator process is up: this test is about atomicity, not a cold start
    everything = bytearray()
    owner.on("output", lambda ev: everything.extend(ev["data"]))
    s = await owner.create(
        shell="/bin/sh", cols=60, rows=12, attach=True,
        args=["-c", "sleep 0.2; i=0; while [ $i -lt 6000 ]; do i=$((i+1)); "
                    "printf '\\033[3%dmline %d\\033[0m of the flood\\n' $((i % 8)) $i; "
                    "[ $((i % 200)) -eq 0 ] && sleep 0.03; done"],
    )
    attaches: list[tuple[dict[str, Any], list[bytes]]] = []
    clients: list[Client] = []
    collectors = []

    async def follow(c: Client, snap: dict[str, Any], offset: int) -> None:
        chunks: list[bytes] = []
        attaches.append((snap, chunks))
        expected = offset
        while True:
            ev = await c.next_event("output", "exit", timeout=60)
            if ev["type"] == "exit":
                return
            assert ev["offset"] == expected, "output continues exactly at the attach offset"
            expected += len(ev["data"])
            chunks.append(ev["data"])

    for _ in range(15):
        c = await daemon.client()
        clients.append(c)
        r = await c.attach(s["id"])
        assert r["snapshot"]["offset"] == r["offset"]
        collectors.append(asyncio.create_task(follow(c, r["snapshot"], r["offset"])))
        await asyncio.sleep(0.06)
    await asyncio.gather(*collectors)
    final = await owner.snapshot(s["id"])
    assert len({snap["offset"] for snap, _ in attaches}) > 3, "attaches landed at different points of the flood"
    want = _state(replay(final, [], 100), history=100)
    for snap, chunks in attaches:
        _assert_same(want, _state(replay(snap, chunks, 100), history=100))
        # And each snapshot is exactly the state after the output before its offset: no byte more, none less.
        with Emulator(snap["cols"], snap["rows"], 100) as fresh:
            fresh.feed(bytes(everything[: snap["offset"]]))
            assert fresh.snapshot().data == snap["data"]
    for c in [owner, *clients]:
        await c.close()


async def _live_screen_matches_reattach(daemon: Daemon, program: str, keys: list[str], ready: bytes) -> None:
    live_client = await daemon.client()
    s = await live_client.create(shell="bash", args=["--norc", "--noprofile", "-i"], cols=80, rows=24, attach=True,
                                 env={"PS1": "$ "}, shell_integration=False)  # a plain shell: exact bytes
    live = Emulator(80, 24, 1000)
    got = bytearray()

    def on_output(ev: dict[str, Any]) -> None:
        live.feed(ev["data"])
        got.extend(ev["data"])

    live_client.on("output", on_output)
    await live_client.input(s["id"], "seq 1 40; " + program + "\r")
    for _ in range(200):
        if ready in got:
            break
        await asyncio.sleep(0.05)
    assert ready in got, bytes(got[-300:])
    for k in keys:
        await live_client.input(s["id"], k)
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # let the program finish painting

    other = await daemon.client()
    r = await other.attach(s["id"])
    await asyncio.sleep(0.2)
    restored = replay(r["snapshot"], [])
    assert r["snapshot"]["alt_screen"] is True
    _assert_same(_state(live), _state(restored))
    await other.close()
    await live_client.kill(s["id"])
    await live_client.close()


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
async def test_vim_restored_exactly(daemon: Daemon, tmp_path: Any) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("".join(f"line {i} of a file with some text\n" for i in range(60)))
    await _live_screen_matches_reattach(
        daemon, f"vim -u NONE -N -i NONE {f}", ["10G", "ofresh \x1b[1mtext\x1b", ":set number\r"], b"notes.txt"
    )


@pytest.mark.skipif(shutil.which("less") is None, reason="less is not installed")
async def test_less_restored_exactly(daemon: Daemon) -> None:
    await _live_screen_matches_reattach(daemon, "seq 1 500 | LESS= less", [" ", "/42\r"], b":")


async def test_quitting_fullscreen_after_reattach_shows_the_shell(client: Client, daemon: Daemon) -> None:
    s = await client.create(shell="bash", args=["--norc", "--noprofile", "-i"], cols=40, rows=10, attach=True,
                            env={"PS1": "$ "}, shell_integration=False)  # a plain shell: exact bytes
    await client.input(s["id"], "echo before-alt\r")
    await read_until(client, s["id"], b"before-alt\r\n")
    await client.input(s["id"], "printf '\\033[?1049h\\033[2J\\033[Hfullscreen'; read x; printf '\\033[?1049l'\r")
    # The output, not the echoed command line (which also says "fullscreen"): the alt screen is on by then.
    await read_until(client, s["id"], b"\x1b[Hfullscreen")
    c2 = await daemon.client()
    r = await c2.attach(s["id"])
    assert r["snapshot"]["alt_screen"]
    emu = replay(r["snapshot"], [])
    chunks: list[bytes] = []
    c2.on("output", lambda ev: chunks.append(ev["data"]))
    await client.input(s["id"], "\r")  # leave the alternate screen
    await read_until(client, s["id"], b"$ ")
    await asyncio.sleep(0.3)
    final = await client.snapshot(s["id"])
    for _ in range(100):  # c2 is another connection: wait until it has every byte up to the final snapshot
        if r["offset"] + sum(map(len, chunks)) >= final["offset"]:
            break
        await asyncio.sleep(0.05)
    assert r["offset"] + sum(map(len, chunks)) == final["offset"]
    for ch in chunks:
        emu.feed(ch)
    assert not final["alt_screen"]
    _assert_same(_state(replay(final, [])), _state(emu))
    await c2.close()


async def test_title_and_cwd_reach_session_info(client: Client) -> None:
    s = await client.create(shell="/bin/sh", args=["-c", "printf '\\033]2;my title\\007\\033]7;file://host/tmp/a%%20b\\007'; sleep 30"],
                            attach=True)
    await client.next_event("output")
    for _ in range(100):  # the emulator thread publishes the title once it has parsed the output
        info = next(x for x in await client.list() if x["id"] == s["id"])
        if info["title"]:
            break
        await asyncio.sleep(0.05)
    assert info["title"] == "my title"
    assert info["cwd"] == "/tmp/a b"
    snap = await client.snapshot(s["id"])
    assert (snap["title"], snap["cwd"]) == ("my title", "/tmp/a b")
    await client.kill(s["id"])
