"""In-place upgrade: the daemon replaces its own code (execve, same PID) under running sessions and connected clients.

Why execve and not a successor process: the children stay our children (waitpid and pidfds keep reporting their real
exit codes), and the listening socket and the lock are inherited, so there is never a moment in which a second
daemon could bind. Steps (docs/upgrade.md):

1. pre-flight: run `COMMAND --check-upgrade N` in a child; it imports everything and says whether it reads state
   format N. Any failure: `upgrade_failed` with the tail of its stderr, and nothing has changed.
2. quiesce: stop accepting, stop reading client sockets and PTYs (output waits in the kernel's PTY buffers, requests
   in the sockets), let the writers flush for at most FLUSH_S; a subscriber that could not drain is marked for
   resync (as on overflow). The emulator thread catches up with the output read so far and encodes each terminal.
3. serialise every session, exited record, connection and subscription to a memfd (msgpack), clear close-on-exec on
   exactly the fds that move, and execve. If execve fails, everything is undone and the old code replies
   `upgrade_failed`.
4. the new code (server.run sees STATE_ENV) rebuilds it all, resumes reading, sends `upgraded` to every client and
   the `ok` to the requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, cast

import msgpack

from . import __version__, protocol
from .flow import GREEN, Subscriber
from .protocol import ProtocolError

if TYPE_CHECKING:
    from .server import Connection, PendingReply, Server
    from .session import Session

log = logging.getLogger("vibest_pty.upgrade")

STATE_FORMAT = 1
READS_FORMATS = frozenset({1})
CHECK_FLAG = "--check-upgrade"
STATE_ENV = "VIBEST_PTY_UPGRADE_STATE"  # the memfd's number in the new process (removed from the environment)
PREFLIGHT_TIMEOUT_S = 30.0  # imports take ~1 s on a loaded 2-core box; a hung command must not hold us forever
FLUSH_S = 2.0  # writers get this long to drain before a subscriber that cannot is marked for resync
STDERR_TAIL = 2000


# -- the new code's side: pre-flight check ---------------------------------------------------------------------


def emulator_build() -> str:
    """What the encoded terminals depend on: libghostty-vt's snapshot codec comes with the pyghostty build."""
    from importlib import metadata

    try:
        return f"pyghostty {metadata.version('pyghostty')}"
    except metadata.PackageNotFoundError:
        return "none"


def check_main(argv: list[str]) -> int | None:
    """`--check-upgrade N`: import everything, print what we are as JSON; exit 0 if we read state format N."""
    if CHECK_FLAG not in argv:
        return None
    try:
        n = int(argv[argv.index(CHECK_FLAG) + 1])
    except (IndexError, ValueError):
        print(f"{CHECK_FLAG} needs a state format number", file=sys.stderr)
        return 2
    from . import client, config, emulator, flow, manager, server, session, watchdog, worker  # noqa: F401

    print(json.dumps({"version": __version__, "formats": sorted(READS_FORMATS), "emulator": emulator_build()}))
    if n not in READS_FORMATS:
        print(f"vibest-pty {__version__} cannot read upgrade state format {n} (reads {sorted(READS_FORMATS)})",
              file=sys.stderr)
        return 3
    return 0


def default_command() -> list[str]:
    """How this daemon was started: same interpreter, `-m vibest_pty`, same arguments."""
    return [sys.executable, "-m", "vibest_pty", *sys.argv[1:]]


class UpgradeFailed(Exception):
    pass


# -- the old code's side --------------------------------------------------------------------------------------


