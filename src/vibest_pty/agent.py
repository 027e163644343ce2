"""What agents ask of a session: command events with exit codes, `run`, `wait`, `text`, and `watch`.

Per session a `SessionAgent` sees every output byte in stream order (Session._to_clients calls `feed`), runs the
OSC 133 tracker over it (osc133.py) and turns its events into `command` frames for the session's subscribers, the
SessionInfo fields (`shell_state`, `last_command`) and wake-ups for pending `run`/`wait` requests. The `Hub`
(one per Manager) tells watching connections about every session's lifecycle and command ends.

`run` and `wait` can take long, so their replies are not reply slots (a slot would hold every later reply of the
connection in request order): the handler returns None and the reply is sent when the condition holds. Other
requests of the same connection are answered meanwhile, so these replies may come out of request order; clients
match replies by id.

Text is rendered through an emulator: the screen/scrollback of the session's own emulator (after exactly the
output so far, like a snapshot; feed.py), or, for `run` and `text since`, the raw output bytes fed to a scratch
emulator of the session's width (in an executor thread) (overwrites, `\\r` progress bars, wide characters and soft wraps
resolved as a person would see them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import protocol, shapes
from .flow import Slot
from .osc133 import CommandEvent, ShellTracker
from .protocol import ProtocolError
from .shapes import (
    RunResult,
    SessionCreatedEvent,
    SessionExitedEvent,
    SessionRemovedEvent,
    ShellFields,
    TextResult,
    WaitResult,
)

if TYPE_CHECKING:
    from .server import Connection
    from .session import Session

log = logging.getLogger("vibest_pty.agent")

TIMEOUT: str = "timeout"
BUSY: str = "busy"
NO_SHELL_INTEGRATION: str = "no_shell_integration"

MAX_OUTPUT_TEXT = 1024 * 1024  # run/text replies carry at most this much text (the end is kept)
MAX_CAPTURE = 4 * 1024 * 1024  # raw output of a running `run` kept for rendering (the end is kept)
MAX_TIMEOUT_MS = 24 * 3600 * 1000
DEFAULT_RUN_TIMEOUT_MS = 60_000
MAX_COMMAND = 64 * 1024
MAX_PATTERN = 4096
TEXT_POLL_S = 0.05  # a `wait for text` re-renders the screen at most this often while output flows


def new_nonce() -> str:
    return os.urandom(8).hex()  # what secrets.token_hex does, without importing hashlib/hmac (~1.5 MB RSS)


class SessionAgent:
    def __init__(
        self, session: Session, nonce: str | None, injected: bool, hub: Hub | None, shell: str | None = None
    ) -> None:
        self.session = session
        self.injected = injected
        self.shell = shell  # "bash" | "zsh" | "fish" when injected
        self.tracker = ShellTracker(nonce if injected else None)
        self.hub = hub
        self.last_output = time.monotonic()
        self.running_run = False  # a `run` is typing or waiting for its command
        self._wakers: list[asyncio.Future[None]] = []
        # capture for a `run`: raw output from the start of its command, bounded (the end is kept)
        self._capture: bytearray | None = None
        self._capture_from = 0
        self._capture_seq = 0
        self._capture_open = False  # between the run's command start and its end
        self.capture_truncated = False

    # -- the output path (loop thread, in stream order) -----------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        """Called with every output chunk sent to clients; returns `command` frames to push after it."""
        base = self.tracker.parser.pos
        self.last_output = time.monotonic()
        events = self.tracker.feed(data)
        if self._capture is not None and not events:
            self._append_capture(data)
        frames: list[bytes] = []
        for ev in events:
            self._on_event(ev, data, base)
            msg = event_message(self.session.id, ev)
            frames.append(protocol.encode(msg))
            if ev.phase == "end" and self.hub is not None:
                self.hub.command_end(self.session, msg)
        if self._capture_open and events[-1:] and events[-1].phase == "start":
            self._append_capture(data[events[-1].offset - base :])
        self._wake()
        return frames

    def _append_capture(self, data: bytes) -> None:
        cap = self._capture
        if cap is None or not self._capture_open:
            return
        cap += data
        if len(cap) > MAX_CAPTURE:
            del cap[: len(cap) - MAX_CAPTURE]
            self.capture_truncated = True

    def _on_event(self, ev: CommandEvent, data: bytes, base: int) -> None:
        if ev.phase == "start" and self.running_run and self._capture is None and ev.seq > self._capture_seq:
            self._capture = bytearray()
            self._capture_open = True
            self._capture_from = ev.offset
            self._capture_seq = ev.seq
        elif ev.phase == "end" and self._capture_open and ev.seq == self._capture_seq:
            cap_start_in_chunk = max(self._capture_from, base)
            self._append_capture(data[cap_start_in_chunk - base : ev.offset - base])
            self._capture_open = False

    def exited(self) -> None:
        self._wake()

    def _wake(self) -> None:
        wakers, self._wakers = self._wakers, []
        for f in wakers:
            if not f.done():
                f.set_result(None)

    async def changed(self) -> None:
        """Returns after the next output chunk (or the exit)."""
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakers.append(f)
        await f

    def info(self) -> ShellFields:
        last = self.tracker.last
        return {
            "shell_state": self.tracker.state,
            "shell_integration": self.injected,
            "last_command": None if last is None else {
                "command": last.command, "exit_code": last.exit_code, "started_at": last.started_at,
                "finished_at": last.finished_at, "cwd": last.cwd,
            },
        }


def event_message(sid: int, ev: CommandEvent) -> shapes.CommandEvent:
    msg: shapes.CommandEvent = {"type": "command", "session": sid, "phase": ev.phase, "seq": ev.seq, "offset": ev.offset}
    if ev.command is not None:
        msg["command"] = ev.command
    if ev.exit_code is not None:
        msg["exit_code"] = ev.exit_code
    if ev.cwd is not None:
        msg["cwd"] = ev.cwd
    return msg


class Hub:
    """Connections that asked to `watch`: lifecycle events of every session and command ends."""

    def __init__(self) -> None:
        self.watchers: dict[int, Connection] = {}

    def _send(self, msg: shapes.DaemonEvent, skip_attached_to: int | None = None) -> None:
        for conn in tuple(self.watchers.values()):
            if skip_attached_to is not None and skip_attached_to in conn.subs:
                continue  # it gets the event in stream order with the output
            conn.send_control(msg)

    def created(self, session: Session) -> None:
        self._send(SessionCreatedEvent(type="session_created", session=session.id, info=session.info()))

    def exited(self, session: Session) -> None:
        self._send(SessionExitedEvent(type="session_exited", session=session.id, code=session.exit_code,
                                      signal=session.exit_signal))

    def removed(self, sid: int) -> None:
        self._send(SessionRemovedEvent(type="session_removed", session=sid))

    def command_end(self, session: Session, msg: shapes.CommandEvent) -> None:
        self._send(msg, skip_attached_to=session.id)


# -- text rendering (in a thread of the daemon loop's default executor: on_worker) ------------------------------------------------------------------------


def render(data: bytes, cols: int, rows: int) -> str:
    """Raw output as the plain text a terminal of `cols` would show (run by on_worker in an executor thread of the
    daemon: CPU in native code, in a private Emulator of this process)."""
    from .emulator import Emulator

    if not data:
        return ""
    # Every history row must be kept: a line per LF, more for long lines wrapping at `cols`.
    lines = data.count(b"\n") + len(data) // max(cols, 1) + rows + 1
    emu = Emulator(cols, rows, min(lines, 1_000_000))
    try:
        emu.feed(data)
        # Trailing blank rows are not output: zsh's PROMPT_SP line, the cursor's row after a final newline.
        return emu.text("all").rstrip("\n")
    finally:
        emu.close()


async def on_worker(session: Session, fn: Callable[[], str]) -> str:
    """Render in a thread of the loop's executor: CPU in native code (cffi releases the GIL), off the loop. The
    session's own emulator is not involved (it may run in another process, see feed.py)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def screen_text(session: Session, scope: str) -> str:
    """The session's own emulator after exactly the output so far (exact at its offset, like a snapshot)."""
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def done(value: Any) -> None:
        if fut.done():
            return
        if isinstance(value, Exception):
            fut.set_exception(value)
        else:
            fut.set_result(str(value))

    session.request_text(scope, done)
    return await fut


