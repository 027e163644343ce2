"""Sessions through a real daemon: spawn, output, input, resize, exit status, kill, signal, attach/replay."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess

import pytest

from vibest_pty.client import Client, PtyError

from .conftest import Daemon, collect_until_exit, read_until


async def run_cmd(c: Client, script: str, **opts: object) -> tuple[bytes, dict[str, object]]:
    s = await c.create(shell="/bin/sh", args=["-c", script], attach=True, **opts)
    return await collect_until_exit(c, s["id"])


async def test_exit_code_and_output(client: Client) -> None:
    out, ev = await run_cmd(client, "printf 'hello'; exit 3")
    assert out == b"hello"
    assert (ev["code"], ev["signal"]) == (3, None)


async def test_exit_by_signal(client: Client) -> None:
    out, ev = await run_cmd(client, "printf bye; kill -9 $$")
    assert out == b"bye"
    assert (ev["code"], ev["signal"]) == (None, 9)


async def test_last_output_before_exit_is_never_lost(client: Client) -> None:
    """node-pty#72 loses the tail of short commands; we must not, 200 times in a row."""
    sids = []
    for i in range(200):
        s = await client.create(shell="/bin/sh", args=["-c", f"printf 'tail-{i}-end'"], attach=True)
        sids.append(s["id"])
    outs: dict[int, bytearray] = {sid: bytearray() for sid in sids}
    exited: set[int] = set()
    while len(exited) < len(sids):
        ev = await asyncio.wait_for(client.events.get(), 30)
        if ev["type"] == "output":
            assert ev["session"] not in exited, "output after exit"
            outs[ev["session"]] += ev["data"]
        elif ev["type"] == "exit":
            exited.add(ev["session"])
            assert ev["code"] == 0
    for i, sid in enumerate(sids):
        assert bytes(outs[sid]) == f"tail-{i}-end".encode()


async def test_environment_and_controlling_terminal(client: Client, tmp_path: object) -> None:
    out, _ev = await run_cmd(
        client,
        'echo "T=$TERM C=$COLORTERM L=$LANG X=$X"; ps -o tty=,sid=,pgid= -p $$; echo "pid=$$"; '
        # ls straight to the terminal, not into a pipeline: the shell holds a pipeline's pipe fds while it forks
        # the pipeline's other commands, so `ls /proc/$$/fd | sort` could list them (a race seen under load).
        "ls -C -w 200 /proc/$$/fd; stty size",
        env={"X": "y z"}, cols=100, rows=30,
    )
    text = out.decode()
    assert "T=xterm-256color C=truecolor L=C.UTF-8 X=y z" in text
    lines = text.replace("\r", "").split("\n")
    tty, sid, pgid = lines[1].split()
    pid = lines[2].split("=")[1]
    assert tty.startswith("pts/")
    assert sid == pid == pgid, "the child leads its own session and process group"
    assert sorted(lines[3].split(), key=int) == ["0", "1", "2"], f"only fds 0/1/2 inherited: {lines[3]}"
    assert "30 100" in text


async def test_no_daemon_fd_leaks_into_child(client: Client) -> None:
    out, _ = await run_cmd(client, "exec ls -l /proc/self/fd")
    targets = [ln.split("->")[-1].strip() for ln in out.decode().splitlines() if "->" in ln]
    # fds 0,1,2 are the pts and 3 is ls's own directory handle; nothing of the daemon's (socket, lock, master).
    assert len(targets) <= 4, targets
    assert not any("socket" in t or "ptmx" in t or ".lock" in t for t in targets), targets


async def test_cwd_and_bad_cwd(client: Client, tmp_path: object) -> None:
    out, _ = await run_cmd(client, "pwd", cwd="/usr")
    assert out.strip() == b"/usr"
    with pytest.raises(PtyError) as e:
        await client.create(shell="/bin/sh", cwd="/nonexistent/dir")
    assert e.value.code == "invalid_argument"
    with pytest.raises(PtyError) as e:
        await client.create(shell="/bin/sh", cwd="relative")
    assert e.value.code == "invalid_argument"


