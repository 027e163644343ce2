"""The daemon process: socket set-up and safety checks, one Connection per client, lifecycle and signals.

Server phases (after uvicorn): startup (check the socket directory, take the lock, bind), serve (until SIGTERM or
SIGINT), shutdown (stop accepting, tell clients, hang up sessions, remove the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import socket
import stat
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

from . import __version__, agent, protocol, upgrade
from .config import Config, ConfigError
from .emulator_process import EmulatorPool
from .flow import FlowLimits, Outbox, OutboxLimits, Slot, State, Subscriber
from .manager import Manager
from .protocol import FrameDecoder, FrameError, Malformed, ProtocolError
from .session import Session
from .shapes import HelloInfo, ListPage, QueueStats, SessionInfo, ShutdownEvent, Snapshot, Stats
from .watchdog import Watchdog

log = logging.getLogger("vibest_pty.server")

FEATURES = ["snapshot", "replay", "resync", "signal-names", "tags", "prune", "shell-integration"]
WRITE_HIGH = 64 * 1024  # the transport's own buffer stays this small; the rest waits in our fair queues
WRITE_LOW = 16 * 1024
CLOSE_TIMEOUT_S = 5.0
# One `list` reply at most (one session always fits: its metadata is capped at 64 KiB, protocol.MAX_METADATA);
# 1 MiB holds ~2000 sessions of ordinary size.
LIST_PAGE_BYTES = 1024 * 1024
_PEERCRED = struct.Struct("3i")

Reply = Mapping[str, Any] | Slot | None  # None: the handler replies later itself (agent.py: run, wait)


class StartupError(Exception):
    pass


class Connection(asyncio.Protocol):
    """One client: asyncio callbacks and request dispatch. What to send, in which order, and the connection's
    state live in its sans-I/O Outbox (flow.py); this class only writes what the Outbox hands out."""

    def __init__(self, server: Server, cid: int) -> None:
        self.server = server
        self.manager = server.manager
        self.id = cid
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(server.config.max_frame, requests=True)
        self.outbox = Outbox(server.outbox_limits)
        self.subs: dict[int, Subscriber] = {}  # by session id
        self.read_only: set[int] = set()  # sessions this connection is attached to read-only
        self._rid: int | None = None  # the id of the request being handled
        # While requests are being handled nothing is written: a handler's side effects (the `exit` of an exited
        # session being attached) must not overtake its reply. _process writes once at the end.
        self._dispatching = False
        self._scheduled = False
        # An in-place upgrade (upgrade.py): `frozen` stops reading, `muted` stops writing; `_unsent` keeps the
        # tail of what was written that the transport still buffers (the kernel has not taken it), so the new
        # code can send it first.
        self.frozen = False
        self.muted = False
        self._unsent: deque[bytes] = deque()
        self._unsent_bytes = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.server.connections[self.id] = self
        sock = transport.get_extra_info("socket")
        try:
            pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            pid, uid = 0, -1
        if uid != os.getuid():
            log.warning("refused connection from pid %d uid %d", pid, uid)
            self.fail(protocol.UNAUTHORIZED, f"uid {uid} may not use this daemon")
            return
        if len(self.server.connections) > self.server.config.max_connections:
            log.warning("refused connection: limit of %d reached", self.server.config.max_connections)
            self.fail(protocol.LIMIT_REACHED, f"connection limit reached ({self.server.config.max_connections})")
            return
        log.debug("connection %d from pid %d", self.id, pid)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.pop(self.id, None)
        self.manager.hub.watchers.pop(self.id, None)
        agent.cancel_tasks(self)
        self._unsubscribe_all()
        self.outbox.lost()
        log.debug("connection %d closed", self.id)
        self.server.connection_closed()

    def pause_writing(self) -> None:
        self.outbox.writing_paused = True

    def resume_writing(self) -> None:
        self.outbox.writing_paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.outbox.state is not State.OPEN:
            return  # failing or closing: the peer's bytes are drained, not handled
        self.decoder.feed(data)
        self._process()

    def _process(self) -> None:
        """Handle the complete requests received, stopping (and not reading more) while replies pile up: the
        bound is checked before each request is handled, so one connection queues at most one reply past it."""
        outbox = self.outbox
        self._dispatching = True
        try:
            for msg in self.decoder.messages():
                if isinstance(msg, Malformed):
                    self.send_control(protocol.error(None, protocol.BAD_MESSAGE, msg.reason))
                else:
                    self._handle(msg)
                if outbox.state is not State.OPEN:
                    break
                if outbox.pause_reading():
                    if self.transport is not None:
                        self.transport.pause_reading()
                    break
        except FrameError as exc:
            self.fail(exc.code, exc.message)
        finally:
            self._dispatching = False
        self._schedule()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- requests -----------------------------------------------------------------------------------------------

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "input" and "id" not in msg:  # keystrokes: no reply, no handler bookkeeping
            try:
                self.manager.get(protocol.get_session(msg)).write_input(protocol.get_data(msg))
                return
            except ProtocolError:
                pass  # the full path below reports it
        rid: int | None = None
        rtype: str | None = None
        sid = msg.get("session")
        session_field = sid if type(sid) is int else None
        try:
            rid = self._rid = protocol.request_id(msg)
            rtype = protocol.request_type(msg)
            result = _HANDLERS[rtype](self, msg)
        except ProtocolError as exc:
            self.send_control(protocol.error(rid, exc.code, exc.message, rtype, session_field))
            return
        except Exception as exc:  # a bug must cost one request, not the daemon
            log.exception("internal error handling %r", rtype)
            self.send_control(protocol.error(rid, protocol.INTERNAL, f"internal error: {exc}", rtype, session_field))
            return
        if rid is not None and result is not None and not isinstance(result, Slot):
            self.send_control(protocol.ok(rid, **result))

    def _hello(self, msg: dict[str, Any]) -> HelloInfo:
        version = msg.get("protocol", protocol.PROTOCOL_VERSION)
        if version != protocol.PROTOCOL_VERSION or type(version) is not int:
            raise ProtocolError(protocol.UNSUPPORTED_PROTOCOL, f"protocol {version!r} is not supported (1 is)")
        protocol.get_str(msg, "client", "")  # validated, otherwise unused (logs name the connection id)
        return {"protocol": protocol.PROTOCOL_VERSION, "version": __version__, "pid": os.getpid(),
                "features": FEATURES, "instance": self.server.instance, "started_at": self.server.started_at}

    def _create(self, msg: dict[str, Any]) -> Reply:
        opts = protocol.parse_create_options(msg)
        session = self.manager.create(opts)
        if opts.attach:
            self._subscribe(session.id)
            session.sizing.resize(self.id, opts.cols, opts.rows)  # the creator's size counts (size_policy)
        return {"session": session.info()}

    def _attach(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        want_snapshot = protocol.get_bool(msg, "snapshot", True)
        since_raw = msg.get("since")
        since = None if since_raw is None else protocol.get_int(msg, "since", hi=2**63 - 1)
        session = self.manager.get(sid)
        read_only = protocol.get_bool(msg, "read_only", False)
        if protocol.get_colors(msg) is not None:
            session.update_colors(msg["colors"])
        rid = self._rid
        # The offset, the subscription and the snapshot request are the same instant: the emulator process takes
        # the snapshot after exactly the output before `offset`, and the subscriber queues what follows it.
        offset = session.offset
        replay = session.replay_since(since) if since is not None else None
        sub = self._subscribe(sid)
        if read_only:
            self.read_only.add(sid)  # input, resize and signal from this connection get `read_only`
        if replay is not None or not (want_snapshot or since is not None) or rid is None:
            result: dict[str, Any] = {"offset": offset, "session": session.info()}
            if replay is not None:
                result["replay"] = replay
            return result
        sub.hold()

        def release() -> None:
            if self.subs.get(sid) is sub:
                sub.release()

        return self._reply_with_snapshot(
            session, rid, "attach", lambda snap: {"offset": offset, "snapshot": snap, "session": session.info()},
            then=release,
        )

    def _reply_with_snapshot(
        self, session: Session, rid: int, request: str,
        fields: Callable[[Snapshot], Mapping[str, Any]], then: Callable[[], None] | None = None,
    ) -> Slot:
        """A reply slot filled when the emulator process has made the session's snapshot."""
        slot = self.outbox.reserve()

        def done(snapshot: Snapshot | Exception) -> None:
            if isinstance(snapshot, Exception):
                frame = protocol.encode(protocol.error(
                    rid, protocol.INTERNAL, f"snapshot failed: {snapshot}", request, session.id))
            else:
                frame = protocol.encode(protocol.ok(rid, **fields(snapshot)))
            self.outbox.fill(slot, frame)
            if then is not None:
                then()
            self._schedule()

        session.request_snapshot(done, bounded=request == "snapshot")
        return slot

    def _subscribe(self, sid: int) -> Subscriber:
        self._unsubscribe(sid)
        session = self.manager.get(sid)
        sub = session.subscribe(self.id, self, self.server.flow_limits)
        self.subs[sid] = sub
        self.manager.attached(session)
        return sub

    def _unsubscribe(self, sid: int) -> bool:
        sub = self.subs.pop(sid, None)
        if sub is None:
            return False
        sub.close()
        self.outbox.remove(sub)
        session = self.manager.sessions.get(sid)
        if session is not None:
            session.unsubscribe(self.id)
            if session.running and (size := session.sizing.leave(self.id)):
                session.resize(*size)  # a client that left no longer counts (size_policy)
            self.manager.detached(session)
        self.read_only.discard(sid)
        return True

    def _unsubscribe_all(self) -> None:
        for sid in list(self.subs):
            self._unsubscribe(sid)

    def _detach(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        self.manager.get(sid)
        self._unsubscribe(sid)
        return {}

    def _input(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        data = protocol.get_data(msg)
        session = self._writable(sid)
        session.write_input(data)
        if session.sizing.policy == "latest" and (size := session.sizing.typed(self.id)):
            session.resize(*size)  # the client typing leads (size_policy latest)
        return {}

    def _writable(self, sid: int) -> Session:
        if sid in self.read_only:
            raise ProtocolError(protocol.READ_ONLY, f"attached to session {sid} read-only")
        return self.manager.get(sid)

    def _resize(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        cols = protocol.get_int(msg, "cols", lo=1, hi=protocol.MAX_COLS)
        rows = protocol.get_int(msg, "rows", lo=1, hi=protocol.MAX_ROWS)
        session = self._writable(sid)
        session._require_running()
        if size := session.sizing.resize(self.id, cols, rows):
            session.resize(*size)
        return {}

    def _kill(self, msg: dict[str, Any]) -> Reply:
        self.manager.kill(protocol.get_session(msg))
        return {}

    def _signal(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        sig = protocol.parse_signal(msg.get("signal"))
        self._writable(sid).send_signal(sig)
        return {}

    def _ack(self, msg: dict[str, Any]) -> Reply:
        protocol.get_session(msg)
        protocol.get_int(msg, "count", hi=2**63 - 1, default=0)
        return {}

    def _list(self, msg: dict[str, Any]) -> ListPage:
        """Sessions in id order, one page of at most LIST_PAGE_BYTES: a reply is never built larger than the
        peer can take (20 peers listing 9 MiB-tagged sessions and never reading cost 342 MiB, issue #11 item 3).
        `next` (when more remain) is the `after` of the next page."""
        after = protocol.get_int(msg, "after", default=0)
        sessions: list[SessionInfo] = []
        room = LIST_PAGE_BYTES
        for sid, session in self.manager.sessions.items():  # ids ascend: the dict is in creation order
            if sid <= after:
                continue
            info = session.info()
            size = len(protocol.pack(info))
            if sessions and size > room:
                return {"sessions": sessions, "next": sessions[-1]["id"]}
            room -= size
            sessions.append(info)
        return {"sessions": sessions}

    def _snapshot(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        session = self.manager.get(sid)
        rid = self._rid
        if rid is None:
            return {}  # no one to send it to
        return self._reply_with_snapshot(session, rid, "snapshot", lambda snap: {"snapshot": snap})

    def _stats(self, msg: dict[str, Any]) -> Stats:
        return self.server.stats()

    def _prune(self, msg: dict[str, Any]) -> Reply:
        return {"removed": self.manager.prune()}

    def _upgrade(self, msg: dict[str, Any]) -> Reply:
        return self.server.upgrader.request(self, self._rid, upgrade.parse_command(msg))

    # -- writer (flow.Sink) -------------------------------------------------------------------------------------

    def send_control(self, message: Mapping[str, Any]) -> None:
        if self.outbox.state is State.OPEN:
            self.outbox.send(protocol.encode(message))
            self._schedule()

    def subscriber_ready(self, sub: Subscriber) -> None:
        self.outbox.ready(sub)  # an unsubscribed Subscriber is closed and never asks (flow.Subscriber.close)
        self._schedule()

    def overflowed(self, sub: Subscriber) -> None:
        log.info("connection %d: queue of session %d full, disconnecting", self.id, sub.session_id)
        self.close()

    def forget(self, sub: Subscriber) -> None:
        if self.subs.get(sub.session_id) is sub:
            self._unsubscribe(sub.session_id)

    def _schedule(self) -> None:
        if self._scheduled or self._dispatching or self.outbox.writing_paused or self.muted:
            return
        if self.outbox.queued == 1:
            self._pump()  # one thing to send on an idle connection: no need to wait a loop turn (echo latency)
        else:
            self._scheduled = True
            self.server.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        transport, outbox = self.transport, self.outbox
        if transport is None or self.muted:
            return
        while (batch := outbox.next_batch()) is not None:
            data, frames = batch
            transport.write(data)
            self.server.frames_out += frames
            if buffered := transport.get_write_buffer_size():
                self._unsent.append(data)
                self._unsent_bytes += len(data)
                while self._unsent_bytes - len(self._unsent[0]) >= buffered:
                    self._unsent_bytes -= len(self._unsent.popleft())
            elif self._unsent:
                self._unsent.clear()
                self._unsent_bytes = 0
        if outbox.failed_and_drained:
            self._shut(half=True)
        elif not self.frozen and outbox.resume_reading():
            transport.resume_reading()
            self._process()  # requests that arrived while paused

    # -- closing ------------------------------------------------------------------------------------------------

    def fail(self, code: str, message: str) -> None:
        """Report a fatal error and close: open -> failing -> closing. Replies still being made (snapshots) go
        out first; nothing more is read, handled or streamed. Our side is then shut for writing and the peer's
        bytes are drained until it closes (or a timeout): closing with unread input would reset the connection
        and lose the error frame."""
        if self.transport is None or not self.outbox.fail(protocol.encode(protocol.error(None, code, message))):
            return
        self._unsubscribe_all()
        self.server.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)
        self._schedule()

    def close(self) -> None:
        """Close now (a queue overflow under auto-disconnect, shutdown): the replies ready go first."""
        self._shut(half=False)

    def _shut(self, half: bool) -> None:
        transport, outbox = self.transport, self.outbox
        if transport is None or outbox.state not in (State.OPEN, State.FAILING):
            return
        data = outbox.take_control()
        if data:
            transport.write(data)
        outbox.close()
        self._unsubscribe_all()
        if half and transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()  # flushes what is buffered; a peer that never reads is cut off after a while
            self.server.loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

    # -- in-place upgrade (upgrade.py) ------------------------------------------------------------------------

    def unsent(self) -> bytes:
        """What the transport still buffers: the end of what was written (the new code writes it first)."""
        n = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if not n:
            return b""
        tail = b"".join(self._unsent)
        if len(tail) < n:
            raise RuntimeError(f"connection {self.id}: {n} bytes buffered, {len(tail)} known")
        return tail[-n:]

    def export(self, ours: Slot | None) -> dict[str, Any]:
        assert self.transport is not None
        dec = self.decoder
        return {
            "id": self.id, "fd": self.transport.get_extra_info("socket").fileno(),
            "decoder": bytes(dec._buf[dec._pos:]), "unsent": self.unsent(),
            "control": self.outbox.export_control(ours), "reading_paused": self.outbox.reading_paused,
            "subs": {sid: sub.export() for sid, sub in self.subs.items()}, "read_only": sorted(self.read_only),
            "watching": self.id in self.manager.hub.watchers,
        }

    def restore(self, rec: dict[str, Any]) -> Slot | None:
        """The old code's export(), before the loop sees the socket (bytes that arrive follow the partial frame
        the old code had); returns the upgrade's reply slot when this connection asked for it."""
        if rec["unsent"]:
            self.outbox.send(rec["unsent"])  # first: it continues a frame the peer has begun to receive
        ours = self.outbox.restore_control(rec["control"], rec["reading_paused"])
        for sid, srec in rec["subs"].items():
            session = self.manager.sessions.get(sid)
            if session is None:
                continue
            sub = Subscriber(sid, self, self.server.flow_limits, session.request_snapshot)
            sub.restore(srec)
            session.subscribers[self.id] = sub
            self.subs[sid] = sub
        self.read_only = set(rec["read_only"])
        if rec["watching"]:
            self.manager.hub.watchers[self.id] = self
        self.decoder.feed(rec["decoder"])
        return ours

    def resume_after_restore(self) -> None:
        """The transport exists now: the read pause as it was, the subscribers back in the rotation, and the
        requests the old code had received but not handled."""
        if self.outbox.reading_paused and self.transport is not None:
            self.transport.pause_reading()
        for sub in self.subs.values():
            if sub.has_work():
                self.outbox.ready(sub)
        self._process()

    def freeze(self) -> None:
        self.frozen = True
        if self.transport is not None:
            self.transport.pause_reading()

    def thaw(self) -> None:
        """execve failed: read and write again."""
        self.frozen = self.muted = False
        if self.transport is not None and not self.outbox.reading_paused:
            self.transport.resume_reading()
        self._schedule()

    def send_now(self, message: Mapping[str, Any]) -> None:
        """Write bypassing the queues (shutdown), after the replies that are ready."""
        if self.transport is not None and self.outbox.state in (State.OPEN, State.FAILING):
            self.transport.write(self.outbox.take_control() + protocol.encode(message))


_HANDLERS: dict[str, Callable[[Connection, dict[str, Any]], Reply]] = {
    "hello": Connection._hello,
    "create": Connection._create,
    "attach": Connection._attach,
    "detach": Connection._detach,
    "input": Connection._input,
    "resize": Connection._resize,
    "kill": Connection._kill,
    "signal": Connection._signal,
    "ack": Connection._ack,
    "list": Connection._list,
    "snapshot": Connection._snapshot,
    "stats": Connection._stats,
    "prune": Connection._prune,
    "upgrade": Connection._upgrade,
    "run": agent.handle_run,
    "wait": agent.handle_wait,
    "text": agent.handle_text,
    "watch": agent.handle_watch,
    "unwatch": agent.handle_unwatch,
}
assert set(_HANDLERS) == protocol.REQUEST_TYPES


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.worker = EmulatorPool(on_rebuilt=lambda sid: self.manager.emulator_rebuilt(sid))
        self.manager = Manager(config, self.worker)
        self.flow_limits = FlowLimits(
            max_events=config.flow_max_queue_size,
            max_bytes=config.flow_max_queue_bytes,
            threshold=config.flow_threshold,
            auto_disconnect=config.flow_auto_disconnect,
        )
        self.outbox_limits = OutboxLimits()
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._lock_fd = -1
        self._stop = asyncio.Event()
        self._no_connections = asyncio.Event()
        self.frames_out = 0
        self.started = time.monotonic()
        # Identity (kept across an in-place upgrade): a client that reconnects to another instance must not
        # re-attach by id (ids restart at 1 in a new daemon).
        self.instance = os.urandom(8).hex()  # not `secrets`: it pulls in hashlib/hmac, ~1.5 MB of the idle RSS
        self.started_at = time.time()
        self.upgrades = 0  # in-place upgrades (docs/upgrade.md)
        self.last_upgrade_pause_ms: float | None = None
        self.loop = asyncio.get_running_loop()
        self.upgrader = upgrade.Upgrader(self)

    # -- startup ------------------------------------------------------------------------------------------------

    async def startup(self) -> None:
        path = self.config.socket_path
        directory = os.path.dirname(os.path.abspath(path))
        prepare_socket_dir(directory)
        self._lock_fd = take_lock(path + ".lock")
        try:
            remove_stale_socket(path)
        except StartupError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise
        self.manager.watchdog = Watchdog.start()  # after the checks: a refused start leaves nothing behind
        await self.worker.start()  # the first emulator process, warm before the first client (see its doc)
        old_umask = os.umask(0o177)
        try:
            self._server = await self.loop.create_unix_server(
                lambda: Connection(self, next(self._ids)), path, backlog=256
            )
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self.signals()
        log.info("vibest-pty-daemon %s listening on %s (pid %d)", __version__, path, os.getpid())

    def signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop, sig)
        self.loop.add_signal_handler(signal.SIGUSR2, self.upgrader.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closing terminal must not take the daemon down

    async def listen_on(self, sock: socket.socket) -> None:
        """Serve on a listening socket that already exists (an upgrade's, inherited or kept in a dup)."""
        self._server = await self.loop.create_unix_server(
            lambda: Connection(self, next(self._ids)), sock=sock, backlog=256)

    def request_stop(self, sig: int | None = None) -> None:
        if sig is not None:
            log.info("received %s, shutting down", signal.Signals(sig).name)
        self._stop.set()

    # -- serve --------------------------------------------------------------------------------------------------

    async def serve(self) -> None:
        await self._stop.wait()

    # -- shutdown -----------------------------------------------------------------------------------------------

    async def shutdown(self, reason: str = "daemon stopping") -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            os.unlink(self.config.socket_path)
        for conn in list(self.connections.values()):
            conn.send_now(ShutdownEvent(type="shutdown", reason=reason))
        await self.manager.shutdown(self.config.kill_grace_ms / 1000)
        self.worker.stop()
        for conn in list(self.connections.values()):
            conn.close()
        if self.connections:
            self._no_connections.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_connections.wait(), 2.0)
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # the file stays: unlinking a lock another starter may hold opens a race
            self._lock_fd = -1
        log.info("stopped")

    def connection_closed(self) -> None:
        if not self.connections:
            self._no_connections.set()

    def stats(self) -> Stats:
        queues: list[QueueStats] = []
        for conn in self.connections.values():
            for sub in conn.subs.values():
                queues.append({"connection": conn.id, **sub.stats()})
        return {
            "version": __version__,
            "instance": self.instance,
            "upgrades": self.upgrades,
            "last_upgrade_pause_ms": self.last_upgrade_pause_ms,
            "uptime": time.monotonic() - self.started,
            "connections": len(self.connections),
            "sessions": len(self.manager.sessions),
            "running": self.manager.running_count,
            "bytes_in": self.manager.counters.bytes_in,
            "bytes_out": self.manager.counters.bytes_out,
            "frames_out": self.frames_out,
            "rss": _rss(),
            "emulators": (emulators := self.worker.stats()),  # the pool's processes, each with its rss
            "emulators_rss": sum(e["rss"] for e in emulators),
            "queues": queues,
        }


def prepare_socket_dir(directory: str) -> None:
    """Create the directory 0700, or refuse one that another user could tamper with (issue #11 items 6, 9)."""
    parent = os.path.dirname(directory) or "/"
    if not os.path.lexists(directory):
        if not os.path.exists(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    st = os.lstat(directory)
    uid = os.getuid()
    private = f"put the socket in a private subdirectory instead, e.g. --socket {directory}/vibest-pty-{uid}/socket"
    if stat.S_ISLNK(st.st_mode):
        raise StartupError(f"socket directory {directory} is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"socket directory {directory} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != uid:
        raise StartupError(f"socket directory {directory} belongs to uid {st.st_uid}, not {uid}; {private}")
    if mode & 0o022:
        if mode & stat.S_ISVTX:  # a shared directory such as /tmp: making it private would break the machine
            raise StartupError(f"socket directory {directory} is shared (mode {mode:o}); {private}")
        raise StartupError(
            f"socket directory {directory} is writable by group or others (mode {mode:o}); "
            f"fix it with: chmod 700 {directory}"
        )
    # Whoever can write to the parent can rename our directory away and put their own in its place.
    pst = os.stat(parent)
    pmode = stat.S_IMODE(pst.st_mode)
    if pmode & 0o022 and not pmode & stat.S_ISVTX:
        raise StartupError(
            f"the parent {parent} of the socket directory is writable by group or others without the sticky bit "
            f"(mode {pmode:o}): another user could replace {directory}; use a socket path under a directory only "
            "you can write to"
        )
    if pst.st_uid not in (0, uid):
        raise StartupError(
            f"the parent {parent} of the socket directory belongs to uid {pst.st_uid}: that user could replace "
            f"{directory}; use a socket path under a directory you (or root) own"
        )


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def remove_stale_socket(path: str) -> None:
    """Unlink a socket nobody listens on (a crashed daemon's); refuse anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is {_kind(st.st_mode)}, not a socket; refusing to remove it "
                           "(choose another --socket path, or move it away)")
    if _is_live(path):
        raise StartupError(f"a daemon is already running on {path}")
    log.info("removing stale socket %s", path)
    os.unlink(path)


def take_lock(lock_path: str) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        try:
            what = f" (it is {_kind(os.lstat(lock_path).st_mode)})"
        except OSError:
            what = ""
        raise StartupError(f"cannot open the lock file {lock_path}{what}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"a daemon is already running (lock {lock_path} is held)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _is_live(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


async def run(config: Config) -> int:
    server = Server(config)
    try:
        state = upgrade.take_state()
        if state is not None:
            await upgrade.restore(server, state)  # an in-place upgrade: the old code's daemon, continued
        else:
            await server.startup()
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    try:
        await server.serve()
    finally:
        await server.shutdown()
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    if (rc := upgrade.check_main(sys.argv[1:] if argv is None else argv)) is not None:
        return rc  # the pre-flight of an upgrade to this code (upgrade.py)
    try:
        config = Config.load(argv)
    except ConfigError as exc:
        print(f"vibest-pty-daemon: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(config))
    return uvloop.run(run(config))
