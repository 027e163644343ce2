"""Asyncio client for the daemon, on the same sans-I/O codec: requests as coroutines, events as a queue or
callbacks, per-session offsets, and reconnection with `since`. Used by the `vibest-pty` command and the test
suites (the benchmarks use the leaner blocking RawPeer of vibest_pty.testing, so they measure the daemon).

The methods are the TypeScript SDK's (sdk/typescript/src/client.ts) in snake_case:

| TypeScript SDK | Python client | returns |
| --- | --- | --- |
| `waitForConnection()` | `wait_for_connection()` (module function) / `connect()` | a `Client` (hello done) |
| `createSession(opts)` | `create_session(**opts)` (alias `create`) | `SessionInfo` |
| `attachSession(id, {snapshot, since})` | `attach_session(id, snapshot=, since=)` (alias `attach`) | `AttachResult` |
| `detachSession(id)` | `detach_session(id)` (alias `detach`) | None |
| `sendInput(id, data)` / `input(id, data)` | `send_input(id, data)` / `input(id, data)` | None |
| `resize`, `kill`, `signal` | `resize`, `kill`, `signal` | None |
| `listSessions()` | `list_sessions()` (alias `list`) | `list[SessionInfo]` |
| `getSnapshot(id)` | `get_snapshot(id)` (alias `snapshot`) | `Snapshot` |
| `stats()` | `stats()` | `Stats` |
| `sendRaw(msg)` | `send(msg)` | None |
| — | `prune()` | `list[int]` (removed ids) |
| — | `resync(id)` | None: a fresh snapshot arrives as a `resync` event |
| `on("output", fn)` ... | `on("output", fn)` / `events` / `next_event("output")` | |
| reconnect (automatic) | `connect(reconnect=True)` or `await client.reconnect()` | |

Per-session state: for every session this client attached (or created with `attach=True`) it keeps the next
output offset it expects. `output` events are trimmed to it (nothing already in the snapshot painted, nothing
twice), a `resync` moves it, and `reconnect()` re-attaches with `since` = that offset: the missed bytes come as
ordinary `output` events (replay), or, outside the daemon's replay window, a `resync` event with
`reason: "reconnect"`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import itertools
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, cast

from . import protocol, shapes
from .config import default_socket_path
from .protocol import FrameDecoder, Malformed
from .shapes import (
    AttachResult,
    BackpressureWarningEvent,
    CommandEvent,
    EmulatorStats,
    ErrorEvent,
    ExitEvent,
    HelloInfo,
    LastCommand,
    ListPage,
    OutputEvent,
    QueueStats,
    RunResult,
    SessionCreatedEvent,
    SessionExitedEvent,
    SessionInfo,
    SessionRemovedEvent,
    ShutdownEvent,
    Snapshot,
    Stats,
    TextResult,
    UpgradedEvent,
    WaitResult,
)

__all__ = [
    "AttachResult", "BackpressureWarningEvent", "Client", "CloseEvent", "CommandEvent", "ConnectionClosed",
    "DisconnectEvent", "EmulatorStats", "ErrorEvent", "Event", "EventQueue", "ExitEvent", "Handler", "HelloInfo",
    "LastCommand", "ListPage", "OutputEvent", "PtyError", "QueueStats", "ReconnectEvent", "ResyncEvent", "RunResult",
    "SessionCreatedEvent", "SessionExitedEvent", "SessionInfo", "SessionRemovedEvent", "SessionState",
    "ShutdownEvent", "Snapshot", "Stats", "TextResult", "UntrustedServer", "UpgradedEvent", "WaitResult",
    "check_peer", "connect",
    "wait_for_connection",
]

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# ---------------------------------------------------------------------------------------------------------------
# Typed shapes: what the daemon sends is described once, in shapes.py (shared with the daemon), and re-exported
# here (`from vibest_pty.client import SessionInfo`). TypedDicts, so a result is still the dict it always was.


class ResyncEvent(shapes.ResyncEvent):
    reason: NotRequired[str]  # set by this client: "reconnect" or "requested" (resync()); absent from the daemon


class CloseEvent(TypedDict):
    """Emitted by this client when the connection ends for good."""

    type: Literal["close"]
    reason: str | None


class DisconnectEvent(TypedDict):
    """Emitted by a reconnecting client when the connection drops (a `reconnect` or a `close` follows)."""

    type: Literal["disconnect"]
    reason: str | None


class ReconnectEvent(TypedDict):
    type: Literal["reconnect"]
    attempts: int
    sessions: builtins.list[dict[str, Any]]  # {session, since, mode: "replay"|"snapshot"|"failed", ...}


Event = (OutputEvent | ExitEvent | ResyncEvent | BackpressureWarningEvent | ShutdownEvent | ErrorEvent
         | CommandEvent | SessionCreatedEvent | SessionExitedEvent | SessionRemovedEvent | UpgradedEvent
         | CloseEvent | DisconnectEvent | ReconnectEvent)
# Handlers and the queue see events as plain dicts (their `type` tells which TypedDict above applies).
Handler = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------------------------
# Errors


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


# ---------------------------------------------------------------------------------------------------------------
# Plumbing: the event queue and per-session state


class EventQueue:
    """The events no handler took, in arrival order. Like asyncio.Queue (get, get_nowait, put, qsize, empty,
    full), plus `take(match)`, which removes the first matching event and leaves the others queued.

    With `maxsize`, `put` waits while the queue is full (the read loop then stops reading, pushing back on the
    daemon), except while someone waits in `take` for an event that is not queued yet: then it must be read,
    so the queue may exceed its bound for as long as that wait lasts (a timeout bounds it)."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: deque[dict[str, Any]] = deque()
        self._waiters: builtins.list[asyncio.Future[None]] = []
        self._room = asyncio.Event()
        self._room.set()
        self._selective = 0

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def put_nowait(self, ev: dict[str, Any]) -> None:
        if self.full():
            raise asyncio.QueueFull
        self._push(ev)

    async def put(self, ev: dict[str, Any]) -> None:
        while self.full() and not self._selective:
            self._room.clear()
            await self._room.wait()
        self._push(ev)

    def _push(self, ev: dict[str, Any]) -> None:
        self._items.append(ev)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _taken(self) -> None:
        if not self.full():
            self._room.set()

    def get_nowait(self) -> dict[str, Any]:
        if not self._items:
            raise asyncio.QueueEmpty
        ev = self._items.popleft()
        self._taken()
        return ev

    async def get(self) -> dict[str, Any]:
        return await self.take(lambda ev: True)

    async def take(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first queued event for which match(event) is true, waiting for one if none is queued."""
        while True:
            for i, ev in enumerate(self._items):
                if match(ev):
                    del self._items[i]
                    self._taken()
                    return ev
            w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(w)
            self._selective += 1
            self._room.set()  # the event waited for may be behind a full queue
            try:
                await w
            finally:
                self._selective -= 1


@dataclass(slots=True)
class SessionState:
    """What this client knows of a session it attached: the next output offset it expects."""

    next_offset: int
    attached: bool = True
    trimmed: int = 0  # bytes dropped from output events because they were already covered (snapshot, replay)


_OnOk = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------------------------
# The client


class Client:
    """One connection. Events (output, exit, backpressure_warning, resync, shutdown, error without an id, and
    close, which this client emits itself when the connection ends: {"type": "close", "reason": str | None};
    with reconnection also disconnect and reconnect) go to `events` (an EventQueue) unless a handler is set with
    on(type, fn).

    With `max_events`, the queue is bounded and the client stops reading the socket while it is full, so a slow
    consumer pushes back on the daemon (which then warns and resyncs) instead of growing memory. Replies queue
    behind unread events then: keep consuming events while awaiting requests."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int,
        max_events: int | None = None, *, socket_path: str | None = None, reconnect: bool = False,
        give_up_after: float = 30.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.max_frame = max_frame
        self.socket_path = socket_path
        self.auto_reconnect = reconnect
        self.give_up_after = give_up_after
        self._decoder = FrameDecoder(max_frame)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], _OnOk | None]] = {}
        self._handlers: dict[str, builtins.list[Handler]] = {}
        self.sessions: dict[int, SessionState] = {}
        self.events = EventQueue(max_events or 0)
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.server_pid = 0  # from SO_PEERCRED at connect
        self.server_version = ""  # from hello
        self.hello_info: HelloInfo | None = None
        self._closing = False
        self._finalized = False
        self._reconnecting = False
        self._reconnector: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._read_loop())

    # -- plumbing -----------------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason: str | None = None
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
            reason = str(exc)
        self._writer.close()  # send() fails from now on (until a reconnect)
        self._fail_pending(reason or "connection closed")
        if self._reconnecting:
            return  # a connection opened by a reconnect attempt: the attempt fails and the loop retries
        if self.auto_reconnect and not self._closing and self.socket_path is not None:
            self._emit_now({"type": "disconnect", "reason": reason})
            self._reconnecting = True
            self._reconnector = asyncio.current_task()
            try:
                await self._reconnect_loop()
                return
            except (OSError, ConnectionClosed) as exc:
                reason = f"gave up reconnecting after {self.give_up_after:g} s: {exc}"
            finally:
                self._reconnecting = False
        self._finalize(reason)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(reason))

    def _finalize(self, reason: str | None) -> None:
        if self._finalized:
            return
        self._finalized = True
        self.close_reason = reason
        self.closed.set()
        close = {"type": "close", "reason": reason}
        if self._emit(close) is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self.events.put_nowait(close)

    def _dispatch(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Resolve a reply, or run the event's handlers; returns an event that has none, for the queue."""
        t = msg.get("type")
        rid = msg.get("id")
        if t in ("ok", "error") and rid is not None:
            fut, on_ok = self._pending.pop(rid, (None, None))
            if fut is not None and not fut.done():
                if t == "ok":
                    if on_ok is not None:
                        on_ok(msg)  # now, before any later frame: keeps per-session offsets in order
                    fut.set_result(msg)
                else:
                    fut.set_exception(PtyError(msg.get("code", "internal"), msg.get("message", ""), msg))
            return None
        if t == "output":
            trimmed = self._trim(msg)
            if trimmed is None:
                return None
            msg = trimmed
        elif t == "resync":
            st = self.sessions.get(msg.get("session", -1))
            if st is not None:
                st.next_offset = int(msg["snapshot"]["offset"])
        return self._emit(msg)

    def _trim(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        """The output event without what this client already has (None when that is all of it)."""
        st = self.sessions.get(ev.get("session", -1))
        if st is None:
            return ev
        data: bytes = ev["data"]
        offset: int = ev["offset"]
        end = offset + len(data)
        if end <= st.next_offset:
            st.trimmed += len(data)
            return None
        if offset < st.next_offset:
            cut = st.next_offset - offset
            st.trimmed += cut
            ev = {**ev, "data": data[cut:], "offset": st.next_offset}
        st.next_offset = end
        return ev

    def _emit(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        handlers = self._handlers.get(msg.get("type", ""))
        if not handlers:
            return msg
        for fn in builtins.list(handlers):
            fn(msg)
        return None

    def on(self, event: str, fn: Handler) -> None:
        """Call fn for each event of this type instead of queueing it."""
        self._handlers.setdefault(event, []).append(fn)

    def off(self, event: str, fn: Handler) -> None:
        """Stop calling fn; events of this type are queued again once no handler is left."""
        handlers = self._handlers.get(event, [])
        if fn in handlers:
            handlers.remove(fn)

    def session(self, sid: int) -> SessionState | None:
        """This client's state for a session it attached (None when it never did, or detached)."""
        return self.sessions.get(sid)

    async def drain(self) -> None:
        """Wait until what send()/send_input() wrote has been handed to the socket (bounded write buffer)."""
        await self._writer.drain()

    def send(self, message: dict[str, Any]) -> None:
        """Send a message as is (no id is added): fire-and-forget."""
        if self.closed.is_set() or self._writer.is_closing():
            raise ConnectionClosed(self.close_reason or "connection closed")
        self._writer.write(protocol.encode(message))

    async def request(self, type: str, *, on_ok: _OnOk | None = None, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id and wait for its ok (returned) or error (raised as PtyError). `on_ok`
        runs when the ok is dispatched, before any frame after it."""
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[rid] = (fut, on_ok)
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

    async def next_event(self, *types: str, session: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of one of these types (and of `session`, if given), within timeout seconds. Other
        events stay queued, in order, for later."""

        def match(ev: dict[str, Any]) -> bool:
            return (not types or ev.get("type") in types) and (session is None or ev.get("session") == session)

        try:
            return await asyncio.wait_for(self.events.take(match), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {' or '.join(types) or 'event'} within {timeout}s") from None

    async def close(self) -> None:
        self._closing = True
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        for task in {self._task, self._reconnector} - {None, asyncio.current_task()}:
            assert task is not None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if not self.closed.is_set():
            self._fail_pending("closed by the client")
            self._finalize("closed by the client")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reconnection -------------------------------------------------------------------------------------------

    async def reconnect(self, timeout: float = 10.0) -> ReconnectEvent:
        """Open a new connection to the same socket (the old one is dropped), then re-attach every attached
        session with `since` = its next offset. Emits and returns the `reconnect` event."""
        old = self._task
        if not old.done():
            self._closing = True  # the old loop must not reconnect on its own
            self._writer.close()
            old.cancel()
            with contextlib.suppress(BaseException):
                await old
            self._closing = False
        self._fail_pending("reconnecting")
        self.closed.clear()
        self._finalized = False
        self._reconnecting = True
        try:
            return await asyncio.wait_for(self._reconnect_once(1), timeout)
        except BaseException:
            self._writer.close()
            self._finalize("reconnect failed")
            raise
        finally:
            self._reconnecting = False

    async def _reconnect_loop(self) -> None:
        deadline = time.monotonic() + self.give_up_after
        delay = 0.1
        attempts = 0
        while True:
            if self._closing:
                raise ConnectionClosed("closed by the client")
            attempts += 1
            try:
                await self._reconnect_once(attempts)
                return
            except (OSError, ConnectionClosed):
                if self._closing or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _reconnect_once(self, attempts: int) -> ReconnectEvent:
        assert self.socket_path is not None
        reader, writer, pid = await _open(self.socket_path)
        self._reader, self._writer = reader, writer
        self._decoder = FrameDecoder(self.max_frame)
        self.server_pid = pid
        self._task = self._loop.create_task(self._read_loop())
        before = self.hello_info.get("instance") if self.hello_info is not None else None
        after = (await self.hello()).get("instance")
        # Another daemon (restarted, not upgraded in place): its session ids name other programs' sessions.
        restarted = before is not None and after != before
        results: builtins.list[dict[str, Any]] = []
        for sid, st in builtins.list(self.sessions.items()):
            if not st.attached:
                continue
            since = st.next_offset
            result: dict[str, Any] = {"session": sid, "since": since, "mode": "failed"}
            results.append(result)
            if restarted:
                result["error"] = protocol.DAEMON_RESTARTED
                self.sessions.pop(sid, None)
                self._emit_now({"type": "error", "id": None, "code": protocol.DAEMON_RESTARTED, "session": sid,
                                "message": f"the daemon restarted (instance {before} is now {after}); "
                                           f"session {sid} is gone"})
                continue
            try:
                await self.request("attach", session=sid, snapshot=True, since=since,
                                   on_ok=functools.partial(self._reattached, sid, st, since, result=result))
            except ConnectionClosed:
                raise
            except PtyError as exc:
                result["error"] = exc.code
                self.sessions.pop(sid, None)
        ev: ReconnectEvent = {"type": "reconnect", "attempts": attempts, "sessions": results}
        self._emit_now(cast(dict[str, Any], ev))
        return ev

    def _reattached(self, sid: int, st: SessionState, since: int, ok: dict[str, Any], *,
                    result: dict[str, Any]) -> None:
        """Runs in dispatch: the replay becomes an output event, or the snapshot a resync, before what follows."""
        result["offset"] = ok["offset"]
        replay = ok.get("replay")
        if replay is not None:
            result["mode"] = "replay"
            result["replayed_bytes"] = len(replay)
            st.next_offset = since
            if replay:
                self._emit_now({"type": "output", "session": sid, "data": bytes(replay), "offset": since})
            st.next_offset = int(ok["offset"])
        else:
            result["mode"] = "snapshot"
            st.next_offset = int(ok["offset"])
            if ok.get("snapshot") is not None:
                self._emit_now({"type": "resync", "session": sid, "snapshot": ok["snapshot"],
                                "reason": "reconnect"})

    def _emit_now(self, ev: dict[str, Any]) -> None:
        """An event this client makes while dispatching: through the normal path (trimming, handlers, queue)."""
        out = self._dispatch(ev)
        if out is not None:
            self.events._push(out)  # in order, at once; the bound applies to what the daemon sends

    # -- the API (the SDK's names in snake_case; the older short names are aliases) --------------------------

    async def hello(self, client: str = "vibest_pty.client") -> HelloInfo:
        reply = await self.request("hello", protocol=protocol.PROTOCOL_VERSION, client=client)
        self.server_version = str(reply.get("version", ""))
        info = cast(HelloInfo, {k: v for k, v in reply.items() if k not in ("type", "id")})
        self.hello_info = info
        return info

    async def create_session(self, **options: Any) -> SessionInfo:
        """Create a session; returns its SessionInfo. Options: shell, args, cwd, env, cols, rows, name, tags,
        attach (this client then gets its output from byte 0), and whatever else the daemon accepts."""
        opts = {k: v for k, v in options.items() if v is not None}

        def on_ok(ok: dict[str, Any]) -> None:
            if opts.get("attach"):
                self.sessions[int(ok["session"]["id"])] = SessionState(0)

        return cast(SessionInfo, (await self.request("create", options=opts, on_ok=on_ok))["session"])

    async def attach_session(self, session: int, *, snapshot: bool = True, since: int | None = None
                             ) -> AttachResult:
        """Subscribe to a session's output: `output` events follow from the result's `offset` (with `since`
        in the replay window, `replay` holds the bytes from `since` to `offset` instead of a snapshot)."""
        fields: dict[str, Any] = {"session": session, "snapshot": snapshot}
        if since is not None:
            fields["since"] = since

        def on_ok(ok: dict[str, Any]) -> None:
            self.sessions[session] = SessionState(int(ok["offset"]))

        ok = await self.request("attach", on_ok=on_ok, **fields)
        return cast(AttachResult, {k: v for k, v in ok.items() if k not in ("type", "id")})

    async def detach_session(self, session: int) -> None:
        def on_ok(ok: dict[str, Any]) -> None:
            self.sessions.pop(session, None)

        await self.request("detach", session=session, on_ok=on_ok)

    async def resync(self, session: int) -> None:
        """A fresh picture of an attached session now (e.g. the consumer fell behind and dropped output): the
        session is re-attached, its snapshot delivered as a `resync` event (reason "requested") before any later
        output, which continues from the snapshot's offset."""

        def on_ok(ok: dict[str, Any]) -> None:
            self.sessions[session] = SessionState(int(ok["offset"]))
            if ok.get("snapshot") is not None:
                self._emit_now({"type": "resync", "session": session, "snapshot": ok["snapshot"],
                                "reason": "requested"})

        await self.request("attach", session=session, snapshot=True, on_ok=on_ok)

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

    async def list_sessions(self) -> builtins.list[SessionInfo]:
        sessions: builtins.list[SessionInfo] = []
        after = 0
        while True:  # the daemon pages a long list (`next`: docs/protocol.md)
            reply = await self.request("list", after=after)
            sessions += cast(builtins.list[SessionInfo], reply["sessions"])
            if reply.get("next") is None:
                return sessions
            after = reply["next"]

    async def get_snapshot(self, session: int) -> Snapshot:
        return cast(Snapshot, (await self.request("snapshot", session=session))["snapshot"])

    async def stats(self) -> Stats:
        return cast(Stats, {k: v for k, v in (await self.request("stats")).items() if k not in ("type", "id")})

    async def prune(self) -> builtins.list[int]:
        """Remove the records of every exited session; returns their ids."""
        return cast(builtins.list[int], (await self.request("prune"))["removed"])

    # -- agents (docs/protocol.md "Agents"): these replies come when the condition holds ------------------------

    async def run_command(self, session: int, command: str, *, timeout_ms: int | None = None) -> RunResult:
        """Type `command` at the shell's prompt and wait for its end: {exit_code, output, output_offsets,
        duration_ms, truncated}. Errors: busy, timeout (reply has the output so far), no_shell_integration."""
        fields: dict[str, Any] = {"session": session, "command": command}
        if timeout_ms is not None:
            fields["timeout_ms"] = timeout_ms
        return cast(RunResult, {k: v for k, v in (await self.request("run", **fields)).items() if k not in ("type", "id")})

    async def wait_for(self, session: int, condition: str, *, pattern: str | None = None,
                       idle_ms: int | None = None, timeout_ms: int | None = None) -> WaitResult:
        """Wait until `condition` ("prompt", "exit", "idle", "text" with a regex `pattern`) holds."""
        fields: dict[str, Any] = {"session": session, "for": condition}
        for k, v in (("pattern", pattern), ("idle_ms", idle_ms), ("timeout_ms", timeout_ms)):
            if v is not None:
                fields[k] = v
        return cast(WaitResult, {k: v for k, v in (await self.request("wait", **fields)).items() if k not in ("type", "id")})

    async def get_text(self, session: int, scope: str = "screen", *, since: int | None = None) -> TextResult:
        """Plain text rendered by the daemon's emulator: {text, offset, truncated}; `scope` is "screen",
        "scrollback" or "all"; with `since`, the text of the output after that offset instead."""
        fields: dict[str, Any] = {"session": session}
        if since is not None:
            fields["since"] = since
        else:
            fields["scope"] = scope
        return cast(TextResult, {k: v for k, v in (await self.request("text", **fields)).items() if k not in ("type", "id")})

    async def watch(self) -> builtins.list[SessionInfo]:
        """Get session_created / session_exited / session_removed and command end events of every session."""
        return cast(builtins.list[SessionInfo], (await self.request("watch"))["sessions"])

    async def unwatch(self) -> None:
        await self.request("unwatch")

    # The first names of this client, kept for its users (the CLI, the tests).
    create = create_session
    attach = attach_session
    detach = detach_session
    list = list_sessions
    snapshot = get_snapshot


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    # A small limit: the StreamReader pauses the socket past 2x this, so a full event queue reaches the daemon.
    reader, writer = await asyncio.open_unix_connection(path, limit=65536)
    try:
        pid, _uid = check_peer(writer.get_extra_info("socket"), path)
    except BaseException:
        writer.close()
        raise
    return reader, writer, pid


async def connect(
    socket_path: str | None = None, *, hello: bool = True, max_frame: int = protocol.DEFAULT_MAX_FRAME,
    max_events: int | None = None, reconnect: bool = False, give_up_after: float = 30.0,
) -> Client:
    """Connect to the daemon (raises OSError when nothing listens, UntrustedServer when another user's process
    does). With `reconnect`, a dropped connection is re-opened (backoff 0.1 s doubling to 2 s, for up to
    `give_up_after` seconds) and attached sessions resume from where they were."""
    path = socket_path or default_socket_path()
    reader, writer, pid = await _open(path)
    client = Client(reader, writer, max_frame, max_events, socket_path=path, reconnect=reconnect,
                    give_up_after=give_up_after)
    client.server_pid = pid
    if hello:
        await client.hello()
    return client


async def wait_for_connection(socket_path: str | None = None, *, timeout: float = 10.0, **kw: Any) -> Client:
    """Retry until the daemon answers hello (it may still be starting)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return await connect(socket_path, **kw)
        except UntrustedServer:
            raise
        except (OSError, ConnectionClosed):
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
