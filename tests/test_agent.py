"""Agent requests against a real daemon and real shells: run, wait, text, watch, command events, SessionInfo."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from vibest_pty.client import Client
from vibest_pty.client import PtyError as RequestError

SHELLS = ["bash", "zsh", "fish"]


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (scripts/system-deps.sh installs it)")
    return path


@pytest.fixture
def home() -> Any:
    d = tempfile.mkdtemp(prefix="vp-home-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


async def make(c: Client, home: Path, shell: str, args: list[str] | None = None, **opts: Any) -> int:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "ZDOTDIR": str(home), "HISTFILE": "",
           "LANG": "C.UTF-8"}
    info = await c.create_session(shell=need(shell), args=args or [], cwd=str(home), env=env, **opts)
    return int(info["id"])


async def run(c: Client, sid: int, command: str, timeout_ms: int = 30_000) -> dict[str, Any]:
    return await c.request("run", session=sid, command=command, timeout_ms=timeout_ms)


async def until_running(c: Client, sid: int) -> None:
    for _ in range(400):
        if next(s for s in await c.list_sessions() if s["id"] == sid)["shell_state"] == "running":
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the command did not start")


@pytest.mark.parametrize("shell", SHELLS)
async def test_run_returns_exit_codes_and_rendered_output(client: Client, home: Path, shell: str) -> None:
    sid = await make(client, home, shell)
    ok = await run(client, sid, "echo hello; printf 'bar\\rfoo\\n'")
    assert ok["exit_code"] == 0 and ok["output"] == "hello\nfoo" and ok["truncated"] is False
    start, end = ok["output_offsets"]
    assert 0 < start < end
    assert (await run(client, sid, "sh -c 'exit 3'"))["exit_code"] == 3
    # a fake end mark in the output does not end the command; the real one does
    fake = await run(client, sid, "printf '\\033]133;D;0\\007x\\n'; sleep 0.3; sh -c 'exit 4'")
    assert fake["exit_code"] == 4 and fake["output"] == "x"
    # a multi-line command is one command
    multi = await run(client, sid, "echo one\necho two")
    assert multi["exit_code"] == 0 and multi["output"] == "one\ntwo"
    info = next(s for s in await client.list_sessions() if s["id"] == sid)
    assert info["shell_state"] == "prompt" and info["last_command"]["exit_code"] == 0
    assert "echo two" in info["last_command"]["command"]


@pytest.mark.parametrize("shell", SHELLS)
async def test_run_of_ten_thousand_lines_and_stdin(client: Client, home: Path, shell: str) -> None:
    sid = await make(client, home, shell)
    ok = await run(client, sid, "seq 1 10000")
    lines = ok["output"].split("\n")
    assert lines == [str(i) for i in range(1, 10001)]
    # a command reading stdin: it waits; we type its input, then its end comes
    task = asyncio.ensure_future(run(client, sid, "head -n 1"))
    await until_running(client, sid)
    await client.request("wait", session=sid, **{"for": "idle"}, idle_ms=300, timeout_ms=10_000)
    await client.input(sid, b"typed line\r")
    ok = await task
    assert ok["exit_code"] == 0 and ok["output"].endswith("typed line")


@pytest.mark.parametrize("shell", SHELLS)
async def test_ctrl_c_timeout_and_busy(client: Client, home: Path, shell: str) -> None:
    sid = await make(client, home, shell)
    with pytest.raises(RequestError) as e:
        await run(client, sid, "echo started; sleep 30", timeout_ms=1500)
    assert e.value.code == "timeout" and "started" in (e.value.reply or {}).get("output", "")
    with pytest.raises(RequestError) as e:
        await run(client, sid, "echo no")
    assert e.value.code == "busy"
    events = await client.attach_session(sid, snapshot=False)
    del events
    await client.input(sid, b"\x03")
    ev = await client.next_event("command", session=sid, timeout=10)
    assert ev["phase"] == "end" and ev["exit_code"] == 130
    ok = await client.request("wait", session=sid, **{"for": "prompt"}, timeout_ms=10_000)
    assert ok["shell_state"] == "prompt"
    assert (await run(client, sid, "true"))["exit_code"] == 0


async def test_command_events_are_in_stream_order_with_output(client: Client, home: Path) -> None:
    sid = await make(client, home, "bash")
    await client.request("wait", session=sid, **{"for": "prompt"}, timeout_ms=10_000)
    await client.attach_session(sid, snapshot=False)
    seen: list[dict[str, Any]] = []
    client.on("command", seen.append)
    out = bytearray()
    client.on("output", lambda ev: out.extend(ev["data"]) if ev["session"] == sid else None)
    ok = await run(client, sid, "echo marker-1")
    await asyncio.sleep(0.2)
    start, end = [e for e in seen if e["session"] == sid][-2:]
    assert (start["phase"], end["phase"]) == ("start", "end") and start["seq"] == end["seq"]
    assert end["exit_code"] == 0 and start["command"] == "echo marker-1"
    assert [start["offset"], end["offset"]] == ok["output_offsets"]


async def test_run_output_equals_what_the_screen_shows(client: Client, home: Path) -> None:
    sid = await make(client, home, "bash", cols=40)
    await run(client, sid, "clear")
    ok = await run(client, sid, "printf 'wide: \\u4e16\\u754c\\n'; printf '%.0sx' $(seq 1 60); echo; echo done")
    screen = (await client.request("text", session=sid, scope="screen"))["text"]
    # the screen shows the prompt line, the output (the 60 x's soft-wrapped at 40, joined), the next prompt
    assert ok["output"] in screen
    assert ok["output"] == "wide: \u4e16\u754c\n" + "x" * 60 + "\ndone"
    since = await client.request("text", session=sid, since=ok["output_offsets"][0])
    assert since["text"].startswith(ok["output"])
    everything = await client.request("text", session=sid, scope="all")
    assert ok["output"] in everything["text"]


async def test_bash_user_prompt_command_norc_and_login(client: Client, home: Path) -> None:
    (home / ".bashrc").write_text("PROMPT_COMMAND='echo \"[pc $?]\" >> ~/pc.log'\nPS1='mine> '\n")
    (home / ".bash_profile").write_text("export FROM_PROFILE=yes\n")
    sid = await make(client, home, "bash")
    ok = await run(client, sid, "sh -c 'exit 6'")
    assert ok["exit_code"] == 6
    assert "[pc 6]" in (home / "pc.log").read_text()
    screen = (await client.request("text", session=sid, scope="screen"))["text"]
    assert "mine> " in screen
    norc = await make(client, home, "bash", ["--norc"])
    assert (await run(client, norc, "echo P=$PS1"))["output"] != "P=mine> "
    login = await make(client, home, "bash", ["-l"])
    assert (await run(client, login, "echo $FROM_PROFILE"))["output"] == "yes"


async def test_without_integration_run_says_so(client: Client, home: Path) -> None:
    sid = await make(client, home, "bash", shell_integration=False)
    with pytest.raises(RequestError) as e:
        await run(client, sid, "echo hi")
    assert e.value.code == "no_shell_integration"
    other = await client.create_session(shell="/bin/cat")
    with pytest.raises(RequestError) as e:
        await run(client, int(other["id"]), "echo hi")
    assert e.value.code == "no_shell_integration"
    with pytest.raises(RequestError) as e:
        await client.request("wait", session=sid, **{"for": "nope"}, timeout_ms=10)
    assert e.value.code == "invalid_argument"


async def test_wait_for_text_idle_and_exit(client: Client, home: Path) -> None:
    sid = await make(client, home, "bash")
    await client.request("wait", session=sid, **{"for": "prompt"}, timeout_ms=10_000)
    waiting = asyncio.ensure_future(
        client.request("wait", session=sid, **{"for": "text"}, pattern=r"ready-\d+", timeout_ms=10_000))
    await client.input(sid, b"sleep 0.3; echo ready-$((40+2))\r")
    assert (await waiting)["match"] == "ready-42"
    with pytest.raises(RequestError) as e:
        await client.request("wait", session=sid, **{"for": "text"}, pattern="never-shown", timeout_ms=300)
    assert e.value.code == "timeout"
    exiting = asyncio.ensure_future(client.request("wait", session=sid, **{"for": "exit"}, timeout_ms=10_000))
    await client.input(sid, b"exit 7\r")
    assert (await exiting)["code"] == 7


async def test_watch_sees_sessions_made_by_another_connection(client: Client, daemon: Any, home: Path) -> None:
    await client.request("watch")
    seen: list[dict[str, Any]] = []
    for t in ("session_created", "session_exited", "session_removed", "command"):
        client.on(t, seen.append)
    other = await daemon.client()
    try:
        sid = await make(other, home, "bash")
        await run(other, sid, "sh -c 'exit 2'")
        await other.input(sid, b"exit\r")
        await asyncio.sleep(0.1)
        for _ in range(100):
            if any(e["type"] == "session_exited" for e in seen):
                break
            await asyncio.sleep(0.05)
        await other.kill(sid)  # removes the exited session
        for _ in range(100):
            if any(e["type"] == "session_removed" for e in seen):
                break
            await asyncio.sleep(0.05)
    finally:
        await other.close()
    kinds = [e["type"] for e in seen if e.get("session") == sid]
    assert kinds[0] == "session_created" and "session_exited" in kinds and kinds[-1] == "session_removed"
    ends = [e for e in seen if e["type"] == "command" and e.get("session") == sid]
    assert any(e["exit_code"] == 2 for e in ends)
    await client.request("unwatch")


async def test_python_client_agent_methods(client: Client, home: Path) -> None:
    sid = await make(client, home, "bash")
    assert (await client.wait_for(sid, "prompt", timeout_ms=10_000))["shell_state"] == "prompt"
    ok = await client.run_command(sid, "echo via-client; false", timeout_ms=10_000)
    assert ok["exit_code"] == 1 and ok["output"] == "via-client"
    assert "via-client" in (await client.get_text(sid, "all"))["text"]
    assert (await client.get_text(sid, since=ok["output_offsets"][0]))["text"].startswith("via-client")
    assert (await client.wait_for(sid, "idle", idle_ms=100, timeout_ms=10_000))["offset"] > 0
    assert any(s["id"] == sid for s in await client.watch())
    await client.unwatch()
