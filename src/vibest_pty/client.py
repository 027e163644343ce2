"""Asyncio client for the daemon, on the same sans-I/O codec: requests as coroutines, events as a queue or
callbacks. Used by the `vibest-pty` command, the benchmarks and the test suites."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from . import protocol
from .config import default_socket_path
from .protocol import FrameDecoder, Malformed

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PtyError(Exception):
    """An `error` reply; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply or {}


class ConnectionClosed(PtyError):
    def __init__(self, message: str = "connection closed") -> None:
        super().__init__("closed", message)


class UntrustedServer(PermissionError):
    """The process listening on the socket runs as another user (not us, not root): whoever created the socket
    would read every keystroke sent to it, so the client refuses to talk to it (docs/security.md)."""


def check_peer(sock: socket.socket, path: str, expected_uid: int | None = None) -> tuple[int, int]:
    """The server's (pid, uid) from SO_PEERCRED; raises UntrustedServer unless the uid is ours or root's."""
    uid_ok = os.getuid() if expected_uid is None else expected_uid
    pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    if uid not in (uid_ok, 0):
        raise UntrustedServer(
            f"refusing the server on {path}: it runs as uid {uid} (pid {pid}), not as uid {uid_ok} or root; "
            "another user may have created the socket to read what is typed into it")
    return pid, uid


