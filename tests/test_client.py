"""The Python client: per-session offsets (trimming after snapshots and resyncs), events kept while waiting for
another one, reconnection with `since` against a real daemon, and the SO_PEERCRED check against a real server
of another uid."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vibest_pty import protocol
from vibest_pty.client import Client, UntrustedServer, check_peer, connect

from .conftest import Daemon, RawPeer

# ---------------------------------------------------------------------------------------------------------------
# Against a scripted peer: the client on one end of a socketpair, frames written by hand on the other.


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Client, RawPeer]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=a)
    c = Client(reader, writer, protocol.DEFAULT_MAX_FRAME)
    yield c, RawPeer(sock=b)
    await c.close()
    b.close()


async def test_output_is_trimmed_to_the_attach_snapshot_and_follows_resyncs(pair: tuple[Client, RawPeer]) -> None:
    c, peer = pair
    attach = asyncio.ensure_future(c.attach_session(5))
    req = await peer.anext_message()
    assert (req["type"], req["session"], req["snapshot"]) == ("attach", 5, True)
    # The ok and the frames behind it arrive in one read: the offset must apply before they are dispatched.
    peer.send_bytes(b"".join(protocol.encode(m) for m in [
        {"type": "ok", "id": req["id"], "offset": 10, "session": {"id": 5}, "snapshot": {"offset": 10}},
        {"type": "output", "session": 5, "offset": 4, "data": b"old"},  # in the snapshot already
        {"type": "output", "session": 5, "offset": 8, "data": b"xxNEW"},  # straddles it
        {"type": "output", "session": 6, "offset": 0, "data": b"other"},  # not attached here: as is
        {"type": "resync", "session": 5, "snapshot": {"offset": 100}},
        {"type": "output", "session": 5, "offset": 90, "data": b"late"},
        {"type": "output", "session": 5, "offset": 100, "data": b"!"},
    ]))
    result = await attach
    assert result["offset"] == 10 and "type" not in result
    got = [await c.events.get() for _ in range(4)]
    assert [(e["type"], e.get("offset"), e.get("data")) for e in got] == [
        ("output", 10, b"NEW"), ("output", 0, b"other"), ("resync", None, None), ("output", 100, b"!")]
    state = c.session(5)
    assert state is not None and state.next_offset == 101 and state.trimmed == 3 + 2 + 4
    assert c.events.empty()


async def test_next_event_keeps_the_events_it_skips_in_order(pair: tuple[Client, RawPeer]) -> None:
    c, peer = pair
    for i in range(3):
        peer.send({"type": "output", "session": 1, "offset": i, "data": b"%d" % i})
    peer.send({"type": "exit", "session": 2, "code": 0, "signal": None})
    peer.send({"type": "exit", "session": 1, "code": 3, "signal": None})
    ev = await c.next_event("exit", session=1)
    assert ev["code"] == 3
    rest = [await c.next_event() for _ in range(4)]
    assert [(e["type"], e["session"]) for e in rest] == [("output", 1)] * 3 + [("exit", 2)]
    with pytest.raises(TimeoutError, match="no exit"):
        await c.next_event("exit", timeout=0.05)


async def test_a_bounded_queue_still_lets_next_event_find_what_is_behind_it() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader, writer = await asyncio.open_unix_connection(sock=a)
    c = Client(reader, writer, protocol.DEFAULT_MAX_FRAME, max_events=2)
    try:
        b.sendall(b"".join(protocol.encode({"type": "output", "session": 1, "offset": i, "data": b"x"})
                           for i in range(50)) + protocol.encode({"type": "exit", "session": 1, "code": 0}))
        ev = await c.next_event("exit", timeout=10)
        assert ev["type"] == "exit"
        assert [(await c.events.get())["offset"] for _ in range(50)] == list(range(50))
    finally:
        await c.close()
        b.close()


async def test_the_sdk_method_names_exist_in_snake_case(pair: tuple[Client, RawPeer]) -> None:
    c, _ = pair
    for name in ("create_session", "attach_session", "detach_session", "send_input", "input", "resize", "kill",
                 "signal", "list_sessions", "get_snapshot", "stats", "prune", "resync", "reconnect"):
        assert callable(getattr(c, name)), name


# ---------------------------------------------------------------------------------------------------------------
# Against a real daemon


async def test_typed_results_from_a_real_daemon(daemon: Daemon) -> None:
    async with await connect(daemon.socket) as c:
        assert c.hello_info is not None and c.hello_info["protocol"] == 1 and c.server_pid == daemon.pid
        info = await c.create_session(shell="/bin/sh", args=["-c", "exit 4"], attach=True)
        ev = await c.next_event("exit", session=info["id"])
        assert ev["code"] == 4
        [listed] = await c.list_sessions()
        assert listed["id"] == info["id"] and listed["exit_code"] == 4
        snap = await c.get_snapshot(info["id"])
        assert isinstance(snap["data"], bytes) and snap["cols"] == 80
        st = await c.stats()
        assert "type" not in st and st["sessions"] == 1
        assert await c.prune() == [info["id"]]
        assert await c.list_sessions() == []


LINES = 60


async def test_reconnect_resumes_attached_sessions_from_their_offset_without_a_gap(daemon: Daemon) -> None:
    """The connection drops mid-output; the client reconnects by itself and re-attaches with `since`: every
    line arrives exactly once, in order, with contiguous offsets (replay), and a `reconnect` event says so."""
    c = await connect(daemon.socket, reconnect=True, give_up_after=20)
    try:
        script = f"for i in $(seq 1 {LINES}); do echo line$i; sleep 0.02; done; sleep 30"
        info = await c.create_session(shell="/bin/sh", args=["-c", script], attach=True)
        data = b""
        offsets: list[tuple[int, int]] = []
        dropped = False
        reconnects: list[dict[str, Any]] = []
        while f"line{LINES}\r\n".encode() not in data:
            ev = await c.next_event("output", "reconnect", "disconnect", timeout=20)
            if ev["type"] == "reconnect":
                reconnects.append(ev)
                continue
            if ev["type"] == "disconnect":
                continue
            offsets.append((ev["offset"], len(ev["data"])))
            data += ev["data"]
            if not dropped and b"line5\r\n" in data:
                dropped = True
                c._writer.transport.abort()  # the connection dies under the client
                await asyncio.sleep(0.3)  # output goes on meanwhile
        lines = data.decode().replace("\r", "").split()
        assert lines == [f"line{i}" for i in range(1, LINES + 1)]
        assert all(o1 + n1 == o2 for (o1, n1), (o2, _) in itertools.pairwise(offsets))
        assert len(reconnects) == 1 and reconnects[0]["sessions"][0]["mode"] == "replay", reconnects
        assert reconnects[0]["sessions"][0]["session"] == info["id"]
    finally:
        await c.close()


async def test_a_client_that_cannot_reconnect_closes_with_the_reason(daemon_factory: Any) -> None:
    d = daemon_factory()
    c = await connect(d.socket, reconnect=True, give_up_after=1.0)
    await c.create_session(shell="/bin/sh", args=["-c", "sleep 30"], attach=True)
    d.stop()
    ev = await c.next_event("close", timeout=20)
    assert "gave up reconnecting" in (ev["reason"] or "")
    await c.close()


# ---------------------------------------------------------------------------------------------------------------
# SO_PEERCRED: a server of another uid is refused

FAKE_SERVER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(8)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    data = conn.recv(65536)
    if data:
        with open(sys.argv[1] + ".got", "ab") as f:
            f.write(data)
    conn.close()
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a server as another uid")
async def test_a_server_run_by_another_uid_is_refused_before_anything_is_sent() -> None:
    d = tempfile.mkdtemp(prefix="vp-uid-")
    os.chmod(d, 0o777)
    path = os.path.join(d, "socket")
    proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                             FAKE_SERVER, path], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        with pytest.raises(UntrustedServer, match="uid 65534"):
            await connect(path)
        # the command line says so in one line, and starts no daemon of its own
        env = {**os.environ, "RUST_PTY_SOCKET_PATH": path}
        r = subprocess.run([sys.executable, "-m", "vibest_pty.cli", "ls"], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1 and "refusing the server" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        await asyncio.sleep(0.2)
        assert not os.path.exists(path + ".got"), "nothing (not even hello) was sent"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_check_peer_accepts_our_uid_and_root_and_names_any_other() -> None:
    a, b = socket.socketpair()
    try:
        pid, uid = check_peer(a, "pair")
        assert (pid, uid) == (os.getpid(), os.getuid())
        if os.getuid() != 0:  # root's servers are trusted, so only a non-root run can see a mismatch here
            with pytest.raises(UntrustedServer, match=f"uid {os.getuid()}"):
                check_peer(a, "pair", expected_uid=os.getuid() + 1)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------------------------------
# Session hygiene: kill_after_detach_s (daemon side, driven through the client)


async def _running(c: Client, sid: int) -> bool:
    return any(s["id"] == sid and s["running"] for s in await c.list_sessions())


async def test_kill_after_detach_kills_once_the_last_client_left_and_a_reattach_cancels_it(daemon: Daemon) -> None:
    grace = 1.0
    async with await connect(daemon.socket) as a, await connect(daemon.socket) as b:
        s = await a.create_session(shell="/bin/sh", args=["-c", "sleep 60"], attach=True, kill_after_detach_s=grace)
        sid = s["id"]
        await b.attach_session(sid)
        await a.detach_session(sid)
        await asyncio.sleep(grace * 2)
        assert await _running(a, sid), "b is still attached"
        await b.close()  # the last client goes away (a disconnect counts as a detach)
        await asyncio.sleep(grace / 2)
        await a.attach_session(sid)  # back within the grace: cancelled
        await a.detach_session(sid)
        await asyncio.sleep(grace / 2)
        assert await _running(a, sid), "the re-attach cancelled the first kill"
        # now nobody comes back: killed `grace` after the last detach
        for _ in range(300):
            if not await _running(a, sid):
                break
            await asyncio.sleep(0.05)
        assert not await _running(a, sid)
        # a session nobody ever attaches: the grace runs from its creation; one without the option stays
        lone = await a.create_session(shell="/bin/sh", args=["-c", "sleep 60"], kill_after_detach_s=grace)
        kept = await a.create_session(shell="/bin/sh", args=["-c", "sleep 60"])
        for _ in range(300):
            if not await _running(a, lone["id"]):
                break
            await asyncio.sleep(0.05)
        assert not await _running(a, lone["id"]) and await _running(a, kept["id"])


@pytest.mark.parametrize("bad", [0, -1, "5", True, 10**9])
async def test_kill_after_detach_must_be_a_positive_number_of_seconds(client: Client, bad: object) -> None:
    from vibest_pty.client import PtyError

    with pytest.raises(PtyError) as e:
        await client.create_session(shell="/bin/sh", kill_after_detach_s=bad)
    assert e.value.code == "invalid_argument" and "kill_after_detach_s" in e.value.message


async def test_reconnect_to_a_restarted_daemon_reports_the_sessions_it_lost(daemon_factory: Any) -> None:
    d = daemon_factory()
    c = await connect(d.socket, reconnect=True, give_up_after=30)
    try:
        s = await c.create_session(shell="/bin/sh", args=["-c", "sleep 60"], attach=True)
        d.stop()
        d.start()
        ev = await c.next_event("reconnect", timeout=30)
        [r] = ev["sessions"]
        assert (r["session"], r["mode"], r["error"]) == (s["id"], "failed", "daemon_restarted")  # another instance: not re-attached by id
        assert c.session(s["id"]) is None
        assert await c.list_sessions() == []  # the new connection serves requests
        assert c.server_pid == d.pid
    finally:
        await c.close()
