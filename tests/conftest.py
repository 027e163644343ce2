"""Shared fixtures: a real daemon process on a socket in a temp dir (vibest_pty.testing.Daemon, the harness the
benchmarks use too), and clients connected to it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from vibest_pty.client import Client
from vibest_pty.testing import Daemon, RawPeer

__all__ = ["ROOT", "Daemon", "RawPeer", "check_slow_reader", "collect_until_exit", "read_until"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tmpdir_short() -> Iterator[str]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="vp-")
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


@pytest.fixture
def daemon_factory(tmpdir_short: str) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None, args: list[str] | None = None, start: bool = True,
             subdir: str = "") -> Daemon:
        d = Daemon(os.path.join(tmpdir_short, subdir) if subdir else tmpdir_short, env, args)
        if start:
            d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    return daemon_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[Client]:
    c = await daemon.client()
    yield c
    await c.close()


async def collect_until_exit(
    c: Client, sid: int, timeout: float = 15.0, start: int = 0
) -> tuple[bytes, dict[str, Any]]:
    """All output of session sid from offset `start` up to its exit event, checking there is no gap and no
    duplicate (a resync, which would skip output, fails the check)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        ev = await asyncio.wait_for(c.events.get(), max(0.01, deadline - time.monotonic()))
        if ev.get("session") != sid:
            continue
        if ev["type"] == "output":
            assert ev["offset"] == start + len(out), (ev["offset"], start + len(out))
            out += ev["data"]
        elif ev["type"] == "exit":
            return bytes(out), ev
        elif ev["type"] == "resync":
            raise AssertionError(f"unexpected resync at {ev['snapshot']['offset']}")


def check_slow_reader(frames: list[dict[str, Any]], total: int) -> dict[str, int]:
    """A slow reader's stream of frames after its attach: contiguous output, resyncs that only jump forward,
    ending at offset `total`. Returns the counts of warnings by level and of resyncs."""
    levels = [f["level"] for f in frames if f["type"] == "backpressure_warning"]
    expected = None
    for f in frames:
        if f["type"] == "ok":
            expected = f["offset"]
        elif f["type"] == "output":
            assert f["offset"] == expected, "no gap, no duplicate"
            expected += len(f["data"])
        elif f["type"] == "resync":
            assert f["snapshot"]["offset"] >= (expected or 0)
            expected = f["snapshot"]["offset"]
    assert expected == total, (expected, total)
    return {"yellow": levels.count("yellow"), "red": levels.count("red"),
            "resync": sum(f["type"] == "resync" for f in frames)}


async def read_until(c: Client, sid: int, needle: bytes, timeout: float = 10.0, start: bytes = b"") -> bytes:
    """Output of sid until `needle` appears in it."""
    out = bytearray(start)
    deadline = time.monotonic() + timeout
    while needle not in out:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{needle!r} not seen; got {bytes(out[-500:])!r}")
        ev = await asyncio.wait_for(c.events.get(), remaining)
        if ev["type"] == "output" and ev["session"] == sid:
            out += ev["data"]
    return bytes(out)