class Upgrader:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.in_progress = False
        self._task: asyncio.Task[None] | None = None

    def request(self, conn: Connection | None, rid: int | None, command: list[str] | None) -> PendingReply | None:
        """The `upgrade` request (or SIGUSR2 without conn): reply slot filled by the old code on failure, by the new
        code on success."""
        from .server import PendingReply

        if self.in_progress:
            raise ProtocolError(protocol.UPGRADE_IN_PROGRESS, "an upgrade is already in progress")
        self.in_progress = True
        pending = PendingReply() if conn is not None and rid is not None else None
        self._task = self.server.loop.create_task(self._run(conn, rid, pending, command))
        return pending

    def on_signal(self) -> None:
        log.info("SIGUSR2: upgrading in place")
        try:
            self.request(None, None, None)
        except ProtocolError as exc:
            log.warning("SIGUSR2 ignored: %s", exc.message)

    async def _run(self, conn: Connection | None, rid: int | None, pending: PendingReply | None,
                   command: list[str] | None) -> None:
        try:
            argv = command or default_command()
            path, info = await preflight(argv)
            log.info("upgrading to %s (%s)", info.get("version"), " ".join(argv))
            await self._quiesce_and_exec(path, argv, conn, rid, pending)
        except UpgradeFailed as exc:
            log.warning("upgrade failed: %s", exc)
            self._reply(conn, pending, protocol.error(rid, protocol.UPGRADE_FAILED, str(exc), "upgrade"))
        except Exception as exc:
            log.exception("upgrade failed")
            self._reply(conn, pending, protocol.error(rid, protocol.UPGRADE_FAILED, f"internal: {exc}", "upgrade"))
        finally:
            self.in_progress = False

    @staticmethod
    def _reply(conn: Connection | None, pending: PendingReply | None, message: dict[str, Any]) -> None:
        if conn is None or pending is None:
            return
        fill(conn, pending, protocol.encode(message))

    async def _quiesce_and_exec(self, path: str, argv: list[str], conn: Connection | None, rid: int | None,
                                pending: PendingReply | None) -> None:
        srv = self.server
        loop = srv.loop
        t0 = time.monotonic()
        q = _Quiesced(srv)
        q.stop()
        try:
            blobs = await q.capture_emulators()
            t1 = time.monotonic()
            await q.flush(t0 + FLUSH_S, pending)
            t2 = time.monotonic()
            state = q.serialise(blobs, conn, rid, pending, t0)
            moving = q.moving_fds()
            mfd = os.memfd_create("vibest-pty-upgrade", 0)  # no MFD_CLOEXEC: it moves
            try:
                data = msgpack.packb(state, use_bin_type=True)
                view = memoryview(data)
                while view:
                    view = view[os.write(mfd, view):]
                os.lseek(mfd, 0, os.SEEK_SET)
                moving.add(mfd)
                extra = set_inheritable_exactly(moving)
                if extra:
                    log.warning("fds %s were inheritable and are now close-on-exec", sorted(extra))
                env = {k: v for k, v in os.environ.items() if k != STATE_ENV}
                env[STATE_ENV] = str(mfd)
                log.info("quiesced: emulators %.1f ms, flush %.1f ms, state %d bytes in %.1f ms", (t1 - t0) * 1000,
                         (t2 - t1) * 1000, len(data), (time.monotonic() - t2) * 1000)
                for h in logging.getLogger().handlers:
                    h.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    os.execve(path, argv, env)
                except OSError as exc:
                    raise UpgradeFailed(f"execve {path}: {exc.strerror or exc}") from None
            finally:
                for fd in moving - {mfd}:
                    with contextlib.suppress(OSError):
                        os.set_inheritable(fd, False)
                os.close(mfd)
        except BaseException:
            await q.resume()
            raise
        finally:
            del loop


def fill(conn: Connection, pending: PendingReply, frame: bytes) -> None:
    pending.frame = frame
    conn._control_bytes += len(frame)
    conn._pending_replies -= 1
    conn._schedule()