async def test_bad_shell_is_spawn_failed(client: Client) -> None:
    with pytest.raises(PtyError) as e:
        await client.create(shell="/nonexistent/shell")
    assert e.value.code == "spawn_failed"
    assert "No such file" in e.value.message
    with pytest.raises(PtyError) as e:
        await client.create(shell="/etc/passwd")
    assert e.value.code == "spawn_failed"


async def test_shell_found_in_path_and_args_are_data(client: Client) -> None:
    s = await client.create(shell="printf", args=["%s|", "$(id)", "; rm -rf /", "a b"], attach=True)
    out, _ = await collect_until_exit(client, s["id"])
    assert out == b"$(id)|; rm -rf /|a b|"


async def test_random_binary_output_is_byte_exact(client: Client) -> None:
    rnd = random.Random(7)
    payload = bytes(rnd.randrange(256) for _ in range(200_000))
    path = f"/tmp/vp-bin-{os.getpid()}"
    with open(path, "wb") as f:
        f.write(payload)
    try:
        # Raw mode so the line discipline does not translate \n or eat control bytes.
        out, ev = await run_cmd(client, f"stty raw -echo; cat {path}; sleep 0.1")
    finally:
        os.unlink(path)
    assert ev["code"] == 0
    assert out == payload


async def test_one_mib_paste_arrives_intact(client: Client) -> None:
    rnd = random.Random(1)
    paste = bytes(rnd.randrange(32, 127) for _ in range(1 << 20))
    s = await client.create(
        shell="/bin/sh", args=["-c", "stty raw -echo; head -c 1048576 | sha256sum; sleep 0.1"], attach=True
    )
    await asyncio.sleep(0.2)  # let stty run before the bytes arrive
    await client.input(s["id"], paste)
    out, _ev = await collect_until_exit(client, s["id"], timeout=60)
    assert hashlib.sha256(paste).hexdigest().encode() in out


async def test_input_queue_full(daemon_factory: object) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_INPUT_QUEUE_BYTES": "65536"})  # type: ignore[operator]
    c = await d.client()
    s = await c.create(shell="/bin/sh", args=["-c", "sleep 30"])  # never reads its input
    with pytest.raises(PtyError) as e:
        for _ in range(100):
            await c.input(s["id"], b"x" * 16384)
    assert e.value.code == "input_queue_full"
    st = await c.stats()
    assert st["sessions"] == 1
    await c.kill(s["id"])
    await c.close()


async def test_input_is_echoed_in_order_from_two_connections(daemon: Daemon) -> None:
    a, b = await daemon.client(), await daemon.client()
    s = await a.create(shell="/bin/sh", args=["-c", "stty -echo; cat"], attach=True)
    await b.attach(s["id"])
    await asyncio.sleep(0.2)
    for i in range(50):  # each waits for its ok, so the daemon receives them in this order
        await (a if i % 2 else b).input(s["id"], f"line{i}\n")
    out = await read_until(a, s["id"], b"line49")
    got = [ln for ln in out.decode().replace("\r", "").split("\n") if ln.startswith("line")]
    assert got == [f"line{i}" for i in range(50)]
    await a.close()
    await b.close()


async def test_resize_reaches_child_and_last_resize_wins(client: Client) -> None:
    s = await client.create(
        shell="/bin/sh",
        args=["-c", "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"], attach=True
    )
    await read_until(client, s["id"], b"ready")
    await client.resize(s["id"], 120, 40)
    await client.resize(s["id"], 132, 43)
    out = await read_until(client, s["id"], b"43 132")
    assert b"43 132" in out
    info = next(x for x in await client.list() if x["id"] == s["id"])
    assert (info["cols"], info["rows"]) == (132, 43)
    await client.kill(s["id"])


async def test_resize_and_input_after_exit_are_errors(client: Client) -> None:
    _, ev = await run_cmd(client, "exit 0")
    sid = ev["session"]
    for coro in (client.resize(sid, 10, 10), client.input(sid, "x"), client.signal(sid, "INT")):
        with pytest.raises(PtyError) as e:
            await coro
        assert e.value.code == "session_exited"
    # The daemon is unharmed.
    assert (await client.hello())["protocol"] == 1


