"""In-place upgrade: the daemon replaces its own code (execve, same PID) under running sessions and connected clients.

Why execve and not a successor process: the children stay our children (waitpid and pidfds keep reporting their real
exit codes; the emulator processes keep running with their terminals), and the listening socket, the lock and the
watchdog's pipe are inherited, so there is never a moment in which a second daemon could bind or the watchdog sees
the daemon gone. Steps (docs/upgrade.md):

1. pre-flight: run `COMMAND --check-upgrade N` in a child; it imports everything and says whether it reads state
   format N. Any failure: `upgrade_failed` with the tail of its stderr, and nothing has changed.
2. quiesce: stop accepting, stop reading client sockets and PTYs (output waits in the kernel's PTY buffers, requests
   in the sockets); the feeds hand everything over to the emulator processes and every snapshot/text job being made
   is answered (bounded by FLUSH_S; if one is not, the upgrade fails and the old code resumes); the writers flush
   meanwhile, and a subscriber whose connection cannot take more (a client that does not read) is marked for
   resync, as on overflow. What a transport still buffers moves as raw bytes.
3. serialise everything to a memfd (pickle), clear close-on-exec on exactly the fds that move (every other fd is
   forced close-on-exec), and execve. If execve fails, the flags are undone and the old code resumes serving and
   replies `upgrade_failed`.
4. the new code (server.run sees STATE_ENV) rebuilds it all, resumes reading, sends `upgraded` to every client and
   the `ok` to the requester.

This module is imported by the daemon at start-up: it keeps its imports to what the daemon has loaded anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from . import __version__, protocol
from .flow import Slot
from .protocol import ProtocolError

if TYPE_CHECKING:
    from .server import Connection, Server

log = logging.getLogger("vibest_pty.upgrade")

STATE_FORMAT = 2  # 1 was the prototype's (an emulator thread; terminals encoded with libghostty's snapshot codec)
READS_FORMATS = frozenset({2})
CHECK_FLAG = "--check-upgrade"
STATE_ENV = "VIBEST_PTY_UPGRADE_STATE"  # the memfd's number in the new process (removed from the environment)
PREFLIGHT_TIMEOUT_S = 30.0  # imports take ~1 s on a loaded 2-core box; a hung command must not hold us forever
FLUSH_S = 2.0  # writers and the snapshot/text jobs being made get this long before the upgrade goes on (or fails)
POLL_S = 0.002  # how often the quiesce looks whether everything is drained
STDERR_TAIL = 2000
MAX_ARGS = 256
HELD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR2})  # blocked from execve to restore()


def parse_command(msg: dict[str, Any]) -> list[str] | None:
    """`upgrade`'s optional argv: a non-empty list of at most MAX_ARGS strings without NUL."""
    cmd = msg.get("command")
    if cmd is None:
        return None
    if (not isinstance(cmd, list) or not cmd or len(cmd) > MAX_ARGS
            or not all(isinstance(a, str) and "\0" not in a for a in cmd) or not cmd[0]):
        raise ProtocolError(protocol.INVALID_ARGUMENT,
                            f"command must be a non-empty list of at most {MAX_ARGS} strings without NUL")
    return list(cmd)


# -- the new code's side: pre-flight check ---------------------------------------------------------------------


def check_main(argv: list[str]) -> int | None:
    """`--check-upgrade N`: import everything, print what we are as JSON; exit 0 if we read state format N."""
    if CHECK_FLAG not in argv:
        return None
    import json

    try:
        n = int(argv[argv.index(CHECK_FLAG) + 1])
    except (IndexError, ValueError):
        print(f"{CHECK_FLAG} needs a state format number", file=sys.stderr)
        return 2
    # Everything the daemon and its emulator processes may load, the native library included: a broken install
    # fails here, while the old code still runs, not after the execve.
    import importlib

    for name in ("agent", "config", "emulator", "emulator_host", "emulator_process", "feed", "flow", "manager",
                 "server", "session", "watchdog"):
        importlib.import_module(f"vibest_pty.{name}")

    _compile_package()
    print(json.dumps({"version": __version__, "formats": sorted(READS_FORMATS)}))
    if n not in READS_FORMATS:
        print(f"vibest-pty {__version__} cannot read upgrade state format {n} (reads {sorted(READS_FORMATS)})",
              file=sys.stderr)
        return 3
    return 0


