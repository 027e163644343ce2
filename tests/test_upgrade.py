"""In-place upgrade with a real daemon: same pid, same sessions and children, the same screens, clients that never
notice but for an `upgraded` event, and the failure modes that change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vibest_pty import __version__, protocol
from vibest_pty.client import PtyError
from vibest_pty.protocol import FrameDecoder

from .conftest import ROOT, collect_until_exit

FLOOD_CHUNKS = 60  # 60 x 10,000 lines with 0.1 s pauses: several seconds, so the upgrade lands mid-stream
NODE = shutil.which("node")
SDK_DIST = ROOT / "sdk" / "typescript" / "dist" / "index.js"


def _fds(pid: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            pass
    return sorted(out)


def _kinds(fds: list[str]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for target in fds:
        kind = target.split(":")[0] if ":" in target else target.rsplit("/", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


async def _wait_for(c: Any, sid: int, needle: bytes, timeout: float = 15.0, gone: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = await c.snapshot(sid)
        if (needle in snap["data"]) != gone:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} {'still' if gone else 'not'} on the screen of session {sid}")


def _raw_client(path: str, sid: int) -> socket.socket:
    """A client that attaches and then never reads (a small receive buffer fills at once)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    s.sendall(protocol.encode({"type": "hello", "id": 1, "protocol": 1})
              + protocol.encode({"type": "attach", "id": 2, "session": sid, "snapshot": False}))
    return s