async def preflight(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Run `argv --check-upgrade N`; the resolved program path and what it printed, or UpgradeFailed."""
    prog = argv[0]
    path = prog if "/" in prog else shutil.which(prog)
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise UpgradeFailed(f"cannot run {prog!r}: not found or not executable")
    try:
        proc = await asyncio.create_subprocess_exec(
            path, *argv[1:], CHECK_FLAG, str(STATE_FORMAT), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise UpgradeFailed(f"cannot run {prog!r}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PREFLIGHT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise UpgradeFailed(f"pre-flight of {prog!r} did not finish in {PREFLIGHT_TIMEOUT_S:g} s") from None
    tail = err.decode(errors="replace")[-STDERR_TAIL:].strip()
    if proc.returncode != 0:
        raise UpgradeFailed(f"pre-flight of {prog!r} failed (exit {proc.returncode}): {tail}")
    try:
        info = json.loads(out.decode().strip().splitlines()[-1])
        assert isinstance(info, dict)
    except (ValueError, IndexError, AssertionError):
        raise UpgradeFailed(f"pre-flight of {prog!r} printed no state info: {tail}") from None
    return path, info


def set_inheritable_exactly(moving: set[int]) -> set[int]:
    """Clear close-on-exec on `moving`, set it on every other fd above stdio; returns the fds that had to be fixed
    (each is a leak the count caught)."""
    fixed = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue  # the listing's own fd, closed by now
        if fd in moving:
            fcntl.fcntl(fd, fcntl.F_SETFD, flags & ~fcntl.FD_CLOEXEC)
        elif not flags & fcntl.FD_CLOEXEC:
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
            fixed.add(fd)
    inheritable = {int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2 and _inheritable(int(n))}
    assert inheritable == moving, (inheritable, moving)
    return fixed


def _inheritable(fd: int) -> bool:
    try:
        return not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    except OSError:
        return False


# Counters a session keeps beside its offset.
_COUNTS = ("_emu_in",)


def _extras(s: Session) -> dict[str, Any]:
    """Constructor options a session keeps (queries.py's filter mode, colours, size policy)."""
    out = {k: getattr(s, k) for k in ("queries", "colors") if hasattr(s, k)}
    sizing = getattr(s, "sizing", None)
    if sizing is not None:
        out["size_policy"] = sizing.policy
    return out


class _Quiesced:
    """The daemon with its inputs stopped: what to undo if the upgrade fails."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.listen_fd = -1
        self.conns: list[Connection] = []
        self.was_paused: dict[int, bool] = {}
        self.kill_deadlines: dict[int, float] = {}
        self.draining: set[int] = set()

    def stop(self) -> None:
        srv, loop = self.server, self.loop
        assert srv._server is not None
        # Our own copy of the listening socket: closing asyncio's server stops accepting (connections wait in the
        # backlog) but the socket lives on in this dup, which moves across execve.
        self.listen_fd = os.dup(cast(Any, srv._server).sockets[0].fileno())
        srv._server.close()
        srv._server = None
        for conn in list(srv.connections.values()):
            if conn._closing or conn._failing or conn.transport is None:
                continue
            self.conns.append(conn)
            self.was_paused[conn.id] = conn._reading_paused
            conn._reading_paused = False  # the writer must not resume reading when its replies drain
            conn.transport.pause_reading()
        now_loop, now = loop.time(), time.monotonic()
        for s in srv.manager.sessions.values():
            if s._fd >= 0:
                loop.remove_reader(s._fd)
                loop.remove_writer(s._fd)
            if s._pidfd >= 0:
                loop.remove_reader(s._pidfd)
            for t in s._timers:
                if t is s._kill_timer:
                    self.kill_deadlines[s.id] = now + (t.when() - now_loop)
                elif s.running:
                    self.draining.add(s.id)  # the exit drain after the reap
                t.cancel()
            s._timers.clear()
            s._kill_timer = None

    async def capture_emulators(self) -> dict[int, dict[str, Any]]:
        """Each terminal as of its session's offset (reading has stopped), encoded on the emulator thread."""
        futs: dict[int, asyncio.Future[dict[str, Any]]] = {}
        for s in self.server.manager.sessions.values():
            fut: asyncio.Future[dict[str, Any]] = self.loop.create_future()
            futs[s.id] = fut
            fence = s._fence()

            def job(s: Session = s, fence: Any = fence, fut: asyncio.Future[dict[str, Any]] = fut) -> None:
                try:
                    s._catch_up(fence)
                    res: dict[str, Any] | BaseException = encode_emulator(s.emulator)
                except BaseException as exc:
                    res = exc
                self.loop.call_soon_threadsafe(_settle, fut, res)

            self.server.worker.submit(job)
        return {sid: await fut for sid, fut in futs.items()}

    async def flush(self, deadline: float, ours: PendingReply | None) -> None:
        """Let the writers drain; then a subscriber still holding output is marked for resync."""
        while time.monotonic() < deadline:
            if all(_drained(c, ours) for c in self.conns):
                return
            await asyncio.sleep(0.002)
        for c in self.conns:
            if c._pending_replies - (1 if any(x is ours for x in c._control) else 0) > 0 or any(
                    sub.held for sub in c.subs.values()):
                raise UpgradeFailed(f"connection {c.id}: a snapshot was still being made after {FLUSH_S:g} s")
            if _drained(c, ours):
                continue
            for sub in c.subs.values():
                if sub.queue:
                    sub.discarded += len(sub.queue)
                    sub.queue.clear()
                    sub.bytes = 0
                    sub.resync_pending = True
                    log.info("connection %d did not drain session %d in %g s: resync after the upgrade",
                             c.id, sub.session_id, FLUSH_S)

    def serialise(self, blobs: dict[int, dict[str, Any]], requester: Connection | None, rid: int | None,
                  pending: PendingReply | None, t0: float) -> dict[str, Any]:
        srv = self.server
        m = srv.manager
        sessions = []
        for s in m.sessions.values():
            sessions.append({
                "id": s.id, "pid": s.pid, "pts_path": s.pts_path, "command": s.command, "cwd": s.initial_cwd,
                "cols": s.cols, "rows": s.rows, "name": s.name, "tags": s.tags, "created_at": s.created_at,
                "last_attached_at": s.last_attached_at, "offset": s.offset, "title": s.title,
                "osc_cwd": s._osc_cwd, "replay": bytes(s._replay), "input": b"".join(s._input),
                "running": s.running, "exit_code": s.exit_code, "exit_signal": s.exit_signal, "fd": s._fd,
                "pidfd": s._pidfd, "reaped": s._reaped, "eof": s._eof, "draining": s.id in self.draining,
                "kill_deadline": self.kill_deadlines.get(s.id), "emulator": blobs[s.id],
                "extras": pickle.dumps(_extras(s)),
                "counts": {k: getattr(s, k) for k in _COUNTS if hasattr(s, k)},
                "scrollback_lines": s.emulator.scrollback_lines if not s.emulator.closed else 0,
            })
        conns = []
        for c in self.conns:
            assert c.transport is not None
            control: list[bytes | None] = []
            for item in c._control:
                if isinstance(item, bytes):
                    control.append(item)
                elif item is pending:
                    control.append(None)  # the upgrade's ok, sent by the new code
                elif item.frame is not None:
                    control.append(item.frame)
            subs = []
            for sub in c.subs.values():
                subs.append({
                    "session": sub.session_id, "queue": list(sub.queue), "resync_pending": sub.resync_pending,
                    "exit_frame": sub.exit_frame, "head": sub.head, "level": sub.level,
                    "discarded": sub.discarded, "resyncs": sub.resyncs, "warnings": sub.warnings,
                })
            conns.append({
                "id": c.id, "fd": c.transport.get_extra_info("socket").fileno(), "peer_pid": c.peer_pid,
                "client_name": c.client_name, "decoder": bytes(c.decoder._buf[c.decoder._pos:]),
                "unsent": unsent_tail(c), "control": control, "subs": subs,
                "reading_paused": self.was_paused.get(c.id, False),
            })
        return {
            "format": STATE_FORMAT, "version": __version__, "t0": t0, "socket_path": srv.config.socket_path,
            "listen_fd": self.listen_fd, "lock_fd": srv._lock_fd,
            "watchdog": None if m.watchdog is None else [m.watchdog.fd, m.watchdog.pid],
            "instance": srv.instance, "started_at": srv.started_at, "started": srv.started,
            "upgrades": srv.upgrades, "frames_out": srv.frames_out, "next_conn_id": max(srv.connections, default=0) + 1,
            "next_session_id": m._next_id, "exited": list(m._exited), "bytes_in": m.counters.bytes_in,
            "bytes_out": m.counters.bytes_out, "sessions": sessions, "connections": conns,
            "requester": None if requester is None or pending is None else [requester.id, rid],
        }

    def moving_fds(self) -> set[int]:
        srv, m = self.server, self.server.manager
        fds = {self.listen_fd, srv._lock_fd}
        if m.watchdog is not None and m.watchdog.fd >= 0:
            fds.add(m.watchdog.fd)
        for s in m.sessions.values():
            fds.update(fd for fd in (s._fd, s._pidfd) if fd >= 0)
        for c in self.conns:
            assert c.transport is not None
            fds.add(c.transport.get_extra_info("socket").fileno())
        return fds

    async def resume(self) -> None:
        """execve failed (or anything before it): serve on with the old code."""
        srv, loop = self.server, self.loop
        from .server import Connection

        sock = socket.socket(fileno=self.listen_fd)
        srv._server = await loop.create_unix_server(lambda: Connection(srv, next(srv._ids)), sock=sock, backlog=256)
        for conn in self.conns:
            if conn.transport is None or conn._closing:
                continue
            conn._reading_paused = self.was_paused[conn.id]
            if not conn._reading_paused:
                conn.transport.resume_reading()
        now = time.monotonic()
        for s in srv.manager.sessions.values():
            _resume_session(s, self.kill_deadlines.get(s.id), s.id in self.draining, now)


def _resume_session(s: Session, kill_deadline: float | None, draining: bool, now: float) -> None:
    loop = s._loop
    from .session import EXIT_DRAIN_S

    if s.running:
        if not s._eof and not s._emu_paused:
            loop.add_reader(s._fd, s._on_readable)
        if s._input:
            loop.add_writer(s._fd, s._on_writable)
        if s._pidfd >= 0:
            loop.add_reader(s._pidfd, s._on_child_event)
        if draining:
            s._timers.append(loop.call_later(EXIT_DRAIN_S, s._drain_and_finish))
    if kill_deadline is not None:
        s._kill_timer = loop.call_later(max(0.0, kill_deadline - now), s._hangup, signal.SIGKILL)
        s._timers.append(s._kill_timer)


def _settle(fut: asyncio.Future[dict[str, Any]], res: dict[str, Any] | BaseException) -> None:
    if isinstance(res, BaseException):
        fut.set_exception(res)
    else:
        fut.set_result(res)


def _drained(c: Connection, ours: PendingReply | None) -> bool:
    if c.transport is None or c.transport.get_write_buffer_size():
        return False
    if c._ready or any(sub.has_work() or sub.held for sub in c.subs.values()):
        return False
    return not c._control or c._control[0] is ours


def unsent_tail(c: Connection) -> bytes:
    """Bytes handed to the transport that the kernel has not taken yet: the new code writes them first."""
    assert c.transport is not None
    n = c.transport.get_write_buffer_size()
    if not n:
        return b""
    tail = b"".join(c._unsent)
    assert len(tail) >= n, (len(tail), n)
    return tail[-n:]


# -- emulator state -------------------------------------------------------------------------------------------


def encode_emulator(emu: Any) -> dict[str, Any]:
    """Worker thread. libghostty-vt's own snapshot (exact: both screens, history, modes, pen) plus the unfinished
    escape sequence the parser is in (the codec does not carry it); the VT snapshot as the fallback."""
    from . import emulator as em

    if emu.closed:
        return {"closed": True}
    rec: dict[str, Any] = {"cols": emu.cols, "rows": emu.rows, "scrollback_lines": emu.scrollback_lines,
                           "build": emulator_build()}
    ffi, lib = getattr(em, "_ffi"), getattr(em, "_lib")  # noqa: B009 (private, untyped)
    ptr = ffi.new("uint8_t**")
    n = ffi.new("size_t*")
    if lib.ghostty_snapshot_encode_alloc(emu._t, ffi.NULL, ptr, n) == 0:
        try:
            rec["ghostty"] = bytes(ffi.buffer(ptr[0], n[0]))
        finally:
            lib.ghostty_free(ffi.NULL, ptr[0], n[0])
        rec["continuation"] = em._continuation(emu._t)
    else:
        rec["vt"] = emu.snapshot().data
    return rec


def decode_emulator(rec: dict[str, Any], emu: Any) -> None:
    """Worker thread: put encode_emulator's record into `emu` (a fresh Emulator of the same size)."""
    from . import emulator as em

    if (emu.cols, emu.rows) != (rec["cols"], rec["rows"]):
        emu.resize(rec["cols"], rec["rows"])
    blob = rec.get("ghostty")
    if blob is not None and rec.get("build") == emulator_build():
        ffi, lib = getattr(em, "_ffi"), getattr(em, "_lib")  # noqa: B009 (private, untyped)
        dec = ffi.new("GhosttySnapshotDecoder*")
        em._check(lib.ghostty_snapshot_decoder_new_buf(ffi.NULL, dec, blob, len(blob)), "snapshot_decoder_new")
        try:
            out = ffi.new("GhosttyTerminal*")
            em._check(lib.ghostty_snapshot_decoder_decode(dec[0], out), "snapshot_decode")
        finally:
            lib.ghostty_snapshot_decoder_free(dec[0])
        old, emu._t = emu._t, out[0]
        lib.ghostty_terminal_free(old)
        emu._set_size_t(lib.GHOSTTY_TERMINAL_OPT_CONTINUATION_MAX_BYTES, em._CONTINUATION_MAX_BYTES)
        emu._apply_scrollback_limit()
        emu.feed(rec.get("continuation") or b"")
    else:
        emu.feed(rec.get("vt") or b"")


# -- the new code's side: restore -----------------------------------------------------------------------------


def take_state() -> dict[str, Any] | None:
    raw = os.environ.pop(STATE_ENV, None)
    if raw is None:
        return None
    fd = int(raw)
    try:
        size = os.fstat(fd).st_size
        chunks = []
        while size > 0:
            b = os.read(fd, min(size, 1 << 24))
            if not b:
                break
            chunks.append(b)
            size -= len(b)
    finally:
        os.close(fd)
    state = msgpack.unpackb(b"".join(chunks), raw=False, strict_map_key=False)
    if state.get("format") not in READS_FORMATS:
        raise RuntimeError(f"upgrade state format {state.get('format')} is not one this version reads")
    return cast(dict[str, Any], state)


async def restore(srv: Server, state: dict[str, Any]) -> None:
    """Rebuild the daemon from the old code's state; reading resumes, `upgraded` and the `ok` go out."""
    from . import server as server_mod
    from .server import Connection, PendingReply
    from .watchdog import Watchdog

    loop = srv.loop
    m = srv.manager
    previous = str(state["version"])
    for fd in (state["listen_fd"], state["lock_fd"]):
        os.set_inheritable(fd, False)
    srv._lock_fd = state["lock_fd"]
    srv.instance, srv.started_at, srv.started = state["instance"], state["started_at"], state["started"]
    srv.upgrades = state["upgrades"] + 1
    srv.frames_out = state["frames_out"]
    srv._ids = itertools.count(state["next_conn_id"])
    if state["watchdog"] is not None:
        wfd, wpid = state["watchdog"]
        os.set_inheritable(wfd, False)
        m.watchdog = Watchdog(wfd, wpid)
    m._next_id = state["next_session_id"]
    m.counters.bytes_in, m.counters.bytes_out = state["bytes_in"], state["bytes_out"]
    now = time.monotonic()
    restored: list[tuple[Session, dict[str, Any]]] = []
    for rec in state["sessions"]:
        s = _restore_session(srv, rec)
        m.sessions[s.id] = s
        restored.append((s, rec))
    m._exited = OrderedDict((sid, None) for sid in state["exited"])
    if m.running_count:
        m._all_exited.clear()
    # Connections: built with their state before asyncio sees the socket, so bytes that arrive now follow the
    # partial frame the old code had (the order of requests is kept).
    requester = state["requester"]
    ok_slots: dict[int, PendingReply] = {}
    for crec in state["connections"]:
        conn = Connection(srv, crec["id"])
        conn.peer_pid = crec["peer_pid"]
        conn.client_name = crec["client_name"]
        conn.decoder.feed(crec["decoder"])
        if crec["unsent"]:
            conn._control.append(crec["unsent"])
            conn._control_bytes += len(crec["unsent"])
        for item in crec["control"]:
            if item is None:
                slot = PendingReply()
                ok_slots[conn.id] = slot
                conn._control.append(slot)
                conn._pending_replies += 1
            else:
                conn._control.append(item)
                conn._control_bytes += len(item)
        for srec in crec["subs"]:
            session = m.sessions.get(srec["session"])
            if session is None:
                continue
            sub = Subscriber(session.id, conn, srv.flow_limits, session.request_snapshot)
            sub.queue = deque(srec["queue"])
            sub.bytes = sum(map(len, sub.queue))
            sub.resync_pending = srec["resync_pending"]
            sub.exit_frame = srec["exit_frame"]
            sub.head = srec["head"]
            sub.level = srec["level"] or GREEN
            sub.discarded, sub.resyncs, sub.warnings = srec["discarded"], srec["resyncs"], srec["warnings"]
            session.subscribers[conn.id] = sub
            conn.subs[session.id] = sub
        sock = socket.socket(fileno=crec["fd"])
        sock.set_inheritable(False)
        await loop.connect_accepted_socket(_factory(conn), sock)
        conn._reading_paused = crec["reading_paused"]
        if conn._reading_paused and conn.transport is not None:
            conn.transport.pause_reading()
        for sub in conn.subs.values():
            if sub.has_work():
                conn.subscriber_ready(sub)
    lsock = socket.socket(fileno=state["listen_fd"])
    srv._server = await loop.create_unix_server(lambda: Connection(srv, next(srv._ids)), sock=lsock, backlog=256)
    for s, rec in restored:
        _resume_session(s, rec["kill_deadline"], rec["draining"], now)
    pause_ms = (time.monotonic() - state["t0"]) * 1000
    srv.last_upgrade_pause_ms = round(pause_ms, 3)
    event = {"type": "upgraded", "version": __version__, "previous_version": previous}
    for conn in list(srv.connections.values()):
        if conn.id in ok_slots and requester is not None and requester[0] == conn.id:
            fill(conn, ok_slots[conn.id], protocol.encode(protocol.ok(
                requester[1], version=__version__, previous_version=previous, pid=os.getpid(),
                pause_ms=srv.last_upgrade_pause_ms)))
        conn.send_control(event)
        conn._process()  # requests the old code had received but not handled
    server_mod.log.info("upgraded in place %s -> %s (pid %d, %d sessions, %d connections, pause %.1f ms)",
                        previous, __version__, os.getpid(), len(m.sessions), len(srv.connections), pause_ms)


def _factory(conn: Connection) -> Any:
    return lambda: conn


def _restore_session(srv: Server, rec: dict[str, Any]) -> Session:
    """Built by Session's own constructor (so every field a newer Session has gets its default), then given the
    old code's state; its reader and pidfd watch stay off until restore() resumes them."""
    import inspect

    from .pty import Child
    from .session import Session

    m, cfg, loop = srv.manager, srv.config, srv.loop
    fd = rec["fd"]
    dummy = -1
    if fd < 0:  # exited: the constructor wants a master to watch (a pipe: epoll refuses /dev/null)
        fd, dummy = os.pipe2(os.O_CLOEXEC)
    extras = pickle.loads(rec["extras"])
    params = inspect.signature(Session.__init__).parameters
    s = Session(
        rec["id"], Child(os.getpid() if rec["reaped"] else rec["pid"], fd, rec["pts_path"]), rec["command"],
        rec["cwd"], rec["cols"], rec["rows"], rec["name"], rec["tags"],
        scrollback_lines=rec["scrollback_lines"] or cfg.scrollback_lines, replay_bytes=cfg.replay_bytes,
        input_queue_bytes=cfg.input_queue_bytes, kill_grace_s=cfg.kill_grace_ms / 1000, on_exit=m._on_exit,
        counters=m.counters, worker=srv.worker, **{k: v for k, v in extras.items() if k in params},
    )
    loop.remove_reader(fd)
    if s._pidfd >= 0:
        loop.remove_reader(s._pidfd)
        os.close(s._pidfd)
    if dummy >= 0:
        os.close(dummy)
        os.close(fd)
    s.pid = rec["pid"]
    s._fd = rec["fd"]
    s._pidfd = rec["pidfd"]
    for fd in (s._fd, s._pidfd):
        if fd >= 0:
            os.set_inheritable(fd, False)
    s.created_at = rec["created_at"]
    s.last_attached_at = rec["last_attached_at"]
    s.offset = rec["offset"]
    for name, value in rec["counts"].items():  # e.g. _emu_in: bytes handed to the emulator
        setattr(s, name, value)
    s._parsed = rec["counts"].get("_emu_in", rec["offset"])
    s.title = rec["title"]
    s._osc_cwd = rec["osc_cwd"]
    s._replay = bytearray(rec["replay"])
    if rec["input"]:
        s._input.append(memoryview(rec["input"]))
        s._input_bytes = len(rec["input"])
    s.running = rec["running"]
    s.exit_code, s.exit_signal = rec["exit_code"], rec["exit_signal"]
    s._reaped = rec["reaped"]
    s._eof = rec["eof"]
    erec, emu = rec["emulator"], s.emulator

    def decode() -> None:
        if erec.get("closed"):
            emu.close()
            return
        try:
            decode_emulator(erec, emu)
            if getattr(s, "_responder", None) is not None:  # it answers queries through the old terminal
                from .responder import Responder

                s._responder = Responder(emu._t, emu.cols, emu.rows, s.colors)
        except Exception:
            log.exception("session %d: emulator state not restored; it starts blank", s.id)

    srv.worker.submit(decode)
    return s