def _cap(text: str) -> tuple[str, bool]:
    b = text.encode("utf-8", "replace")
    if len(b) <= MAX_OUTPUT_TEXT:
        return text, False
    return b[-MAX_OUTPUT_TEXT:].decode("utf-8", "ignore"), True


# -- requests -------------------------------------------------------------------------------------------------


def _agent(conn: Connection, sid: int) -> SessionAgent:
    session = conn.manager.get(sid)
    agent: SessionAgent | None = session.agent
    if agent is None:
        raise ProtocolError(NO_SHELL_INTEGRATION, f"session {sid} has no shell tracking")
    return agent


def _timeout_ms(msg: dict[str, Any], default: int | None) -> int | None:
    if msg.get("timeout_ms") is None:
        return default
    return protocol.get_int(msg, "timeout_ms", lo=0, hi=MAX_TIMEOUT_MS)


def _start(conn: Connection, rid: int | None, request: str, sid: int, coro: Any, slot: Slot | None = None) -> None:
    """Run `coro` (returning the ok fields) and send its reply when it is done (into `slot` when given, so the
    reply keeps its place in request order); tasks die with the connection."""
    tasks: set[asyncio.Task[Any]] = conn.__dict__.setdefault("agent_tasks", set())

    async def go() -> None:
        try:
            fields = await coro
            reply = protocol.ok(rid, **fields)
        except ProtocolError as exc:
            reply = protocol.error(rid, exc.code, exc.message, request, sid)
            if getattr(exc, "fields", None):
                reply.update(exc.fields)  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error in %s", request)
            reply = protocol.error(rid, protocol.INTERNAL, f"internal error: {exc}", request, sid)
        if slot is not None:
            conn.outbox.fill(slot, protocol.encode(reply))
            conn._schedule()
        elif rid is not None:
            conn.send_control(reply)

    task = asyncio.get_running_loop().create_task(go())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def cancel_tasks(conn: Connection) -> None:
    for t in list(conn.__dict__.get("agent_tasks", ())):
        t.cancel()


