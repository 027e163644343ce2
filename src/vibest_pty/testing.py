"""The test and benchmark harness: a real daemon on a private socket (`Daemon`) and a raw, blocking peer on the
protocol's own decoder (`RawPeer`). tests/ and bench/ both use it, so there is one way to start a daemon and one
raw client. Standard library and this package only: importing it starts nothing.

`RawPeer` is what the asyncio client is not: synchronous and minimal (one reused receive buffer, msgpack's C
unpacker through protocol.FrameDecoder), so a benchmark measures the daemon rather than a client's event loop, and
a test can send any bytes, read frame by frame, or stop reading to push back on the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from . import protocol
from .client import Client, connect
from .protocol import FrameDecoder, Malformed

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
RECV_SIZE = 1 << 20  # one reused buffer: a fresh 1 MiB bytes per recv() costs the reader page faults (issue #10)


class RequestFailed(Exception):
    """An `error` reply to RawPeer.request (the reply is kept: `code`, `message`)."""

    def __init__(self, request: str, reply: dict[str, Any]) -> None:
        super().__init__(f"{request}: {reply.get('code')}: {reply.get('message')}")
        self.reply = reply
        self.code: str = reply.get("code", "")


class RawPeer:
    """A blocking Unix-socket peer: sends any message or bytes, and reads the daemon's frames one by one.

    Frames that arrive while waiting for something else (a reply, an event of another type) are kept in `events`,
    in order, for later. `timeout` (seconds, None: wait forever) applies to each receive. With `sock` instead of a
    path it speaks on a socket that is already connected (one end of a socketpair: a scripted daemon for a
    client's tests)."""

    def __init__(self, path: str | None = None, *, sock: socket.socket | None = None, timeout: float | None = 10.0,
                 rcvbuf: int | None = None, max_frame: int = protocol.DEFAULT_MAX_FRAME) -> None:
        if sock is not None:
            self.sock = sock
        else:
            assert path is not None, "a socket path or a connected socket"
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if rcvbuf is not None:  # before connect: a small buffer makes the daemon see a slow reader at once
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(path)
            except BaseException:
                self.sock.close()
                raise
        self.dec = FrameDecoder(max_frame)
        self.events: deque[dict[str, Any]] = deque()
        self.eof = False
        self.ids = 0
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)

    def fileno(self) -> int:
        return self.sock.fileno()

    def server_pid(self) -> int:
        """The daemon's pid (SO_PEERCRED)."""
        pid, _uid, _gid = _PEERCRED.unpack(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                _PEERCRED.size))
        return int(pid)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ------------------------------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(protocol.encode(msg))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_request(self, type: str, **fields: Any) -> int:
        """Send a request with the next id (1, 2, ...); returns the id."""
        self.ids += 1
        self.send({"type": type, "id": self.ids, **fields})
        return self.ids

    # -- receiving ----------------------------------------------------------------------------------------------

    def fill(self) -> int:
        """One receive into the decoder; the bytes read (0 at EOF)."""
        try:
            n = self.sock.recv_into(self._buf)
        except ConnectionResetError:
            n = 0
        if n == 0:
            self.eof = True
        else:
            self.dec.feed(self._view[:n])
        return n

    def frames(self) -> list[dict[str, Any]]:
        """The complete frames already received (none when the decoder holds only part of one)."""
        out = []
        for m in self.dec.messages():
            if isinstance(m, Malformed):
                raise AssertionError(f"the daemon sent a malformed frame: {m.reason}")
            out.append(m)
        return out

    def recv(self) -> dict[str, Any] | None:
        """The next frame (kept ones first), or None at EOF."""
        while not self.events:
            if self.eof:
                return None
            self.events.extend(self.frames())
            if not self.events:
                self.fill()
        return self.events.popleft()

    def read(self, n: int = 1) -> list[dict[str, Any]]:
        """The next n frames (fewer when the connection ends first)."""
        out: list[dict[str, Any]] = []
        while len(out) < n and (m := self.recv()) is not None:
            out.append(m)
        return out

    def next_message(self) -> dict[str, Any]:
        """The next frame; ConnectionError at EOF."""
        m = self.recv()
        if m is None:
            raise ConnectionError("the daemon closed the connection")
        return m

    def take(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first frame (kept ones first) for which match(frame) is true; the others stay in `events`, in
        order. ConnectionError at EOF."""
        for i, m in enumerate(self.events):
            if match(m):
                del self.events[i]
                return m
        while True:
            frames = self.frames()
            for i, m in enumerate(frames):
                if match(m):
                    self.events.extend(frames[:i])
                    self.events.extend(frames[i + 1 :])
                    return m
            self.events.extend(frames)
            if self.eof:
                raise ConnectionError("the daemon closed the connection")
            self.fill()

    def reply(self, rid: int) -> dict[str, Any]:
        """The ok or error of request `rid`."""
        return self.take(lambda m: m.get("id") == rid and m.get("type") in ("ok", "error"))

    def call(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send a request, return its reply, ok or error."""
        return self.reply(self.send_request(type, **fields))

    def request(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send a request, return its ok; an error reply raises RequestFailed."""
        reply = self.call(type, **fields)
        if reply["type"] == "error":
            raise RequestFailed(type, reply)
        return reply

    def create(self, **options: Any) -> dict[str, Any]:
        """Create a session; its SessionInfo."""
        info: dict[str, Any] = self.request("create", options=options)["session"]
        return info

    def wait_event(self, type: str, session: int | None = None) -> dict[str, Any]:
        """The first event of this type (and session)."""
        return self.take(lambda m: m.get("type") == type and (session is None or m.get("session") == session))

    def output_until(self, session: int, needle: bytes) -> bytes:
        """Output of `session` (kept events first, other frames dropped) until `needle` appeared in it."""
        got = bytearray()
        while needle not in got:
            m = self.next_message()
            if m.get("session") != session:
                continue
            if m.get("type") == "output":
                got += m["data"]
            elif m.get("type") == "resync":
                # This reader fell behind and the daemon dropped its backlog: the snapshot stands for what was
                # dropped (a bench filling sessions with 100,000 lines hung here for 600 s waiting for output
                # that had gone into a resync).
                got = bytearray(m["snapshot"]["data"])
        return bytes(got)

    async def afill(self, timeout: float = 60.0, size: int = RECV_SIZE) -> int:
        """fill() on the running loop (the socket becomes non-blocking): one receive of at most `size` bytes
        (a small size and a sleep between calls make a slow reader); 0 at EOF, TimeoutError after `timeout`."""
        self.sock.setblocking(False)
        n = await asyncio.wait_for(asyncio.get_running_loop().sock_recv_into(self.sock, self._view[:size]), timeout)
        if n == 0:
            self.eof = True
        else:
            self.dec.feed(self._view[:n])
        return n

    async def anext_message(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next frame (kept ones first), read on the running loop; ConnectionError at EOF."""
        while not self.events:
            self.events.extend(self.frames())
            if not self.events and not await self.afill(timeout):
                raise ConnectionError("the peer closed the connection")
        return self.events.popleft()

    async def read_until(self, type: str, timeout: float = 60.0, chunk_delay: float = 0.0) -> list[dict[str, Any]]:
        """Every frame up to and including the first of this type (kept ones first), read on the running loop;
        `chunk_delay` sleeps after each receive (a slow reader). AssertionError at EOF or after `timeout`."""
        out: list[dict[str, Any]] = list(self.events)
        self.events.clear()
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            out += self.frames()
            for i in range(seen, len(out)):
                if out[i].get("type") == type:
                    self.events.extend(out[i + 1 :])
                    return out[: i + 1]
            seen = len(out)
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0 or not await self.afill(remaining):
                raise AssertionError(f"no {type}: last {[m.get('type') for m in out[-5:]]}")
            if chunk_delay:
                await asyncio.sleep(chunk_delay)


class Daemon:
    """A vibest-pty-daemon subprocess on a socket in `directory` (a fresh temporary one, removed by stop(), when
    none is given). `env` adds RUST_PTY_* settings to this process's environment (`self.env`, which may be replaced
    before start()); the log (at `log_level`) is kept for failure messages.

    start() returns once this very process answers `hello` on the socket (its pid from SO_PEERCRED: another daemon
    already serving there is not mistaken for it); `start_s` is how long that took."""

    def __init__(self, directory: str | None = None, env: dict[str, str] | None = None,
                 args: list[str] | None = None, *, python: str = sys.executable, log_level: str = "debug",
                 command: list[str] | None = None) -> None:
        self.owns_dir = directory is None
        self.dir = directory if directory is not None else tempfile.mkdtemp(prefix="vp-")
        self.socket = os.path.join(self.dir, "pty", "socket")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.env = {**os.environ, "RUST_PTY_SOCKET_PATH": self.socket, "RUST_PTY_LOG_LEVEL": log_level,
                    **(env or {})}
        self.args = args or []
        self.command = command or [python, "-m", "vibest_pty"]  # e.g. an installed vibest-pty-daemon
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0
        self._log: IO[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 20.0) -> Daemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [*self.command, *self.args], env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        if wait:
            try:
                self.wait_ready(timeout, since=t0)
            except BaseException:
                self.stop()  # no process or log file left behind by a start that failed
                raise
        return self

    def wait_ready(self, timeout: float = 20.0, *, since: float | None = None) -> None:
        t0 = time.perf_counter() if since is None else since
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), RawPeer(self.socket, timeout=max(0.1, deadline - time.monotonic())) as p:
                if p.server_pid() == self.proc.pid:  # not another daemon still serving this socket
                    p.request("hello", protocol=protocol.PROTOCOL_VERSION, client="vibest_pty.testing")
                    self.start_s = time.perf_counter() - t0
                    return
            time.sleep(0.002)  # a failed connect costs microseconds; start_s stays exact to ~2 ms
        raise RuntimeError(f"daemon did not start within {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        """The end of the daemon's log."""
        try:
            return Path(self.log_path).read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the daemon, wait for it (SIGKILL after `timeout`); its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode

    async def client(self, hello: bool = True, **kw: Any) -> Client:
        """An asyncio client connected to this daemon (client.connect's keywords)."""
        return await connect(self.socket, hello=hello, **kw)

    def raw(self, **kw: Any) -> RawPeer:
        """A raw peer connected to this daemon (RawPeer's keywords: timeout, rcvbuf, max_frame)."""
        return RawPeer(self.socket, **kw)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()