def _compile_package() -> None:
    """Write the package's bytecode now, in the pre-flight, while the old code still serves: the new
    interpreter then loads .pyc files instead of compiling ~40 modules from source during the pause (with
    PYTHONDONTWRITEBYTECODE set, as on this project's boxes, nothing would ever be cached: measured 212 -> 118 ms
    of CPU to import the daemon). An unwritable installation is left as it is."""
    import compileall

    with contextlib.suppress(OSError):
        compileall.compile_dir(os.path.dirname(os.path.abspath(__file__)), quiet=2)


def default_command() -> list[str]:
    """How this daemon was started: same interpreter, `-m vibest_pty`, same arguments."""
    return [sys.executable, "-m", "vibest_pty", *sys.argv[1:]]


class UpgradeFailed(Exception):
    pass


async def preflight(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Run `argv --check-upgrade N`; the resolved program path and what it printed, or UpgradeFailed."""
    import json
    import shutil  # here: the daemon's start (and an upgrade's pause) does not need it

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
        if not isinstance(info, dict):
            raise ValueError(info)
    except (ValueError, IndexError):
        raise UpgradeFailed(f"pre-flight of {prog!r} printed no state info: {tail}") from None
    return path, info


# -- the old code's side --------------------------------------------------------------------------------------


class Upgrader:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.in_progress = False
        self._task: asyncio.Task[None] | None = None

    def request(self, conn: Connection | None, rid: int | None, command: list[str] | None) -> Slot | None:
        """The `upgrade` request (or SIGUSR2, without conn). Its reply slot is filled by the old code on failure,
        by the new code on success."""
        if self.in_progress:
            raise ProtocolError(protocol.UPGRADE_IN_PROGRESS, "an upgrade is already in progress")
        self.in_progress = True
        slot = conn.outbox.reserve() if conn is not None and rid is not None else None
        self._task = self.server.loop.create_task(self._run(conn, rid, slot, command))
        return slot

    def on_signal(self) -> None:
        log.info("SIGUSR2: upgrading in place")
        try:
            self.request(None, None, None)
        except ProtocolError as exc:
            log.warning("SIGUSR2 ignored: %s", exc.message)

    async def _run(self, conn: Connection | None, rid: int | None, slot: Slot | None,
                   command: list[str] | None) -> None:
        try:
            argv = command or default_command()
            path, info = await preflight(argv)
            log.info("upgrading to %s (%s)", info.get("version"), " ".join(argv))
            await self._quiesce_and_exec(path, argv, conn, rid, slot)
        except UpgradeFailed as exc:
            log.warning("upgrade failed: %s", exc)
            self._reply(conn, slot, protocol.error(rid, protocol.UPGRADE_FAILED, str(exc), "upgrade"))
        except Exception as exc:
            log.exception("upgrade failed")
            self._reply(conn, slot, protocol.error(rid, protocol.UPGRADE_FAILED, f"internal: {exc}", "upgrade"))
        finally:
            self.in_progress = False

    @staticmethod
    def _reply(conn: Connection | None, slot: Slot | None, message: dict[str, Any]) -> None:
        if conn is not None and slot is not None:
            conn.outbox.fill(slot, protocol.encode(message))
            conn._schedule()

    async def _quiesce_and_exec(self, path: str, argv: list[str], conn: Connection | None, rid: int | None,
                                slot: Slot | None) -> None:
        srv = self.server
        for c in srv.connections.values():
            if c.__dict__.get("agent_tasks"):
                raise UpgradeFailed(f"connection {c.id} has a run/wait request pending; try again when it is "
                                    "answered")
        t0 = time.monotonic()
        q = _Quiesced(srv, slot)
        q.stop()
        try:
            await q.flush(t0 + FLUSH_S)
            t1 = time.monotonic()
            q.freeze_writers()
            state = q.serialise(conn, rid, t0)
            moving = q.moving_fds()
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            mfd = os.memfd_create("vibest-pty-upgrade", 0)  # no MFD_CLOEXEC: it moves
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(mfd, view):]
                os.lseek(mfd, 0, os.SEEK_SET)
                moving.add(mfd)
                fixed = set_inheritable_exactly(moving)
                if fixed:
                    log.warning("fds %s were inheritable and are now close-on-exec", sorted(fixed))
                env = {k: v for k, v in os.environ.items() if k != STATE_ENV}
                env[STATE_ENV] = str(mfd)
                log.info("quiesced and drained in %.1f ms; state of %d bytes in %.1f ms, %d fds move",
                         (t1 - t0) * 1000, len(data), (time.monotonic() - t1) * 1000, len(moving))
                for h in logging.getLogger().handlers:
                    h.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                # Blocked across the exec (the mask is inherited): until the new code has its handlers, these
                # would kill the daemon (their default action), and the watchdog would then hang up every session.
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
                try:
                    os.execve(path, argv, env)
                except OSError as exc:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                    raise UpgradeFailed(f"execve {path}: {exc.strerror or exc}") from None
            finally:
                for fd in moving - {mfd}:
                    with contextlib.suppress(OSError):
                        os.set_inheritable(fd, False)
                os.close(mfd)
        except BaseException:
            await q.resume()
            raise


def set_inheritable_exactly(moving: set[int]) -> set[int]:
    """Clear close-on-exec on `moving`, set it on every other fd above stdio; returns the fds that had to be fixed
    (each a leak the count caught)."""
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
    if inheritable != moving:
        raise UpgradeFailed(f"fds that would move: {sorted(inheritable)}, meant to move: {sorted(moving)}")
    return fixed


def _inheritable(fd: int) -> bool:
    try:
        return not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    except OSError:
        return False


class _Quiesced:
    """The daemon with its inputs stopped: what to undo if the upgrade fails."""

    def __init__(self, server: Server, ours: Slot | None) -> None:
        self.server = server
        self.ours = ours
        self.listen_fd = -1
        self.conns: list[Connection] = []

    def stop(self) -> None:
        from .flow import State

        srv = self.server
        assert srv._server is not None
        # Our own copy of the listening socket: closing asyncio's server stops accepting (connections wait in the
        # backlog) but the socket lives on in this dup, which moves across execve.
        self.listen_fd = os.dup(cast(asyncio.Server, srv._server).sockets[0].fileno())
        srv._server.close()
        srv._server = None
        for conn in list(srv.connections.values()):
            if conn.outbox.state is State.OPEN and conn.transport is not None:
                self.conns.append(conn)
                conn.freeze()
        for s in srv.manager.sessions.values():
            s.freeze()

    def _drained(self) -> bool:
        for s in self.server.manager.sessions.values():
            s.feed.flush()
            if not s.feed.idle:
                return False
        for c in self.conns:
            if c.transport is None:
                continue
            if any(sub.held for sub in c.subs.values()):
                return False  # a resync's snapshot on its way
            if c.outbox.writing_paused:
                continue  # it does not read: what it holds moves (marked for resync)
            if not c.outbox.drained(self.ours):
                return False
        return True

    async def flush(self, deadline: float) -> None:
        """Until the feeds have handed everything over and every job is answered, and the writers are drained
        (or cannot write: the peer does not read); at most until `deadline`."""
        while not self._drained():
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        for s in self.server.manager.sessions.values():
            if not s.feed.idle:
                raise UpgradeFailed(f"session {s.id}: a snapshot or text was still being made after {FLUSH_S:g} s")
        for c in self.conns:
            if any(sub.held for sub in c.subs.values()):
                raise UpgradeFailed(f"connection {c.id}: a resync was still being made after {FLUSH_S:g} s")

    def freeze_writers(self) -> None:
        """Nothing is written any more; what a subscriber still queues is replaced by a resync (its connection
        could not take it)."""
        for c in self.conns:
            c.muted = True
        for c in self.conns:
            for sub in c.subs.values():
                if sub.queue:
                    log.info("connection %d did not drain session %d: resync after the upgrade", c.id,
                             sub.session_id)
                    sub.mark_resync()
        self.server.worker.freeze()

    def live(self) -> list[Connection]:
        """The quiesced connections still open (a peer may have hung up during the flush)."""
        from .flow import State

        srv = self.server
        return [c for c in self.conns if srv.connections.get(c.id) is c and c.transport is not None
                and not c.transport.is_closing() and c.outbox.state is State.OPEN]

    def serialise(self, requester: Connection | None, rid: int | None, t0: float) -> dict[str, Any]:
        srv = self.server
        return {
            "format": STATE_FORMAT, "version": __version__, "t0": t0, "socket_path": srv.config.socket_path,
            "listen_fd": self.listen_fd, "lock_fd": srv._lock_fd, "instance": srv.instance,
            "started_at": srv.started_at, "started": srv.started, "upgrades": srv.upgrades,
            "frames_out": srv.frames_out, "next_conn_id": next(srv._ids),
            "pool": srv.worker.export(), "manager": srv.manager.export(),
            "connections": [c.export(self.ours) for c in self.live()],
            "requester": None if requester is None or self.ours is None else [requester.id, rid],
        }

    def moving_fds(self) -> set[int]:
        srv = self.server
        fds = {self.listen_fd, srv._lock_fd, *srv.manager.moving_fds(), *srv.worker.moving_fds()}
        for c in self.live():
            assert c.transport is not None
            fds.add(c.transport.get_extra_info("socket").fileno())
        fds.discard(-1)
        return fds

    async def resume(self) -> None:
        """execve failed (or anything before it): serve on with the old code."""
        srv = self.server
        srv.worker.thaw()
        await srv.listen_on(socket.socket(fileno=self.listen_fd))
        for conn in self.conns:
            conn.thaw()
        for s in srv.manager.sessions.values():
            s.resume()


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
    state: dict[str, Any] = pickle.loads(b"".join(chunks))
    state["loaded"] = time.monotonic()  # the new interpreter is up and has imported the daemon's code
    if state.get("format") not in READS_FORMATS:
        raise RuntimeError(f"upgrade state format {state.get('format')} is not one this version reads")
    return state


async def restore(srv: Server, state: dict[str, Any]) -> None:
    """Rebuild the daemon from the old code's state; reading resumes, `upgraded` and the `ok` go out."""
    import dataclasses

    from .server import Connection

    loop = srv.loop
    previous = str(state["version"])
    srv.config = dataclasses.replace(srv.config, socket_path=state["socket_path"])
    for fd in (state["listen_fd"], state["lock_fd"]):
        os.set_inheritable(fd, False)
    srv._lock_fd = state["lock_fd"]
    srv.instance, srv.started_at, srv.started = state["instance"], state["started_at"], state["started"]
    srv.upgrades = state["upgrades"] + 1
    srv.frames_out = state["frames_out"]
    srv._ids = itertools.count(state["next_conn_id"])
    srv.worker.restore(state["pool"])  # before the sessions: each Feed registers with its member
    sessions = srv.manager.restore(state["manager"])
    # Connections: built with their state before the loop sees the socket, so bytes that arrive now follow the
    # partial frame the old code had (the order of requests is kept).
    requester = state["requester"]
    slots: dict[int, Slot] = {}
    conns: list[Connection] = []
    for crec in state["connections"]:
        conn = Connection(srv, crec["id"])
        if (slot := conn.restore(crec)) is not None:
            slots[conn.id] = slot
        sock = socket.socket(fileno=crec["fd"])
        sock.set_inheritable(False)
        try:
            await loop.connect_accepted_socket(lambda conn=conn: conn, sock)  # type: ignore[misc]
        except OSError as exc:  # one client's socket must not cost every session (the daemon would die)
            log.warning("connection %d not restored: %s", conn.id, exc)
            conn._unsubscribe_all()
            srv.manager.hub.watchers.pop(conn.id, None)
            sock.close()
            continue
        conns.append(conn)
    await srv.listen_on(socket.socket(fileno=state["listen_fd"]))
    for s in sessions:
        s.resume_restored()
    srv.signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)  # one that came meanwhile is handled now
    pause_ms = round((time.monotonic() - state["t0"]) * 1000, 3)
    srv.last_upgrade_pause_ms = pause_ms
    event = {"type": "upgraded", "version": __version__, "previous_version": previous}
    for conn in conns:
        slot = slots.get(conn.id)
        if slot is not None and requester is not None and requester[0] == conn.id:
            conn.outbox.fill(slot, protocol.encode(protocol.ok(
                requester[1], version=__version__, previous_version=previous, pid=os.getpid(), pause_ms=pause_ms)))
        conn.send_control(event)
        conn.resume_after_restore()
    log.info("upgraded in place %s -> %s (pid %d, %d sessions, %d connections, pause %.1f ms: the new code "
             "started and imported in %.1f ms)", previous, __version__, os.getpid(), len(sessions), len(conns),
             pause_ms, (state.get("loaded", state["t0"]) - state["t0"]) * 1000)