def _error(code: str, message: str, **fields: Any) -> ProtocolError:
    exc = ProtocolError(code, message)
    exc.fields = fields  # type: ignore[attr-defined]
    return exc


def handle_run(conn: Connection, msg: dict[str, Any]) -> None:
    sid = protocol.get_session(msg)
    command = protocol.get_str(msg, "command", max_len=MAX_COMMAND)
    if command is None:
        raise ProtocolError(protocol.INVALID_ARGUMENT, "'command' is required")
    timeout_ms = _timeout_ms(msg, DEFAULT_RUN_TIMEOUT_MS)
    agent = _agent(conn, sid)
    session = agent.session
    session._require_running()
    if sid in conn.read_only:
        raise ProtocolError(protocol.READ_ONLY, f"attached to session {sid} read-only")
    if not agent.injected and not agent.tracker.marks_seen:
        raise ProtocolError(NO_SHELL_INTEGRATION,
                            f"session {sid} runs no shell with integration (bash, zsh, fish; shell_integration)")
    if agent.running_run or agent.tracker.state == "running":
        raise ProtocolError(BUSY, f"session {sid} is running a command")
    agent.running_run = True
    _start(conn, protocol.request_id(msg), "run", sid, _run(agent, command, timeout_ms))


async def _run(agent: SessionAgent, command: str, timeout_ms: int | None) -> RunResult:
    session = agent.session
    t0 = time.monotonic()
    deadline = None if timeout_ms is None else t0 + timeout_ms / 1000
    tr = agent.tracker

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    try:
        try:
            async with asyncio.timeout(left()):
                while not tr.ready:  # the prompt has been drawn: the shell reads input now
                    if not session.running:
                        raise ProtocolError(protocol.SESSION_EXITED, f"session {session.id} has exited")
                    await agent.changed()
        except TimeoutError:
            raise _error(TIMEOUT, "no prompt before the timeout", output="", truncated=False) from None
        seq0 = tr.seq
        agent._capture_seq = seq0
        body = command.encode()
        # Bracketed paste keeps a multi-line command one input (no line runs before the rest has arrived).
        # zsh (>= 5.1) and fish (>= 3) bind the paste sequence whether or not they have sent ?2004h yet (zsh
        # sends it just after the B mark); bash's readline only when its mode is on, which it sends before A.
        paste = tr.bracketed_paste or agent.shell in ("zsh", "fish")
        data = b"\x1b[200~" + body + b"\x1b[201~\r" if paste else body + b"\r"
        session.write_input(data)
        started = time.monotonic()
        try:
            async with asyncio.timeout(left()):
                while not (tr.last is not None and tr.last.seq > seq0 and tr.last.finished_at is not None):
                    if not session.running:
                        raise ProtocolError(protocol.SESSION_EXITED, f"session {session.id} has exited")
                    await agent.changed()
        except TimeoutError:
            so_far = bytes(agent._capture or b"")
            text, cut = _cap(await on_worker(session, lambda: render(so_far, session.cols, session.rows)))
            raise _error(TIMEOUT, "the command is still running; it was not stopped",
                         output=text, truncated=cut or agent.capture_truncated) from None
        last = tr.last
        raw = bytes(agent._capture or b"")
        text, cut = _cap(await on_worker(session, lambda: render(raw, session.cols, session.rows)))
        assert last is not None and last.output_end is not None
        return {
            "exit_code": last.exit_code, "output": text, "output_offsets": [last.output_start, last.output_end],
            "duration_ms": int((time.monotonic() - started) * 1000),
            "truncated": cut or agent.capture_truncated, "command": last.command,
        }
    finally:
        agent.running_run = False
        agent._capture = None
        agent._capture_open = False
        agent.capture_truncated = False


WAIT_FOR = ("prompt", "exit", "idle", "text")


