"""The daemon process: socket set-up and safety checks, one Connection per client, lifecycle and signals.

Server phases (after uvicorn): startup (check the socket directory, take the lock, bind), serve (until SIGTERM or
SIGINT), shutdown (stop accepting, tell clients, hang up sessions, remove the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import itertools
import logging
import os
import secrets
import signal
import socket
import stat
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from . import __version__, protocol, upgrade
from .config import Config, ConfigError
from .flow import FlowLimits, Subscriber
from .manager import Manager
from .protocol import FrameDecoder, FrameError, Malformed, ProtocolError
from .session import Session
from .upgrade import Upgrader
from .watchdog import Watchdog
from .worker import EmulatorWorker

log = logging.getLogger("vibest_pty.server")

FEATURES = ["snapshot", "replay", "resync", "signal-names", "tags", "prune"]
WRITE_HIGH = 64 * 1024  # the transport's own buffer stays this small; the rest waits in our fair queues
WRITE_LOW = 16 * 1024
BATCH = 64 * 1024
CLOSE_TIMEOUT_S = 5.0
# Replies waiting for a peer that does not read: past HIGH its requests are not read (nor handled) until the
# replies drain under LOW, so pipelining requests cannot make the daemon allocate without bound.
CONTROL_HIGH = 4 * 1024 * 1024
CONTROL_LOW = 1024 * 1024
MAX_PENDING_REPLIES = 8  # snapshots being made for one connection before its next requests wait
_PEERCRED = struct.Struct("3i")


class PendingReply:
    """A reply slot in the control queue that a snapshot fills later: replies keep the order of requests."""

    __slots__ = ("frame",)

    def __init__(self) -> None:
        self.frame: bytes | None = None


Reply = dict[str, Any] | PendingReply


class StartupError(Exception):
    pass


class Connection(asyncio.Protocol):
    """One client. Requests are handled synchronously as frames arrive; replies and output leave through a writer
    that serves control messages first and the subscribed sessions round-robin."""

    def __init__(self, server: Server, cid: int) -> None:
        self.server = server
        self.manager = server.manager
        self.id = cid
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(server.config.max_frame)
        self.subs: dict[int, Subscriber] = {}  # by session id
        self.read_only: set[int] = set()  # sessions this connection is attached to read-only
        self._control: deque[bytes | PendingReply] = deque()
        self._control_bytes = 0
        self._pending_replies = 0
        self._reading_paused = False
        self._rid: int | None = None  # the id of the request being handled
        self._in_handler = False  # a handler's side effects (a subscription's exit) must not overtake its reply
        self._failing = False  # a fatal error is waiting for earlier replies before the connection closes
        self._ready: deque[Subscriber] = deque()
        self._paused = False
        self._scheduled = False
        self._closing = False
        self.peer_pid = 0
        self.client_name = ""
        # What the transport still buffers (the kernel has not taken it): an upgrade moves it to the new code.
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
        self.peer_pid = pid
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
        for sid in list(self.subs):
            self._unsubscribe(sid)
        self._control.clear()
        self._ready.clear()
        self._closing = True
        log.debug("connection %d closed", self.id)
        self.server.connection_closed()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._failing:
            return
        self.decoder.feed(data)
        self._process()

    def _process(self) -> None:
        """Handle the complete requests received, stopping (and not reading more) while replies pile up."""
        try:
            for msg in self.decoder.messages():
                if self._closing or self._failing:
                    return
                if isinstance(msg, Malformed):
                    self.send_control(protocol.error(None, protocol.BAD_MESSAGE, msg.reason))
                else:
                    self._handle(msg)
                if self._control_bytes > CONTROL_HIGH or self._pending_replies >= MAX_PENDING_REPLIES:
                    if not self._reading_paused and self.transport is not None:
                        self._reading_paused = True
                        self.transport.pause_reading()
                    return
        except FrameError as exc:
            self.fail(exc.code, exc.message)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- requests -----------------------------------------------------------------------------------------------

    def _handle(self, msg: dict[str, Any]) -> None:
        rid: int | None = None
        rtype: str | None = None
        sid = msg.get("session")
        session_field = sid if type(sid) is int else None
        try:
            rid = self._rid = protocol.request_id(msg)
            rtype = protocol.request_type(msg)
            self._in_handler = True
            try:
                result = _HANDLERS[rtype](self, msg)
            finally:
                self._in_handler = False
        except ProtocolError as exc:
            self.send_control(protocol.error(rid, exc.code, exc.message, rtype, session_field))
            return
        except Exception as exc:  # a bug must cost one request, not the daemon
            log.exception("internal error handling %r", rtype)
            self.send_control(protocol.error(rid, protocol.INTERNAL, f"internal error: {exc}", rtype, session_field))
            return
        if isinstance(result, PendingReply):
            self._control.append(result)
            self._pending_replies += 1
        elif rid is not None:
            self.send_control(protocol.ok(rid, **result))

    def _hello(self, msg: dict[str, Any]) -> Reply:
        version = msg.get("protocol", protocol.PROTOCOL_VERSION)
        if version != protocol.PROTOCOL_VERSION or type(version) is not int:
            raise ProtocolError(protocol.UNSUPPORTED_PROTOCOL, f"protocol {version!r} is not supported (1 is)")
        self.client_name = protocol.get_str(msg, "client", "") or ""
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
        # The offset, the subscription and the snapshot request are the same instant: the emulator thread takes
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
        fields: Callable[[dict[str, Any]], dict[str, Any]], then: Callable[[], None] | None = None,
    ) -> PendingReply:
        """A reply slot filled when the emulator thread has made the session's snapshot."""
        pending = PendingReply()

        def done(snapshot: dict[str, Any] | Exception) -> None:
            if isinstance(snapshot, Exception):
                pending.frame = protocol.encode(protocol.error(
                    rid, protocol.INTERNAL, f"snapshot failed: {snapshot}", request, session.id))
            else:
                pending.frame = protocol.encode(protocol.ok(rid, **fields(snapshot)))
            self._control_bytes += len(pending.frame)
            self._pending_replies -= 1
            if then is not None:
                then()
            self._schedule()

        session.request_snapshot(done)
        return pending

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
        session = self.manager.sessions.get(sid)
        if session is not None:
            session.unsubscribe(self.id)
            if session.running and (size := session.sizing.leave(self.id)):
                session.resize(*size)  # a client that left no longer counts (size_policy)
            self.manager.detached(session)
        self.read_only.discard(sid)
        if sub.in_rotation:
            self._ready.remove(sub)
            sub.in_rotation = False
        return True

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

    def _list(self, msg: dict[str, Any]) -> Reply:
        return {"sessions": self.manager.list()}

    def _snapshot(self, msg: dict[str, Any]) -> Reply:
        sid = protocol.get_session(msg)
        session = self.manager.get(sid)
        rid = self._rid
        if rid is None:
            return {}  # no one to send it to
        return self._reply_with_snapshot(session, rid, "snapshot", lambda snap: {"snapshot": snap})

    def _stats(self, msg: dict[str, Any]) -> Reply:
        return self.server.stats()

    def _upgrade(self, msg: dict[str, Any]) -> Reply:
        pending = self.server.upgrader.request(self, self._rid, protocol.parse_upgrade_command(msg))
        return {} if pending is None else pending

    def _prune(self, msg: dict[str, Any]) -> Reply:
        return {"removed": self.manager.prune()}

    # -- writer -------------------------------------------------------------------------------------------------

    def send_control(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        frame = protocol.encode(message)
        self._control.append(frame)
        self._control_bytes += len(frame)
        self._schedule()

    def subscriber_ready(self, sub: Subscriber) -> None:
        if self._closing:
            return
        sub.in_rotation = True
        self._ready.append(sub)
        self._schedule()

    def overflowed(self, sub: Subscriber) -> None:
        log.info("connection %d: queue of session %d full, disconnecting", self.id, sub.session_id)
        self._flush_control()
        self.close()

    def forget(self, sub: Subscriber) -> None:
        if self.subs.get(sub.session_id) is sub:
            self._unsubscribe(sub.session_id)

    def _schedule(self) -> None:
        if self._scheduled or self._paused:
            return
        if len(self._control) + len(self._ready) == 1 and not self._in_handler:
            self._pump()  # one thing to send on an idle connection: no need to wait a loop turn (echo latency)
        else:
            self._scheduled = True
            self.server.loop.call_soon(self._pump)

    def _flush_control(self) -> None:
        """Write the replies that are ready now (fatal errors, shutdown), ahead of everything."""
        if self.transport is None:
            return
        frames = []
        while self._control:
            head = self._control[0]
            frame = head if isinstance(head, bytes) else head.frame
            if frame is None:
                break
            self._control.popleft()
            frames.append(frame)
        if frames:
            self._control_bytes -= sum(map(len, frames))
            self.transport.write(b"".join(frames))

    def _pump(self) -> None:
        self._scheduled = False
        transport = self.transport
        if transport is None or self._closing:
            return
        control, ready = self._control, self._ready
        while not self._paused:
            batch: list[bytes] = []
            size = 0
            while size < BATCH:
                frame: bytes | None = None
                if control:
                    head = control[0]
                    frame = head if isinstance(head, bytes) else head.frame
                    if frame is not None:
                        control.popleft()
                        self._control_bytes -= len(frame)
                if frame is None:  # no control message ready: serve the sessions
                    if not ready:
                        break
                    sub = ready.popleft()
                    frame = sub.pop()
                    if sub.has_work():
                        ready.append(sub)
                    else:
                        sub.in_rotation = False
                    if frame is None:
                        continue
                batch.append(frame)
                size += len(frame)
            if not batch:
                break
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            transport.write(data)
            if buffered := transport.get_write_buffer_size():
                self._unsent.append(data)
                self._unsent_bytes += len(data)
                while self._unsent_bytes - len(self._unsent[0]) >= buffered:
                    self._unsent_bytes -= len(self._unsent.popleft())
            elif self._unsent:
                self._unsent.clear()
                self._unsent_bytes = 0
            self.server.frames_out += len(batch)
        if self._failing and not control:
            self._finish_fail()
            return
        if (self._reading_paused and self._control_bytes < CONTROL_LOW
                and self._pending_replies < MAX_PENDING_REPLIES and not self._closing):
            self._reading_paused = False
            transport.resume_reading()
            self._process()  # requests that arrived while paused

    # -- closing ------------------------------------------------------------------------------------------------

    def fail(self, code: str, message: str) -> None:
        """Report a fatal error and close. Replies still being made (snapshots) go out first; nothing more is read
        or handled. Our side is then shut for writing and the peer's bytes are drained until it closes (or a
        timeout): closing with unread input would reset the connection and lose the error frame."""
        if self._closing or self._failing or self.transport is None:
            return
        self._failing = True
        self.send_control(protocol.error(None, code, message))
        self.server.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)
        if not any(isinstance(x, PendingReply) for x in self._control):
            self._finish_fail()

    def _finish_fail(self) -> None:
        if self._closing or self.transport is None:
            return
        self._flush_control()
        self._closing = True
        for sid in list(self.subs):
            self._unsubscribe(sid)
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def close(self) -> None:
        if self._closing or self.transport is None:
            return
        self._closing = True
        for sid in list(self.subs):
            self._unsubscribe(sid)
        transport = self.transport
        transport.close()  # flushes what is buffered; a peer that never reads is cut off after a while
        self.server.loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

    def send_now(self, message: dict[str, Any]) -> None:
        """Write bypassing the queues (shutdown)."""
        if self.transport is not None and not self._closing:
            self._flush_control()
            self.transport.write(protocol.encode(message))


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
        self.worker = EmulatorWorker()
        self.manager = Manager(config, self.worker)
        self.flow_limits = FlowLimits(
            max_events=config.flow_max_queue_size,
            max_bytes=config.flow_max_queue_bytes,
            threshold=config.flow_threshold,
            auto_disconnect=config.flow_auto_disconnect,
        )
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
        self.instance = secrets.token_hex(8)
        self.started_at = time.time()
        self.upgrades = 0
        self.last_upgrade_pause_ms: float | None = None
        self.loop = asyncio.get_running_loop()
        self.upgrader = Upgrader(self)

    # -- startup ------------------------------------------------------------------------------------------------

    async def startup(self) -> None:
        path = self.config.socket_path
        directory = os.path.dirname(os.path.abspath(path))
        prepare_socket_dir(directory)
        self._lock_fd = take_lock(path + ".lock")
        self.manager.watchdog = Watchdog.start()
        if os.path.lexists(path):
            if _is_live(path):
                os.close(self._lock_fd)
                self._lock_fd = -1
                raise StartupError(f"a daemon is already running on {path}")
            log.info("removing stale socket %s", path)
            os.unlink(path)
        old_umask = os.umask(0o177)
        try:
            self._server = await self.loop.create_unix_server(
                lambda: Connection(self, next(self._ids)), path, backlog=256
            )
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closing terminal must not take the daemon down
        self.worker.warm_up()
        log.info("vibest-pty-daemon %s listening on %s (pid %d)", __version__, path, os.getpid())

    def _signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop, sig)
        self.loop.add_signal_handler(signal.SIGUSR2, self.upgrader.on_signal)

    async def restore(self, state: dict[str, Any]) -> None:
        """Startup after an in-place upgrade: everything comes from the old code's state."""
        self.config = dataclasses.replace(self.config, socket_path=state["socket_path"])
        await upgrade.restore(self, state)
        self._signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.worker.warm_up()

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
            conn.send_now({"type": "shutdown", "reason": reason})
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

    def stats(self) -> dict[str, Any]:
        queues = []
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
            "queues": queues,
        }


def prepare_socket_dir(directory: str) -> None:
    """Create the directory 0700, or refuse one that another user could tamper with."""
    if not os.path.lexists(directory):
        parent = os.path.dirname(directory)
        if parent and not os.path.exists(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise StartupError(f"socket directory {directory} is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"socket directory {directory} is not a directory")
    if st.st_uid != os.getuid():
        raise StartupError(f"socket directory {directory} belongs to uid {st.st_uid}, not {os.getuid()}")
    if st.st_mode & 0o022:
        raise StartupError(
            f"socket directory {directory} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"fix it with: chmod 700 {directory}"
        )


def take_lock(lock_path: str) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
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
            await server.restore(state)
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
        return rc
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
