"""One PTY session: its child's lifecycle, the master fd reader, fan-out to subscribers, and its requests.

I/O runs on the event loop: the master fd is read with add_reader, the child is reaped through a pidfd, input that
the PTY does not take at once waits in an InputQueue for add_writer. No polling. The terminal state (the emulator,
and the promise that a snapshot is exact at its offset) belongs to the session's `Feed` (feed.py); the raw output
kept for `since` and for rebuilding belongs to its `ReplayWindow`.
"""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import logging
import os
import signal
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import protocol
from .emulator_host import colors_to_wire
from .feed import Backend, Feed
from .flow import FlowLimits, Sink, Subscriber
from .input_queue import InputQueue
from .protocol import ProtocolError
from .pty import Child, foreground_pgrp, set_winsize
from .queries import DEFAULT_COLORS, Colors, Query, QueryFilter, Segment, for_emulator, parse_colors
from .replay import ReplayWindow
from .shapes import ExitEvent, SessionInfo, ShellFields, Snapshot
from .sizing import SizePolicy

if TYPE_CHECKING:
    from .agent import SessionAgent

log = logging.getLogger("vibest_pty.session")

READ_SIZE = 65536
SHORT_READ = 512  # a read this short means the PTY is drained (a flood's reads are ~4 KiB)
# Output of a flood is coalesced across reader callbacks into chunks of up to READ_SIZE, but held at most this long:
# fewer, larger frames, without a read ever waiting (see _on_readable).
COALESCE_S = 0.002
# After the child is reaped, output still held by a grandchild that keeps the slave open is waited for this long.
EXIT_DRAIN_S = 0.1
EXIT_DRAIN_READS = 64  # at most 4 MiB taken then
SNAPSHOT_FRAME_MARGIN = 64 * 1024  # room in a frame for the reply around a snapshot's data (session info, modes)

SnapshotDone = Callable[["Snapshot | Exception"], None]
NO_SHELL: ShellFields = {"shell_state": "unknown", "shell_integration": False, "last_command": None}


@dataclass(frozen=True, slots=True)
class SessionLimits:
    scrollback_lines: int = 1000
    replay_bytes: int = 1024 * 1024
    input_queue_bytes: int = 8 * 1024 * 1024
    kill_grace_s: float = 2.0
    max_frame: int = 16 * 1024 * 1024  # a snapshot's data is trimmed (oldest history first) to fit a frame
    # A session nobody has attached for replay_idle_s keeps only replay_idle_bytes of replay: 100 sessions left
    # running in the background hold 100 MiB of replay at the default 1 MiB, ~6 MiB once idle. Attaching restores
    # the full window (it refills as output comes); an `attach since` older than the kept bytes gets a snapshot.
    replay_idle_s: float = 600.0  # 0: never shrink
    replay_idle_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class SessionSpec:
    command: list[str]
    cwd: str
    cols: int
    rows: int
    name: str = ""
    tags: dict[str, str] | None = None
    # queries="daemon": the emulator answers terminal queries and clients never see them (see queries.py);
    # "client": everything passes through untouched and the clients' terminals answer.
    queries: str = "daemon"
    colors: Colors | None = None
    size_policy: str = "latest"


_FIONREAD_BUF = array.array("i", [0])  # reused: only the loop thread reads PTYs


def _fionread(fd: int) -> int:
    """Bytes the PTY master holds right now (reading more than that would wait for the tty flush worker)."""
    try:
        fcntl.ioctl(fd, termios.FIONREAD, _FIONREAD_BUF)
    except OSError:
        return 0
    return _FIONREAD_BUF[0]