async def test_signal_by_name_and_number(client: Client) -> None:
    s = await client.create(shell="/bin/sh", args=["-c", "exec sleep 30"], attach=True)
    await asyncio.sleep(0.1)
    await client.signal(s["id"], "TERM")
    _, ev = await collect_until_exit(client, s["id"])
    assert ev["signal"] == 15
    s = await client.create(shell="/bin/sh", args=["-c", "exec sleep 30"], attach=True)
    await asyncio.sleep(0.1)
    await client.signal(s["id"], 2)
    _, ev = await collect_until_exit(client, s["id"])
    assert ev["signal"] == 2
    with pytest.raises(PtyError) as e:
        await client.signal(s["id"] + 100, "INT")
    assert e.value.code == "session_not_found"


async def test_kill_hangs_up_then_escalates(daemon_factory: object) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_KILL_GRACE_MS": "300"})  # type: ignore[operator]
    c = await d.client()
    s = await c.create(shell="bash", args=["--norc", "-i"], attach=True)
    await asyncio.sleep(0.2)
    await c.kill(s["id"])
    _, ev = await collect_until_exit(c, s["id"])
    assert ev["signal"] == 1, "an interactive shell dies of SIGHUP"
    s = await c.create(shell="/bin/sh", args=["-c", "trap '' HUP TERM; echo armed; while :; do sleep 0.05; done"],
                       attach=True)
    await read_until(c, s["id"], b"armed")
    await c.kill(s["id"])
    _, ev = await collect_until_exit(c, s["id"])
    assert ev["signal"] == 9, "a child that ignores SIGHUP gets SIGKILL after the grace"
    # Exited sessions stay listed until killed again, which removes them.
    assert any(x["id"] == s["id"] and not x["running"] for x in await c.list())
    await c.kill(s["id"])
    assert not any(x["id"] == s["id"] for x in await c.list())
    with pytest.raises(PtyError) as e:
        await c.kill(s["id"])
    assert e.value.code == "session_not_found"
    await c.close()


async def test_no_zombies_after_exits(daemon: Daemon, client: Client) -> None:
    for _ in range(20):
        await run_cmd(client, "true")
    out = subprocess.run(["ps", "--ppid", str(daemon.pid), "-o", "stat="], capture_output=True, text=True).stdout
    assert "Z" not in out


async def test_session_ids_unique_and_exited_kept_up_to_limit(daemon_factory: object) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_MAX_EXITED": "3"})  # type: ignore[operator]
    c = await d.client()
    ids = []
    for _ in range(5):
        _, ev = await run_cmd(c, "true")
        ids.append(ev["session"])
    assert len(set(ids)) == 5
    listed = [x["id"] for x in await c.list()]
    assert listed == ids[-3:], "the oldest exited sessions are dropped first"
    await c.kill(ids[-1])
    _, ev = await run_cmd(c, "true")
    assert ev["session"] == ids[-1] + 1, "ids are never reused"
    await c.close()


async def test_session_info_fields(client: Client) -> None:
    s = await client.create(shell="/bin/sh", args=["-c", "sleep 30"], name="build", tags={"worktree": "wt1"},
                            cwd="/tmp", cols=90, rows=20)
    for key in ("id", "pid", "command", "name", "tags", "cwd", "title", "cols", "rows", "created_at",
                "last_attached_at", "running", "exit_code", "exit_signal", "clients"):
        assert key in s
    assert s["command"] == ["/bin/sh", "-c", "sleep 30"]
    assert (s["name"], s["tags"], s["cwd"], s["cols"], s["rows"]) == ("build", {"worktree": "wt1"}, "/tmp", 90, 20)
    assert s["running"] and s["clients"] == 0 and s["last_attached_at"] is None
    r = await client.attach(s["id"])
    assert r["session"]["clients"] == 1 and r["session"]["last_attached_at"] is not None
    await client.detach(s["id"])
    assert next(x for x in await client.list() if x["id"] == s["id"])["clients"] == 0
    await client.kill(s["id"])


