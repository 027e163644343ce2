"""The CLI's agent commands against a real daemon and bash: run (output, exit status, timeout), wait, ls."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

from tests.conftest import Daemon
from vibest_pty.client import Client


def cli(daemon: Daemon, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vibest_pty.cli", "--socket", daemon.socket, "--no-start", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})


async def test_cli_run_wait_and_ls(client: Client, daemon: Daemon) -> None:
    home = tempfile.mkdtemp(prefix="vp-home-")
    sid = str((await client.create_session(shell="bash", cwd=home, env={"HOME": home, "HISTFILE": ""}))["id"])
    loop = asyncio.get_running_loop()

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await loop.run_in_executor(None, lambda: cli(daemon, *args))

    r = await run("wait", sid, "--prompt", "--timeout", "20")
    assert r.returncode == 0, r.stderr
    r = await run("run", sid, "--", "sh", "-c", "echo out-line; exit 3")
    assert (r.returncode, r.stdout) == (3, "out-line\n"), r.stderr
    r = await run("run", sid, "--", "printf 'a\\rb\\n' | cat")
    assert (r.returncode, r.stdout) == (0, "b\n"), r.stderr
    ls = await run("ls")
    assert "prompt last=0" in ls.stdout, ls.stdout
    r = await run("run", sid, "--timeout", "1", "--", "echo partial; sleep 30")
    assert r.returncode == 124 and "partial" in r.stdout, (r.stdout, r.stderr)
    await client.signal(int(sid), "INT")
    r = await run("wait", sid, "--text", r"^partial$", "--timeout", "20")
    assert r.stdout == "partial\n", r.stdout
    assert r.returncode == 0, r.stderr
    await client.input(int(sid), b"sleep 0.2; exit 4\r")
    r = await run("wait", sid, "--exit", "--timeout", "20")
    assert r.returncode == 4, r.stderr