class Session:
    def __init__(
        self,
        sid: int,
        child: Child,
        spec: SessionSpec,
        limits: SessionLimits,
        backend: Backend,
        *,
        on_exit: Callable[[Session], None],
        counters: Counters,
        state: dict[str, Any] | None = None,
    ) -> None:
        """`state` (an in-place upgrade, upgrade.py): the old code's `export()`; the PTY and the child are already
        ours, nothing is watched until `thaw()`."""
        self.id = sid
        self.pid = child.pid
        self.command = spec.command
        self.initial_cwd = spec.cwd
        self.cols, self.rows = spec.cols, spec.rows
        self.name = spec.name
        self.tags = dict(spec.tags or {})
        self.created_at = time.time()
        self.last_attached_at: float | None = None
        self.limits = limits
        self._loop = asyncio.get_running_loop()
        self._fd = child.master_fd
        self.queries = spec.queries
        self.colors = spec.colors or DEFAULT_COLORS
        self._queries = QueryFilter() if spec.queries == "daemon" else None
        self.sizing = SizePolicy(spec.size_policy, spec.cols, spec.rows)  # several clients, one size (sizing.py)
        self.replay = ReplayWindow(limits.replay_bytes)
        self._offset = 0  # output bytes sent to clients so far (queries kept from them are not counted)
        self.feed = Feed(
            sid, spec.cols, spec.rows, limits.scrollback_lines, backend,
            schedule=self._schedule, pause=self._pause_for_emulator, on_reply=self._emulator_reply,
            history=self.replay.window,
            snapshot_max_bytes=max(limits.max_frame - SNAPSHOT_FRAME_MARGIN, 4096),
            respond=self._queries is not None, colors=colors_to_wire(spec.colors),
            state=None if state is None else state["feed"],
        )
        self.subscribers: dict[int, Subscriber] = {}  # by connection id
        self.agent: SessionAgent | None = None  # shell tracking, set by the manager (agent.py)
        self.input = InputQueue(self._fd, limits.input_queue_bytes, want_writable=self._want_writable,
                                on_written=self._count_in, label=f"session {sid}")
        self._on_exit = on_exit
        self._counters = counters
        self.running = True
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self._reaped = False
        self._zombie = False  # exited, status taken with WNOWAIT: kept unreaped until the kill escalation settles
        self._eof = False
        self._reading = True
        self._pending: list[bytes] = []  # read but not yet delivered (coalescing, see _on_readable)
        self._pending_bytes = 0
        self._coalesce: asyncio.TimerHandle | None = None
        self._pidfd = -1
        self._timers: list[asyncio.TimerHandle] = []
        self._kill_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None  # shrinks the replay window (SessionLimits.replay_idle_s)
        self._arm_idle()
        self._frozen = False  # an upgrade is quiescing: the PTY is not read (its output waits in the kernel)
        self._restored: dict[str, Any] | None = None  # the old code's export(), until resume_restored()
        if state is not None:
            self._import(state)
            return
        self._loop.add_reader(self._fd, self._on_readable)
        try:
            self._pidfd = os.pidfd_open(self.pid)
            self._loop.add_reader(self._pidfd, self._on_child_event)
        except OSError:
            # The child already exited and was reaped (cannot happen: we have not waited) or no pidfd support.
            self._loop.call_soon(self._on_child_event)

    @property
    def offset(self) -> int:
        """Output bytes delivered so far (to the feed, the replay window and the subscribers). Reading it delivers
        what coalescing holds first, so that everything before the offset a caller acts on has been delivered."""
        if self._pending:
            self._flush_pending()
        return self._offset

    @property
    def title(self) -> str:
        return self.feed.title

    def _schedule(self, delay: float, fn: Callable[[], None]) -> object:
        return self._loop.call_later(delay, fn) if delay > 0 else self._loop.call_soon(fn)

    def _count_in(self, n: int) -> None:
        self._counters.bytes_in += n

    def _want_writable(self, flag: bool) -> None:
        if flag:
            self._loop.add_writer(self._fd, self.input.on_writable)
        elif self._fd >= 0:
            self._loop.remove_writer(self._fd)

    # -- output ------------------------------------------------------------------------------------------------

    def _on_readable(self) -> int:
        """Read what the PTY holds now, never waiting; returns the bytes read.

        On a PTY master whose line-discipline buffer is empty, read() waits for the kernel's flush worker to move
        the next chunk, even with O_NONBLOCK; so read again only while FIONREAD reports bytes. A flood's chunks
        (~4 KiB each) are coalesced across callbacks up to READ_SIZE, held at most COALESCE_S; a short read is
        interactive output and goes out at once."""
        fd = self._fd
        got = 0
        short = False
        while self._pending_bytes < READ_SIZE:
            try:
                data = os.read(fd, READ_SIZE - self._pending_bytes)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:
                    log.warning("session %d: read: %s", self.id, exc)
                data = b""
            if not data:
                self._eof = True
                break
            self._pending.append(data)
            self._pending_bytes += len(data)
            got += len(data)
            if len(data) < SHORT_READ:
                short = True  # interactive output: a reply is waiting
                break
            if _fionread(fd) <= 0:
                break
        if short or self._eof or self._pending_bytes >= READ_SIZE:
            self._flush_pending()
        elif self._pending and self._coalesce is None:
            self._coalesce = self._loop.call_later(COALESCE_S, self._flush_pending)
        if self._eof and self._queries is not None and self._queries.held:
            self._deliver_segments(self._queries.flush())
        if self._eof:
            self._stop_reading()
            if self._exited:
                self._finish()
        return got

    def _flush_pending(self) -> None:
        if self._coalesce is not None:
            self._coalesce.cancel()
            self._coalesce = None
        if self._pending:
            chunks = self._pending
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._pending = []
            self._pending_bytes = 0
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._queries is not None:
            segs = self._queries.feed(data)
            if len(segs) != 1 or not isinstance(segs[0], bytes):
                self._deliver_segments(segs)
                return
        self.feed.output(data)  # may pause our reading for the emulator's backlog
        self._to_clients(data)

    def _deliver_segments(self, segs: list[Segment]) -> None:
        """Queries go to the emulator only (it answers them); the rest to both, in order."""
        emu = for_emulator(segs)  # queries.Marked when the responder must scan it
        if emu:
            self.feed.output(emu, eager=any(isinstance(s, Query) for s in segs))  # a query is answered at once
        client = b"".join(s for s in segs if isinstance(s, bytes))
        if client:
            self._to_clients(client)

    def _to_clients(self, data: bytes) -> None:
        frame = protocol.encode_output(self.id, self._offset, data)
        self._offset += len(data)
        self.replay.append(data)
        self._counters.bytes_out += len(data)
        for sub in tuple(self.subscribers.values()):  # a push may close its connection (auto-disconnect)
            sub.push(frame)
        if self.agent is not None:
            for event in self.agent.feed(data):  # `command` events, in stream order after their output
                for sub in tuple(self.subscribers.values()):
                    sub.push(event)

    def _stop_reading(self) -> None:
        if self._reading and self._fd >= 0:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _pause_for_emulator(self, paused: bool) -> None:
        if paused:
            self._stop_reading()
        elif not self._frozen:
            self._start_reading()

    def _start_reading(self) -> None:
        if not self._reading and self.running and not self._eof and self._fd >= 0 and not self.feed.paused:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    # -- in-place upgrade (upgrade.py) -------------------------------------------------------------------------

    def freeze(self) -> None:
        """Stop reading the PTY (an upgrade quiesces): output waits in the kernel's buffer, nothing is lost.
        What coalescing holds is delivered now, so the offset covers everything read."""
        self._frozen = True
        self._flush_pending()
        self._stop_reading()

    def thaw(self) -> None:
        self._frozen = False
        self._start_reading()

    def export(self) -> dict[str, Any]:
        """Everything the new code needs to carry on (after freeze(), with the feed drained: Feed.export). The
        fds (master, pidfd) move across execve; timers go as what they are waiting for (a kill's deadline on
        CLOCK_MONOTONIC, which is system-wide, and whether the exit drain is pending)."""
        import pickle

        self._flush_pending()  # a coalescing timer may have been armed by an exit's last read
        kill_deadline = None
        if self._kill_timer is not None:
            kill_deadline = time.monotonic() + max(0.0, self._kill_timer.when() - self._loop.time())
        agent = None
        if self.agent is not None:
            agent = pickle.dumps({k: v for k, v in vars(self.agent).items() if k not in _AGENT_LINKS})
        return {
            "id": self.id, "pid": self.pid, "command": self.command, "cwd": self.initial_cwd,
            "cols": self.cols, "rows": self.rows, "name": self.name, "tags": self.tags,
            "created_at": self.created_at, "last_attached_at": self.last_attached_at, "fd": self._fd,
            "pidfd": self._pidfd, "queries": self.queries,
            "objects": pickle.dumps((self.colors, self._queries, self.sizing)), "agent": agent,
            "replay": [self.replay.end, self.replay.window()[1], self.replay.max_bytes], "offset": self._offset,
            "feed": self.feed.export(), "input": self.input.export(), "running": self.running,
            "exit_code": self.exit_code, "exit_signal": self.exit_signal, "reaped": self._reaped,
            "zombie": self._zombie, "eof": self._eof, "draining": self.running and bool(self._timers),
            "kill_deadline": kill_deadline,
        }

    def _import(self, st: dict[str, Any]) -> None:
        import pickle

        self.created_at, self.last_attached_at = st["created_at"], st["last_attached_at"]
        self.colors, self._queries, self.sizing = pickle.loads(st["objects"])
        self.replay.restore(*st["replay"])
        self._offset = st["offset"]
        self.input.restore(st["input"])
        self.running, self.exit_code, self.exit_signal = st["running"], st["exit_code"], st["exit_signal"]
        self._reaped, self._zombie, self._eof = st["reaped"], st["zombie"], st["eof"]
        self._pidfd = st["pidfd"]
        self._reading = False
        self._frozen = True
        self._restored = st  # the timers and watches start in resume_restored()

    def agent_state(self) -> dict[str, Any] | None:
        """The pickled SessionAgent fields of export(), for the manager to put into a new SessionAgent."""
        import pickle

        st = self._restored
        if st is None or st["agent"] is None:
            return None
        fields: dict[str, Any] = pickle.loads(st["agent"])
        return fields

    def resume_restored(self) -> None:
        """The new code: watch the child and the PTY again, re-arm the kill deadline and the exit drain."""
        st, self._restored = self._restored, None
        assert st is not None
        self.resume(st["kill_deadline"], st["draining"])

    def resume(self, kill_deadline: float | None = None, draining: bool = False) -> None:
        """Watch what a restored session watches (kill_deadline, draining: from export()); also the undo of
        freeze() when execve failed (then the timers are still there and the arguments are not given)."""
        loop = self._loop
        if self.running and self._pidfd >= 0 and not self._exited:
            loop.remove_reader(self._pidfd)
            loop.add_reader(self._pidfd, self._on_child_event)
        if self.input:
            self._want_writable(True)
        if kill_deadline is not None and self._kill_timer is None:
            self._kill_timer = loop.call_later(max(0.0, kill_deadline - time.monotonic()), self._escalate)
        if draining:
            self._timers.append(loop.call_later(EXIT_DRAIN_S, self._drain_and_finish))
        self.thaw()

    def _emulator_reply(self, data: bytes) -> None:
        """Bytes the emulator answers on the terminal's behalf (query replies): into the PTY, like input."""
        if self.running:
            try:
                self.input.write(data)
            except ProtocolError as exc:
                log.debug("session %d: reply dropped: %s", self.id, exc)

    def update_colors(self, value: dict[str, Any]) -> None:
        """The colours queries are answered with: `value` (an attach's `colors`, validated) over the current ones."""
        self.colors = colors = parse_colors(value, self.colors)
        if self._queries is not None:
            self.feed.set_colors(colors_to_wire(colors))

    # -- exit --------------------------------------------------------------------------------------------------

    def _on_child_event(self) -> None:
        if self._reaped or self._zombie:
            return
        # While a kill escalation is pending the leader is left a zombie (WNOWAIT): its pid, which is the process
        # group id we will SIGKILL, cannot be reused by anyone until we reap it.
        keep = self._kill_timer is not None
        try:
            res = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | (os.WNOWAIT if keep else 0))
        except ChildProcessError:
            res = None
            self.exit_code, self.exit_signal = 0, None
            self._reaped = True
        if res is not None:
            if res.si_code == os.CLD_EXITED:
                self.exit_code, self.exit_signal = res.si_status, None
            else:
                self.exit_code, self.exit_signal = None, res.si_status
            if keep:
                self._zombie = True
            else:
                self._reaped = True
        elif not self._reaped:
            return  # stopped/continued, or a spurious wake-up
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._eof:
            self._on_readable()  # take what is already there; EIO follows once no one holds the slave
        if self._eof:
            self._finish()
        else:
            # A grandchild still holds the slave: give in-flight output a moment, then report the exit.
            self._timers.append(self._loop.call_later(EXIT_DRAIN_S, self._drain_and_finish))

    @property
    def _exited(self) -> bool:
        return self._reaped or self._zombie

    def _drain_and_finish(self) -> None:
        if self.running:
            # Take everything the PTY holds now (its reader may be paused for the emulator's backlog), but not
            # forever: a grandchild may keep writing.
            for _ in range(EXIT_DRAIN_READS):
                if self._eof or self._on_readable() == 0:
                    break
            self._finish()

    def _finish(self) -> None:
        if not self.running:
            return
        self._flush_pending()
        self.running = False
        for t in self._timers:
            if t is not self._kill_timer:  # a kill still escalates to the group's stragglers (HUP-ignoring jobs)
                t.cancel()
        self._timers.clear()
        self._stop_reading()
        self.input.clear()
        os.close(self._fd)  # the slave side gets a hangup: a lingering grandchild sees EOF/SIGHUP
        self._fd = -1
        frame = protocol.encode(self._exit_event())
        for sub in tuple(self.subscribers.values()):
            sub.push_exit(frame)
        log.info("session %d exited (code=%s signal=%s)", self.id, self.exit_code, self.exit_signal)
        self._on_exit(self)
        if self.agent is not None:
            self.agent.exited()

    # -- requests ----------------------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self.running:
            raise ProtocolError(protocol.SESSION_EXITED, f"session {self.id} has exited")

    def write_input(self, data: bytes) -> None:
        self._require_running()
        self.input.write(data)

    def resize(self, cols: int, rows: int) -> None:
        self._require_running()
        set_winsize(self._fd, cols, rows)  # the kernel sends SIGWINCH to the foreground group
        self._flush_pending()  # the resize lands exactly between the bytes before and after it
        self.feed.resize(cols, rows)
        self.cols, self.rows = cols, rows

    def send_signal(self, sig: int) -> None:
        self._require_running()
        target = foreground_pgrp(self._fd) or self.pid
        try:
            os.killpg(target, sig)
        except ProcessLookupError:
            if not self._reaped:
                os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGHUP to the session's process groups now, SIGKILL after the grace if it is still there."""
        if not self.running:
            return
        if self._kill_timer is None and not self._exited:
            self._kill_timer = self._loop.call_later(self.limits.kill_grace_s, self._escalate)
        self._hangup(signal.SIGHUP)

    def settle_kill(self) -> None:
        """Escalate a pending kill now (the daemon is stopping): nothing of ours is left unreaped."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._escalate()

    def _escalate(self) -> None:
        """The grace is over: SIGKILL what is left of our groups, then reap the leader we kept unreaped."""
        self._hangup(signal.SIGKILL)
        self._kill_timer = None
        if self._zombie:
            try:
                os.waitpid(self.pid, 0)  # a zombie: returns at once
            except ChildProcessError:
                pass
            self._zombie = False
            self._reaped = True

    def _hangup(self, sig: int) -> None:
        # The leader's pid is its group's id: it cannot be reused while the leader is alive or an unreaped zombie,
        # which it is until _escalate (see _on_child_event). Once reaped, the group is not ours to signal.
        groups: set[int] = set()
        if not self._reaped:
            groups.add(self.pid)
        if self._fd >= 0 and (fg := foreground_pgrp(self._fd)) is not None:
            groups.add(fg)  # the terminal's foreground group is read now, from the terminal we hold
        for pg in groups:
            try:
                os.killpg(pg, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._exited:  # a leader that moved to another group still gets it
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    # -- views -------------------------------------------------------------------------------------------------

    def replay_since(self, since: int) -> bytes | None:
        """Raw output from `since` to now, or None when `since` is older than the replay window."""
        self._flush_pending()
        return self.replay.since(since)

    def cwd(self) -> str:
        cwd = self.feed.cwd
        if cwd:
            return cwd
        if self.running:
            try:
                return os.readlink(f"/proc/{self.pid}/cwd")
            except OSError:
                pass
        return self.initial_cwd

    def request_snapshot(self, done: SnapshotDone, *, bounded: bool = False) -> int:
        """The terminal state at the current offset (returned); `done` gets the Snapshot map, or the exception,
        on the loop. `bounded` (a client's own request) may raise limit_reached when too many are queued."""
        offset = self.offset  # the clients' offset; the feed fences its own stream (queries included) here

        def finished(st: Any) -> None:
            if isinstance(st, Exception):
                done(st)
                return
            # The emulator process's map (emulator.ScreenState.to_wire) crosses a process boundary untyped.
            done(cast(Snapshot, {**st, "offset": offset, "cwd": st.get("cwd") or self.cwd()}))

        self.feed.snapshot(finished, bounded=bounded)
        return offset

    def request_text(self, which: str, done: Callable[[Any], None]) -> int:
        """Plain text of `which` (screen, scrollback, all) at the current offset, rendered by the emulator."""
        self._flush_pending()
        return self.feed.text(which, done)

    def _exit_event(self) -> ExitEvent:
        return {"type": "exit", "session": self.id, "code": self.exit_code, "signal": self.exit_signal}

    def info(self) -> SessionInfo:
        return {
            "id": self.id, "pid": self.pid, "command": self.command, "name": self.name, "tags": self.tags,
            "cwd": self.cwd(), "title": self.title, "cols": self.cols, "rows": self.rows,
            "created_at": self.created_at, "last_attached_at": self.last_attached_at, "running": self.running,
            "exit_code": self.exit_code, "exit_signal": self.exit_signal, "clients": len(self.subscribers),
            "process": self.process(),
            **(self.agent.info() if self.agent is not None else NO_SHELL),
        }

    def process(self) -> str:
        """The terminal's foreground program (its process group leader's name, as node-pty's IPty.process);
        "" once exited or when unknown."""
        pg = foreground_pgrp(self._fd) if self.running and self._fd >= 0 else None
        if pg is None:
            return ""
        try:
            with open(f"/proc/{pg}/comm") as f:
                return f.read().strip()
        except OSError:
            return ""

    # -- subscribers -------------------------------------------------------------------------------------------

    def subscribe(self, conn_id: int, sink: Sink, limits: FlowLimits) -> Subscriber:
        self._flush_pending()  # the subscription starts at an offset every byte before which was delivered
        sub = Subscriber(self.id, sink, limits, self.request_snapshot)
        self.subscribers[conn_id] = sub
        self.last_attached_at = time.time()
        self._disarm_idle()
        self.replay.set_limit(self.limits.replay_bytes)
        if not self.running:
            sub.push_exit(protocol.encode(self._exit_event()))
        return sub

    def unsubscribe(self, conn_id: int) -> Subscriber | None:
        sub = self.subscribers.pop(conn_id, None)
        self._arm_idle()
        return sub

    def _arm_idle(self) -> None:
        """Start the idle clock when nobody is attached (one timer per detach, no periodic wake-up)."""
        if self.subscribers or self._idle_timer is not None or self.limits.replay_idle_s <= 0:
            return
        self._idle_timer = self._loop.call_later(self.limits.replay_idle_s, self._shrink_replay)

    def _disarm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _shrink_replay(self) -> None:
        self._idle_timer = None
        if not self.subscribers and self.replay.max_bytes > self.limits.replay_idle_bytes:
            kept = len(self.replay)
            self.replay.set_limit(self.limits.replay_idle_bytes)
            log.debug("session %d: unattached for %.0f s, replay window %d -> %d bytes", self.id,
                      self.limits.replay_idle_s, kept, len(self.replay))

    def close(self) -> None:
        """Free what an exited session still holds (the emulator)."""
        self._disarm_idle()
        for sub in list(self.subscribers.values()):
            sub.sink.forget(sub)
        self.subscribers.clear()
        self.feed.close()


# SessionAgent fields that link it to this daemon's objects (re-made by the new code), not state to carry.
_AGENT_LINKS = frozenset({"session", "hub", "_wakers"})


class Counters:
    __slots__ = ("bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