async def test_attach_replay_since_and_no_gap(client: Client, daemon: Daemon) -> None:
    s = await client.create(shell="/bin/sh", args=["-c", "for i in $(seq 1 300); do echo n$i; done; sleep 30"])
    await asyncio.sleep(0.3)
    r = await client.attach(s["id"], since=0)
    assert "snapshot" not in r
    assert r["replay"].replace(b"\r", b"").startswith(b"n1\nn2\n")
    assert len(r["replay"]) == r["offset"]
    # A second connection attaching from the middle gets exactly the bytes after `since`.
    c2 = await daemon.client()
    r2 = await c2.attach(s["id"], since=10)
    assert r2["replay"] == r["replay"][10:] and r2["offset"] == r["offset"]
    with pytest.raises(PtyError) as e:
        await c2.attach(s["id"], since=r["offset"] + 1)
    assert e.value.code == "invalid_argument"
    r3 = await c2.attach(s["id"], snapshot=False)
    assert "snapshot" not in r3 and "replay" not in r3
    r4 = await c2.attach(s["id"])
    assert r4["snapshot"]["offset"] == r4["offset"]
    await c2.close()
    await client.kill(s["id"])


async def test_attach_since_outside_window_gets_snapshot(daemon_factory: object) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_REPLAY_BYTES": "100"})  # type: ignore[operator]
    c = await d.client()
    s = await c.create(shell="/bin/sh", args=["-c", "seq 1 200; sleep 30"])
    await asyncio.sleep(0.3)
    r = await c.attach(s["id"], since=0)
    assert "replay" not in r and r["snapshot"]["offset"] == r["offset"]
    r = await c.attach(s["id"], since=r["offset"] - 50)
    assert len(r["replay"]) == 50
    await c.kill(s["id"])
    await c.close()


async def test_attach_exited_session_gets_exit(client: Client) -> None:
    _, ev = await run_cmd(client, "echo done; exit 5")
    r = await client.attach(ev["session"])
    assert r["session"]["running"] is False and r["session"]["exit_code"] == 5
    ev2 = await client.next_event("exit")
    assert ev2["code"] == 5


async def test_create_with_attach_gets_first_byte(client: Client) -> None:
    out, _ = await run_cmd(client, "printf first")
    assert out.startswith(b"first")


async def test_session_limit(daemon_factory: object) -> None:
    d: Daemon = daemon_factory(env={"RUST_PTY_MAX_SESSIONS": "2"})  # type: ignore[operator]
    c = await d.client()
    a = await c.create(shell="/bin/sh", args=["-c", "sleep 30"])
    await c.create(shell="/bin/sh", args=["-c", "sleep 30"])
    with pytest.raises(PtyError) as e:
        await c.create(shell="/bin/sh")
    assert e.value.code == "limit_reached"
    await c.attach(a["id"], snapshot=False)
    await c.kill(a["id"])
    await c.next_event("exit")
    await c.create(shell="/bin/sh", args=["-c", "sleep 30"])  # room again once one has exited
    await c.close()


async def test_removing_an_attached_exited_session(daemon: Daemon) -> None:
    a, b = await daemon.client(), await daemon.client()
    _, ev = await run_cmd(a, "echo gone")
    await b.attach(ev["session"])
    await a.kill(ev["session"])  # removes the record while b is still subscribed
    st = await b.stats()
    assert st["sessions"] == 0 and st["queues"] == []
    with pytest.raises(PtyError) as e:
        await b.detach(ev["session"])
    assert e.value.code == "session_not_found"
    await a.close()
    await b.close()


async def test_attach_reply_comes_before_the_sessions_events(daemon: Daemon) -> None:
    """Attaching an exited session queues its exit at once: the ok must still come first on the wire."""
    c = await daemon.client()
    _, ev = await run_cmd(c, "printf x")
    for snapshot in (False, True):
        s = daemon.raw()
        s.send({"type": "attach", "id": 5, "session": ev["session"], "snapshot": snapshot})
        first, second = s.read(2)
        assert (first["type"], second["type"]) == ("ok", "exit"), (first, second)
        s.close()
    await c.close()