def _read_raw_until(s: socket.socket, want: str, sid: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    dec = FrameDecoder(64 * 1024 * 1024)
    seen: list[dict[str, Any]] = []
    s.settimeout(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        dec.feed(data)
        for msg in dec.messages():
            assert isinstance(msg, dict)
            seen.append(msg)
            if msg.get("type") == want and msg.get("session") == sid:
                return seen
    raise AssertionError(f"no {want} for session {sid}; saw {[m.get('type') for m in seen][-20:]}")


async def test_upgrade_keeps_sessions_screens_and_connections(daemon_factory: Any, tmpdir_short: str) -> None:
    d = daemon_factory(env={"RUST_PTY_KILL_GRACE_MS": "6000"})
    c = await d.client()
    watcher = await d.client()
    hello = c.hello_info
    vim = await c.create(shell="vim", args=["-u", "NONE", "-N", "-n"], cols=80, rows=24)
    shell = await c.create(shell="/bin/bash", args=["--norc", "--noprofile", "-i"], env={"PS1": "$ "})
    exited = await c.create(shell="/bin/sh", args=["-c", "exit 7"])
    stubborn = await c.create(shell="/bin/sh", args=["-c", "trap '' HUP; while :; do sleep 0.1; done"])
    paste = await c.create(shell="/bin/sh", args=["-c", "stty raw -echo; sleep 3; head -c 1048576 | wc -c"])
    # The SDK client attaches (since 0) during the first second; the flood starts after it.
    flood_cmd = (f"sleep 1; for i in $(seq 0 {FLOOD_CHUNKS - 1}); do seq $((i*10000+1)) $((i*10000+10000));"
                 " sleep 0.1; done; exit 3")
    flood = await watcher.create(shell="/bin/sh", args=["-c", flood_cmd], attach=True)
    collector = asyncio.create_task(collect_until_exit(watcher, flood["id"], timeout=120))
    sdk = None
    if NODE is not None and SDK_DIST.exists():
        sdk = subprocess.Popen([NODE, str(ROOT / "tests" / "sdk_upgrade_client.mjs"), d.socket, str(flood["id"]),
                                SDK_DIST.as_uri()], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert sdk.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, sdk.stdout.readline)
        assert line == b"attached\n", (line, sdk.stderr.read() if sdk.stderr else b"")
    await c.input(vim["id"], "ihello from vim\x1b")
    await c.input(shell["id"], "seq 1 3000\n")
    await _wait_for(c, vim["id"], b"hello from vim")
    await _wait_for(c, vim["id"], b"-- INSERT --", gone=True)  # vim takes the ESC after its escape timeout
    await _wait_for(c, shell["id"], b"3000")
    deadline = time.monotonic() + 10
    while (await c.list())[2]["running"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await c.kill(stubborn["id"])  # HUP ignored: SIGKILL due in 6 s, across the upgrade
    c.send({"type": "input", "session": paste["id"], "data": b"p" * (1 << 20)})  # waits in the input queue
    stuck = _raw_client(d.socket, flood["id"])
    # Upgrade only once the non-reader's subscription really queues output (the kernel's socket buffers, ~200 KiB,
    # and the transport's 64 KiB are full): what fits in those moves as raw bytes and needs no resync, so an
    # upgrade that came earlier made the test depend on how far the flood had got on a loaded machine.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        queued = [q["bytes"] for q in (await c.stats())["queues"] if q["session"] == flood["id"]]
        if queued and max(queued) > 128 * 1024:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the non-reading client never queued output: {queued}")
    before = {s["id"]: s for s in await c.list()}
    snaps = {sid: await c.snapshot(sid) for sid in (vim["id"], shell["id"], exited["id"])}
    fds_before = _fds(d.pid)

    try:
        r = await c.request("upgrade")
    except Exception as exc:
        raise AssertionError(d.log()) from exc
    assert r["pid"] == d.pid and r["version"] == __version__ and r["previous_version"] == __version__
    assert r["pause_ms"] > 0
    ev = await c.next_event("upgraded", timeout=10)
    assert ev["version"] == __version__

    after = {s["id"]: s for s in await c.list()}
    assert set(after) == set(before)
    for sid, s in before.items():
        assert after[sid]["pid"] == s["pid"], sid
    for sid, snap in snaps.items():
        now = await c.snapshot(sid)
        assert now["data"] == snap["data"], (
            f"session {sid}'s screen changed across the upgrade: {snap['data'][-300:]!r} -> {now['data'][-300:]!r}")
        assert now["offset"] == snap["offset"]
    stats = await c.stats()
    assert stats["upgrades"] == 1 and stats["instance"] == hello["instance"]
    assert stats["last_upgrade_pause_ms"] == r["pause_ms"]
    c2 = await d.client()
    assert c2.hello_info["pid"] == d.pid and c2.hello_info["instance"] == hello["instance"]
    await c2.close()

    # the seq flood: every byte once, in order, offsets continuous; then its real exit code
    data, exit_ev = await collector
    expected = "".join(f"{i}\r\n" for i in range(1, FLOOD_CHUNKS * 10000 + 1)).encode()
    assert data == expected
    assert exit_ev["code"] == 3
    if sdk is not None:  # the SDK client saw the same: every byte once, offsets continuous, one `upgraded`
        out, err = await asyncio.get_running_loop().run_in_executor(None, sdk.communicate)
        assert sdk.returncode == 0, err.decode(errors="replace")
        seen = json.loads(out.decode().strip().splitlines()[-1])
        assert seen["gaps"] == 0 and seen["length"] == len(expected), seen
        assert seen["sha256"] == hashlib.sha256(expected).hexdigest()
        assert seen["upgraded"] == [{"version": __version__, "previous_version": __version__}]
        assert seen["disconnects"] == 0 and seen["code"] == 3
    # the pending kill still lands, the paste arrived whole, vim and the shell still answer
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        st = {s["id"]: s for s in await c.list()}
        if not st[stubborn["id"]]["running"]:
            break
        await asyncio.sleep(0.1)
    assert st[stubborn["id"]]["exit_signal"] == signal.SIGKILL
    await _wait_for(c, paste["id"], b"1048576", timeout=20)
    await c.input(shell["id"], "echo after-$((6*7))\n")
    await _wait_for(c, shell["id"], b"after-42")
    # the client that never read: a resync, not a hang
    seen = _read_raw_until(stuck, "resync", flood["id"])
    assert any(m.get("type") == "upgraded" for m in seen)
    stuck.close()
    # no fd leaked: what the daemon holds is what it held before, less what the three sessions that exited since
    # (a master and a pidfd each) and the closed clients held
    await _wait_for(c, paste["id"], b"1048576")
    deadline = time.monotonic() + 10
    while any(s["running"] for s in await c.list() if s["id"] == paste["id"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    fds_after = _fds(d.pid)
    closed_clients = 1 + (sdk is not None)  # the non-reading client and the SDK's
    assert len(fds_after) == len(fds_before) - 2 * 3 - closed_clients, (_kinds(fds_before), _kinds(fds_after))
    await c.close()
    await watcher.close()


async def test_upgrade_twice_and_to_another_version(daemon: Any, tmpdir_short: str) -> None:
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; exit $x"], attach=True)
    for n in (1, 2):
        r = await c.request("upgrade")
        assert r["pid"] == daemon.pid
        assert (await c.stats())["upgrades"] == n
    # a copy of the package that says it is 9.9.9, installed beside the old one
    pkg = Path(tmpdir_short) / "newer"
    shutil.copytree(ROOT / "src" / "vibest_pty", pkg / "vibest_pty")
    init = pkg / "vibest_pty" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', '"9.9.9"'))
    assert "9.9.9" in init.read_text()
    r = await c.request("upgrade", command=["/usr/bin/env", f"PYTHONPATH={pkg}", sys.executable, "-m", "vibest_pty"])
    assert r["version"] == "9.9.9" and r["previous_version"] == __version__ and r["pid"] == daemon.pid
    c2 = await daemon.client()
    assert c2.hello_info["version"] == "9.9.9"
    await c2.close()
    await c.input(s["id"], "5\n")
    ev = await c.next_event("exit", session=s["id"])
    assert ev["code"] == 5
    await c.close()


@pytest.mark.parametrize("command, why", [
    ([sys.executable, "-c", "import sys; sys.stderr.write('boom: cannot import'); sys.exit(1)"], "boom"),
    (["/nonexistent/vibest-pty-daemon"], "not found"),
])
async def test_upgrade_that_fails_preflight_changes_nothing(daemon: Any, command: list[str], why: str) -> None:
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; echo got-$x; read y"], attach=True)
    fds = _fds(daemon.pid)
    with pytest.raises(PtyError) as err:
        await c.request("upgrade", command=command)
    assert err.value.code == "upgrade_failed" and why in str(err.value)
    assert (await c.stats())["upgrades"] == 0
    await c.input(s["id"], "1\n")
    await _wait_for(c, s["id"], b"got-1")
    assert _fds(daemon.pid) == fds
    await c.close()


async def test_second_upgrade_while_one_is_in_progress_is_refused(daemon: Any) -> None:
    c = await daemon.client()
    first = asyncio.create_task(c.request("upgrade"))
    await asyncio.sleep(0)
    with pytest.raises(PtyError) as err:
        await c.request("upgrade")
    assert err.value.code == "upgrade_in_progress"
    assert (await first)["pid"] == daemon.pid
    await c.close()


async def test_sigusr2_upgrades_and_tells_every_client(daemon: Any) -> None:
    c = await daemon.client()
    os.kill(daemon.pid, signal.SIGUSR2)
    ev = await c.next_event("upgraded", timeout=20)
    assert ev["previous_version"] == __version__
    assert (await c.stats())["upgrades"] == 1
    await c.close()


async def test_signals_during_an_upgrade_never_kill_the_daemon(daemon: Any) -> None:
    """SIGUSR2's default action is to terminate: from execve until the new code has its handlers it is blocked
    (and handled after), so a burst of them upgrades once or twice, never kills."""
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; exit $x"], attach=True)
    # One every 5 ms for 3 s: most land while an upgrade's pre-flight runs (ignored: one is in progress), some
    # while the new code starts (held, then handled: another upgrade).
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and daemon.proc.poll() is None:
        os.kill(daemon.pid, signal.SIGUSR2)
        await asyncio.sleep(0.005)
    assert daemon.proc.poll() is None, daemon.log()
    await c.next_event("upgraded", timeout=20)
    await asyncio.sleep(1.0)  # a held one may start one more upgrade
    assert daemon.proc.poll() is None, daemon.log()
    assert (await c.stats())["upgrades"] >= 1
    await c.input(s["id"], "6\n")
    assert (await c.next_event("exit", session=s["id"], timeout=20))["code"] == 6
    await c.close()


async def test_the_watchdog_still_watches_after_an_upgrade(daemon: Any) -> None:
    """Its pipe moved across execve: SIGKILL of the upgraded daemon still hangs up every session (even a
    SIGHUP-ignoring loop) within 3 s."""
    from vibest_pty import watchdog

    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "trap '' HUP; while :; do sleep 0.2; done"])
    await c.request("upgrade")
    await asyncio.sleep(0.3)  # its sleep children have started
    members = watchdog.members({s["pid"]: 0})
    assert s["pid"] in members
    await c.close()
    daemon.stop(signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and watchdog.members({s["pid"]: 0}):
        await asyncio.sleep(0.05)
    assert not watchdog.members({s["pid"]: 0}), daemon.log()


async def test_cli_upgrade_prints_the_versions_and_the_pause(daemon: Any) -> None:
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; exit $x"], attach=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vibest_pty.cli", "--socket", daemon.socket, "--no-start", "upgrade",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    text = out.decode()
    assert f"{__version__} -> {__version__}" in text and f"pid {daemon.pid}" in text and "ms" in text, text
    ev = await c.next_event("upgraded")
    assert ev["version"] == __version__
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vibest_pty.cli", "--socket", daemon.socket, "--no-start", "upgrade", "--command",
        "/nonexistent/daemon", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 1 and b"not found" in err, (out, err)
    await c.input(s["id"], "4\n")
    assert (await c.next_event("exit", session=s["id"]))["code"] == 4
    await c.close()


async def test_an_execve_that_fails_resumes_the_old_code(daemon: Any, tmpdir_short: str) -> None:
    """The pre-flight passes, then execve fails (the script made itself non-executable): every flag is undone,
    the old code serves on (same sessions, same connection, the listening socket), nothing leaked."""
    script = Path(tmpdir_short) / "vanishing-daemon"
    script.write_text(f'#!/bin/sh\nchmod -x "$0"\nexec {sys.executable} -m vibest_pty "$@"\n')
    script.chmod(0o755)
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; echo got-$x; read y; exit $y"], attach=True)
    fds = _fds(daemon.pid)
    with pytest.raises(PtyError) as err:
        await c.request("upgrade", command=[str(script)])
    assert err.value.code == "upgrade_failed" and "execve" in str(err.value), err.value
    assert (await c.stats())["upgrades"] == 0
    await c.input(s["id"], "1\n")
    await _wait_for(c, s["id"], b"got-1")
    c2 = await daemon.client()  # still accepting
    assert c2.hello_info["pid"] == daemon.pid
    await c2.close()
    await asyncio.sleep(0.2)
    assert _fds(daemon.pid) == fds
    await c.input(s["id"], "9\n")
    assert (await c.next_event("exit", session=s["id"]))["code"] == 9
    r = await c.request("upgrade")  # and a later upgrade still works
    assert r["pid"] == daemon.pid
    await c.close()


async def test_a_pending_wait_refuses_the_upgrade_and_is_still_answered(daemon: Any) -> None:
    """A `wait` is a task of the old code: the upgrade is refused (nothing changed), the wait still answers."""
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; exit 0"])
    waiting = asyncio.create_task(c.request("wait", session=s["id"], **{"for": "exit"}))
    await asyncio.sleep(0.3)
    other = await daemon.client()
    with pytest.raises(PtyError) as err:
        await other.request("upgrade")
    assert err.value.code == "upgrade_failed" and "wait" in str(err.value)
    await c.input(s["id"], "\n")
    await asyncio.wait_for(waiting, 10)
    assert (await other.request("upgrade"))["pid"] == daemon.pid  # once answered, it goes ahead
    await other.close()
    await c.close()


async def test_a_requester_that_hangs_up_at_once_does_not_stop_the_upgrade(daemon: Any) -> None:
    c = await daemon.client()
    s = await c.create(shell="/bin/sh", args=["-c", "read x; exit $x"], attach=True)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(daemon.socket)
    raw.sendall(protocol.encode({"type": "hello", "id": 1, "protocol": 1})
                + protocol.encode({"type": "attach", "id": 2, "session": s["id"]})
                + protocol.encode({"type": "upgrade", "id": 3}))
    raw.close()
    ev = await c.next_event("upgraded", timeout=20)
    assert ev["version"] == __version__
    await c.input(s["id"], "2\n")
    assert (await c.next_event("exit", session=s["id"]))["code"] == 2
    assert (await c.stats())["connections"] == 1
    await c.close()


def test_the_daemons_start_path_imports_no_emulator_cli_web_or_shell_integration_code() -> None:
    """What the new code imports is the upgrade's pause: the native emulator (cffi, pyghostty) lives in the
    emulator processes, which keep running; the CLI, the web server and the shell-integration scripts are not
    the daemon's to load at start."""
    code = ("import sys, vibest_pty.server, uvloop; print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    banned = {"cffi", "pyghostty", "vibest_pty.emulator", "vibest_pty.vt", "vibest_pty.snapshot",
              "vibest_pty.responder", "vibest_pty.web", "vibest_pty.cli", "vibest_pty.client",
              "vibest_pty.shell_integration", "shutil"}
    loaded = {m for m in out if m in banned or any(m.startswith(b + ".") for b in banned)}
    assert not loaded, sorted(loaded)
