"""Create option env_mode and SessionInfo.process (what the SDK's node-pty spawn relies on), through a real daemon."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import Daemon, collect_until_exit
from vibest_pty.client import PtyError


async def test_env_mode_replace_gives_the_session_exactly_the_sent_environment(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory({"DAEMON_ONLY": "1"})
    c = await d.client()
    try:
        env = {"APP_ONLY": "yes", "PATH": "/usr/bin:/bin"}
        ok = await c.request("create", options={"shell": "/usr/bin/env", "env": env, "env_mode": "replace",
                                                "attach": True})
        out, _exit = await collect_until_exit(c, ok["session"]["id"])
        lines = set(out.decode().replace("\r", "").splitlines())
        # only what was sent, plus the terminal defaults the daemon always adds (TERM, COLORTERM, a UTF-8 LANG)
        assert lines == {"APP_ONLY=yes", "PATH=/usr/bin:/bin", "TERM=xterm-256color", "COLORTERM=truecolor",
                         "LANG=C.UTF-8"}, lines
        ok = await c.request("create", options={"shell": "/usr/bin/env", "env": env, "attach": True})
        out, _exit = await collect_until_exit(c, ok["session"]["id"])
        assert b"DAEMON_ONLY=1" in out and b"APP_ONLY=yes" in out  # merge (the default) keeps the daemon's
        with pytest.raises(PtyError) as e:
            await c.request("create", options={"shell": "/bin/sh", "env_mode": "inherit"})
        assert e.value.code == "invalid_argument"
    finally:
        await c.close()


async def test_session_info_process_is_the_foreground_program(daemon: Daemon) -> None:
    c = await daemon.client()
    try:
        ok = await c.request("create", options={"shell": "/bin/sh", "attach": True})
        sid = ok["session"]["id"]
        assert ok["session"]["process"] == "sh"
        await c.input(sid, b"exec sleep 30\n")
        deadline = time.monotonic() + 20
        process = ""
        while process != "sleep" and time.monotonic() < deadline:
            process = next(s for s in await c.list_sessions() if s["id"] == sid)["process"]
            await asyncio.sleep(0.05)
        assert process == "sleep"
        await c.request("kill", session=sid)
        while next(s for s in await c.list_sessions() if s["id"] == sid)["running"]:
            await asyncio.sleep(0.05)
        assert next(s for s in await c.list_sessions() if s["id"] == sid)["process"] == ""
    finally:
        await c.close()