class Client:
    """One connection. Events (output, exit, backpressure_warning, resync, shutdown, error without an id, and
    close, which this client emits itself when the connection ends: {"type": "close", "reason": str | None}) go
    to `events` (an asyncio.Queue) unless a handler is set with on(type, fn).

    With `max_events`, the queue is bounded and the client stops reading the socket while it is full, so a slow
    consumer pushes back on the daemon (which then warns and resyncs) instead of growing memory. Replies queue
    behind unread events then: keep consuming events while awaiting requests."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int,
        max_events: int | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_events or 0)
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.server_pid = 0  # from SO_PEERCRED at connect
        self.server_version = ""  # from hello
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    # -- plumbing -----------------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(262144)
                if not data:
                    break
                self._decoder.feed(data)
                for msg in self._decoder.messages():
                    if isinstance(msg, Malformed):
                        raise protocol.FrameError(f"daemon sent a malformed message: {msg.reason}")
                    event = self._dispatch(msg)
                    if event is not None:
                        await self.events.put(event)  # waits while a bounded queue is full
        except (OSError, protocol.FrameError) as exc:
            self.close_reason = str(exc)
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed(self.close_reason or "connection closed"))
            self._pending.clear()
            close = {"type": "close", "reason": self.close_reason}
            if self._emit(close) is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    self.events.put_nowait(close)

    def _dispatch(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Resolve a reply, or run the event's handlers; returns an event that has none, for the queue."""
        t = msg.get("type")
        rid = msg.get("id")
        if t in ("ok", "error") and rid is not None:
            fut = self._pending.pop(rid, None)
            if fut is not None and not fut.done():
                if t == "ok":
                    fut.set_result(msg)
                else:
                    fut.set_exception(PtyError(msg.get("code", "internal"), msg.get("message", ""), msg))
            return None
        return self._emit(msg)

    def _emit(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        handlers = self._handlers.get(msg.get("type", ""))
        if not handlers:
            return msg
        for fn in list(handlers):
            fn(msg)
        return None

    def on(self, event: str, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call fn for each event of this type instead of queueing it."""
        self._handlers.setdefault(event, []).append(fn)

    def off(self, event: str, fn: Callable[[dict[str, Any]], None]) -> None:
        """Stop calling fn; events of this type are queued again once no handler is left."""
        handlers = self._handlers.get(event, [])
        if fn in handlers:
            handlers.remove(fn)

    async def drain(self) -> None:
        """Wait until what send()/send_input() wrote has been handed to the socket (bounded write buffer)."""
        await self._writer.drain()

    def send(self, message: dict[str, Any]) -> None:
        """Send a message as is (no id is added): fire-and-forget."""
        if self.closed.is_set():
            raise ConnectionClosed(self.close_reason or "connection closed")
        self._writer.write(protocol.encode(message))

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id and wait for its ok (returned) or error (raised as PtyError)."""
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self.send({"type": type, "id": rid, **fields})
            await self._writer.drain()
        except (ConnectionClosed, OSError) as exc:
            self._pending.pop(rid, None)
            fut.cancel()
            if isinstance(exc, ConnectionClosed):
                raise
            raise ConnectionClosed(str(exc)) from None
        return await fut

    async def next_event(self, *types: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next queued event of one of these types (others are dropped), within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {types or 'event'} within {timeout}s")
            ev = await asyncio.wait_for(self.events.get(), remaining)
            if not types or ev.get("type") in types:
                return ev

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the API ------------------------------------------------------------------------------------------------

    async def hello(self, client: str = "vibest_pty.client") -> dict[str, Any]:
        reply = await self.request("hello", protocol=protocol.PROTOCOL_VERSION, client=client)
        self.server_version = str(reply.get("version", ""))
        return reply

    async def create(self, **options: Any) -> dict[str, Any]:
        """Create a session; returns its SessionInfo. Options: shell, args, cwd, env, cols, rows, name, tags,
        attach."""
        opts = {k: v for k, v in options.items() if v is not None}
        return (await self.request("create", options=opts))["session"]  # type: ignore[no-any-return]

    async def attach(self, session: int, *, snapshot: bool = True, since: int | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"session": session, "snapshot": snapshot}
        if since is not None:
            fields["since"] = since
        return await self.request("attach", **fields)

    async def detach(self, session: int) -> None:
        await self.request("detach", session=session)

    async def input(self, session: int, data: bytes | str) -> None:
        await self.request("input", session=session, data=data)

    def send_input(self, session: int, data: bytes | str) -> None:
        """Fire-and-forget input: errors arrive as `error` events."""
        self.send({"type": "input", "session": session, "data": data})

    async def resize(self, session: int, cols: int, rows: int) -> None:
        await self.request("resize", session=session, cols=cols, rows=rows)

    async def kill(self, session: int) -> None:
        await self.request("kill", session=session)

    async def signal(self, session: int, signal: int | str) -> None:
        await self.request("signal", session=session, signal=signal)

    async def list(self) -> list[dict[str, Any]]:
        return (await self.request("list"))["sessions"]  # type: ignore[no-any-return]

    async def snapshot(self, session: int) -> dict[str, Any]:
        return (await self.request("snapshot", session=session))["snapshot"]  # type: ignore[no-any-return]

    async def stats(self) -> dict[str, Any]:
        return await self.request("stats")

    async def prune(self) -> builtins.list[int]:
        """Remove the records of every exited session; returns their ids."""
        return (await self.request("prune"))["removed"]  # type: ignore[no-any-return]


async def connect(
    socket_path: str | None = None, *, hello: bool = True, max_frame: int = protocol.DEFAULT_MAX_FRAME,
    max_events: int | None = None,
) -> Client:
    """Connect to the daemon (raises OSError when nothing listens)."""
    path = socket_path or default_socket_path()
    # A small limit: the StreamReader pauses the socket past 2x this, so a full event queue reaches the daemon.
    reader, writer = await asyncio.open_unix_connection(path, limit=65536)
    try:
        pid, _uid = check_peer(writer.get_extra_info("socket"), path)
    except BaseException:
        writer.close()
        raise
    client = Client(reader, writer, max_frame, max_events)
    client.server_pid = pid
    if hello:
        await client.hello()
    return client


async def wait_for_connection(socket_path: str | None = None, *, timeout: float = 10.0) -> Client:
    """Retry until the daemon answers hello (it may still be starting)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return await connect(socket_path)
        except (OSError, ConnectionClosed):
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