def handle_wait(conn: Connection, msg: dict[str, Any]) -> None:
    sid = protocol.get_session(msg)
    kind = protocol.get_str(msg, "for")
    if kind not in WAIT_FOR:
        raise ProtocolError(protocol.INVALID_ARGUMENT, "'for' must be one of " + ", ".join(WAIT_FOR))
    timeout_ms = _timeout_ms(msg, None)
    session = conn.manager.get(sid)
    agent: SessionAgent | None = session.agent
    pattern: re.Pattern[str] | None = None
    idle_ms = 0
    if kind == "text":
        src = protocol.get_str(msg, "pattern", max_len=MAX_PATTERN)
        if not src:
            raise ProtocolError(protocol.INVALID_ARGUMENT, "'pattern' (a regular expression) is required")
        try:
            pattern = re.compile(src, re.MULTILINE)
        except re.error as exc:
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"bad pattern: {exc}") from None
    elif kind == "idle":
        idle_ms = protocol.get_int(msg, "idle_ms", lo=1, hi=MAX_TIMEOUT_MS, default=500)
    elif kind == "prompt" and (agent is None or (not agent.injected and not agent.tracker.marks_seen)):
        raise ProtocolError(NO_SHELL_INTEGRATION, f"session {sid} runs no shell with integration")
    if agent is None:
        raise ProtocolError(NO_SHELL_INTEGRATION, f"session {sid} has no shell tracking")
    _start(conn, protocol.request_id(msg), "wait", sid, _wait(agent, kind, pattern, idle_ms, timeout_ms))


async def _wait(
    agent: SessionAgent, kind: str, pattern: re.Pattern[str] | None, idle_ms: int, timeout_ms: int | None
) -> WaitResult:
    session = agent.session
    try:
        async with asyncio.timeout(None if timeout_ms is None else timeout_ms / 1000):
            while True:
                if kind == "exit" and not session.running:
                    return {"offset": session.offset, "code": session.exit_code, "signal": session.exit_signal}
                if kind != "exit" and not session.running:
                    raise ProtocolError(protocol.SESSION_EXITED, f"session {session.id} has exited")
                if kind == "prompt" and agent.tracker.ready:
                    return {"offset": session.offset, "shell_state": agent.tracker.state}
                if kind == "idle":
                    quiet = time.monotonic() - agent.last_output
                    if quiet * 1000 >= idle_ms:
                        return {"offset": session.offset}
                    waker = asyncio.ensure_future(agent.changed())
                    try:
                        await asyncio.wait([waker], timeout=idle_ms / 1000 - quiet)
                    finally:
                        waker.cancel()
                    continue
                if kind == "text" and pattern is not None:
                    offset = session.offset
                    text = await screen_text(session, "screen")
                    if m := pattern.search(text):
                        return {"offset": offset, "match": m.group(0)}
                    if session.offset == offset:
                        await agent.changed()
                    await asyncio.sleep(TEXT_POLL_S)
                    continue
                await agent.changed()
    except TimeoutError:
        raise _error(TIMEOUT, f"wait for {kind}: not before the timeout") from None


TEXT_SCOPES = ("screen", "scrollback", "all")


def handle_text(conn: Connection, msg: dict[str, Any]) -> Slot | dict[str, Any]:
    sid = protocol.get_session(msg)
    session = conn.manager.get(sid)
    rid = protocol.request_id(msg)
    if rid is None:
        return {}  # no one to send it to
    if msg.get("since") is not None:
        since = protocol.get_int(msg, "since", hi=2**63 - 1)
        if since > session.offset:
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"since={since} is past the session's offset")
        start, window = session.replay.window()
        raw = window[max(since, start) - start :]
        offset, cols, rows = session.offset, session.cols, session.rows

        async def since_text() -> TextResult:
            text, cut = _cap(await on_worker(session, lambda: render(raw, cols, rows)))
            return {"text": text, "offset": offset, "truncated": cut or since < start}

        slot = conn.outbox.reserve()
        _start(conn, rid, "text", sid, since_text(), slot)
        return slot
    scope = protocol.get_str(msg, "scope", "screen")
    if scope not in TEXT_SCOPES:
        raise ProtocolError(protocol.INVALID_ARGUMENT, "'scope' must be one of " + ", ".join(TEXT_SCOPES))
    offset = session.offset

    async def scoped() -> TextResult:
        text, cut = _cap(await screen_text(session, scope))
        return {"text": text, "offset": offset, "truncated": cut}

    slot = conn.outbox.reserve()
    _start(conn, rid, "text", sid, scoped(), slot)
    return slot


def handle_watch(conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
    conn.manager.hub.watchers[conn.id] = conn
    return {"sessions": conn.manager.list()}


def handle_unwatch(conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
    conn.manager.hub.watchers.pop(conn.id, None)
    return {}
