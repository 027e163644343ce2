"""One PTY session: its child, its emulator, its replay window, its subscribers and its input queue.

I/O runs on the event loop: the master fd is read with add_reader, the child is reaped through a pidfd, input that
the PTY does not take at once waits for add_writer. No polling. The emulator lives on the EmulatorWorker thread:
the loop only submits jobs (feed, resize, snapshot, close) in stream order and gets snapshots back by callback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import protocol
from .worker import EmulatorWorker

if TYPE_CHECKING:
    from .emulator import Emulator, ScreenState
from .flow import FlowLimits, Sink, Subscriber
from .protocol import ProtocolError
from .pty import Child, decode_wait_status, foreground_pgrp, set_winsize
from .queries import DEFAULT_COLORS, Colors, Marked, QueryFilter, Segment, agree, for_emulator, parse_colors
from .sizing import SizePolicy

log = logging.getLogger("vibest_pty.session")

READ_SIZE = 65536
SHORT_READ = 512  # a read this short means the PTY is drained (a flood's reads are ~4 KiB)
# After the child is reaped, output still held by a grandchild that keeps the slave open is waited for this long.
EXIT_DRAIN_S = 0.1
EXIT_DRAIN_READS = 64  # at most 4 MiB taken then
# Output read but not yet parsed by the emulator thread: past HIGH the session's PTY is not read until the
# emulator is back under LOW (a program cannot outrun its terminal, as with a real one; clients never pause it).
EMU_BACKLOG_HIGH = 4 * 1024 * 1024
EMU_BACKLOG_LOW = 1024 * 1024
PARSE_BATCH = 1024 * 1024

SnapshotDone = Callable[["dict[str, Any] | Exception"], None]


class Session:
    def __init__(
        self,
        sid: int,
        child: Child,
        command: list[str],
        cwd: str,
        cols: int,
        rows: int,
        name: str,
        tags: dict[str, str],
        *,
        scrollback_lines: int,
        replay_bytes: int,
        input_queue_bytes: int,
        kill_grace_s: float,
        on_exit: Callable[[Session], None],
        counters: Counters,
        worker: EmulatorWorker,
        queries: str = "daemon",
        colors: Colors | None = None,
        size_policy: str = "latest",
    ) -> None:
        from .emulator import Emulator  # imported on first use: pyghostty's cffi set-up takes ~0.3 s
        from .responder import Responder


        self.id = sid
        self.pid = child.pid
        self.pts_path = child.pts_path
        self.command = command
        self.initial_cwd = cwd
        self.cols, self.rows = cols, rows
        self.name = name
        self.tags = tags
        self.created_at = time.time()
        self.last_attached_at: float | None = None
        self.emulator: Emulator = Emulator(cols, rows, scrollback_lines)  # touched only on the worker thread
        # queries="daemon": the emulator answers terminal queries and clients never see them (see queries.py);
        # "client": everything passes through untouched and the clients' terminals answer.
        self.queries = queries
        self.colors = colors or DEFAULT_COLORS
        self._queries = QueryFilter() if queries == "daemon" else None
        self._responder = Responder(self.emulator._t, cols, rows, colors) if self._queries else None  # worker's
        self.sizing = SizePolicy(size_policy, cols, rows)  # several clients, one size (sizing.py)
        self._worker = worker
        self.offset = 0  # output bytes sent to clients so far (queries kept from them are not counted)
        self._emu_in = 0  # output bytes handed to the emulator (queries included)
        self._parsed = 0  # output bytes the emulator has processed (written by the worker thread)
        # Output waiting for the emulator, appended by the loop and taken by the worker in big batches: fewer,
        # longer native calls mean fewer GIL hand-offs between the two threads, which is what delays the loop.
        self._unparsed: deque[bytes | _Fence] = deque()
        self._parse_scheduled = False
        self._emu_paused = False
        self._resume_requested = False
        self.title = ""  # the emulator's, copied by the worker thread after each feed
        self._osc_cwd: str | None = None
        self._replay = bytearray()
        self._replay_max = replay_bytes
        self.subscribers: dict[int, Subscriber] = {}  # by connection id
        self._input: deque[memoryview] = deque()
        self._input_bytes = 0
        self._input_max = input_queue_bytes
        self._kill_grace_s = kill_grace_s
        self._on_exit = on_exit
        self._counters = counters
        self.running = True
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self._fd = child.master_fd
        self._reaped = False
        self._eof = False
        self._pidfd = -1
        self._timers: list[asyncio.TimerHandle] = []
        self._kill_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)
        try:
            self._pidfd = os.pidfd_open(self.pid)
            self._loop.add_reader(self._pidfd, self._on_child_event)
        except OSError:
            # The child already exited and was reaped (cannot happen: we have not waited) or no pidfd support.
            self._loop.call_soon(self._on_child_event)

    # -- output ------------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        chunks: list[bytes] = []
        total = 0
        while total < READ_SIZE:
            try:
                data = os.read(self._fd, READ_SIZE - total)  # the emulator gets at most READ_SIZE at a time
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:
                    log.warning("session %d: read: %s", self.id, exc)
                data = b""
            if not data:
                self._eof = True
                break
            chunks.append(data)
            total += len(data)
            if len(data) < SHORT_READ:
                break  # interactive output: a reply is waiting, and more data would wake us again anyway
        if chunks:
            self._deliver(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._eof and self._queries is not None and self._queries.held:
            self._deliver_segments(self._queries.flush())
        if self._eof:
            if not self._emu_paused:
                self._loop.remove_reader(self._fd)
            if self._reaped:
                self._finish()

    def _deliver(self, data: bytes) -> None:
        if self._queries is not None:
            segs = self._queries.feed(data)
            if len(segs) != 1 or not isinstance(segs[0], bytes):
                self._deliver_segments(segs)
                return
        self._to_emulator(data)
        self._to_clients(data)

    def _deliver_segments(self, segs: list[Segment]) -> None:
        """Queries go to the emulator only (it answers them, see _catch_up); the rest to both, in order."""
        emu = for_emulator(segs)
        if emu:
            self._to_emulator(emu)
        client = b"".join(s for s in segs if isinstance(s, bytes))
        if client:
            self._to_clients(client)

    def _to_emulator(self, data: bytes) -> None:
        self._emu_in += len(data)
        self._unparsed.append(data)
        if not self._parse_scheduled:
            self._parse_scheduled = True
            # Woken after this callback's frames are written: the worker thread then competes for the GIL with
            # nothing on the latency path (an echo). Order stays exact: fences sit in _unparsed itself.
            self._loop.call_soon(self._worker.submit, self._parse)
        if self._emu_in - self._parsed > EMU_BACKLOG_HIGH and not self._emu_paused and not self._eof:
            self._emu_paused = True
            self._loop.remove_reader(self._fd)

    def _to_clients(self, data: bytes) -> None:
        if self._replay_max:
            self._replay += data
            excess = len(self._replay) - self._replay_max
            if excess > 0:
                del self._replay[:excess]
        frame = protocol.encode_output(self.id, self.offset, data)
        self.offset += len(data)
        self._counters.bytes_out += len(data)
        for sub in tuple(self.subscribers.values()):  # a push may close its connection (auto-disconnect)
            sub.push(frame)

    def _parse(self) -> None:
        """Worker thread: parse what was submitted, up to the first fence (a snapshot or resize waits there)."""
        self._parse_scheduled = False  # before taking: a chunk appended from now on schedules another run
        self._catch_up(None)

    def _fence(self) -> _Fence:
        """Loop thread: mark the current offset in the stream of output for the emulator. The job that owns the
        fence parses exactly up to it; output after it gets a parse job queued after that job."""
        fence = _Fence()
        self._unparsed.append(fence)
        self._parse_scheduled = False
        return fence

    def _catch_up(self, fence: _Fence | None) -> None:
        """Worker thread: feed the emulator the submitted output up to `fence` (consumed), or, without one, up
        to the first fence; in batches of up to PARSE_BATCH. Then publish what the loop reads (title, cwd) and
        wake a reader paused for the backlog."""
        emu, pending = self.emulator, self._unparsed
        if emu.closed:
            return
        while pending:  # only this thread pops: peeking at pending[0] first is safe
            head = pending[0]
            if isinstance(head, _Fence):
                if head is not fence and fence is None:
                    break
                pending.popleft()
                if head is fence:
                    break
                continue
            batch: list[bytes] = []
            size = 0
            while pending and size < PARSE_BATCH and not isinstance(chunk := pending[0], _Fence):
                pending.popleft()
                batch.append(chunk)
                size += len(chunk)
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            if (responder := self._responder) is not None:
                scan = any(type(c) is Marked for c in batch)
                if replies := responder.write(data, scan):  # after vt_write returned: the callbacks only queue
                    self._loop.call_soon_threadsafe(self._reply, replies)
            else:
                emu.feed(agree(data))
            self._parsed += size
        self.title = emu.title
        self._osc_cwd = emu.cwd
        if self._emu_paused and not self._resume_requested and self._emu_in - self._parsed <= EMU_BACKLOG_LOW:
            self._resume_requested = True
            self._loop.call_soon_threadsafe(self._resume_reading)

    def _reply(self, data: bytes) -> None:
        """The emulator's answers to queries, written to the PTY like typed input."""
        if self.running:
            try:
                self.write_input(data)
            except ProtocolError as exc:
                log.debug("session %d: reply dropped: %s", self.id, exc)

    def update_colors(self, value: dict[str, Any]) -> None:
        """The colours queries are answered with: `value` (an attach's `colors`, validated) over the current ones."""
        self.colors = colors = parse_colors(value, self.colors)
        if (responder := self._responder) is not None:
            self._worker.submit(lambda: None if self.emulator.closed else responder.set_colors(colors))

    def _resume_reading(self) -> None:
        self._emu_paused = False
        self._resume_requested = False
        if self.running and not self._eof and self._fd >= 0:
            self._loop.add_reader(self._fd, self._on_readable)
    # -- exit --------------------------------------------------------------------------------------------------

    def _on_child_event(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return  # stopped/continued, or a spurious wake-up
        self._reaped = True
        self.exit_code, self.exit_signal = decode_wait_status(status)
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

    def _drain_and_finish(self) -> None:
        if self.running:
            # Take everything the PTY holds now (its reader may be paused for the emulator's backlog), but not
            # forever: a grandchild may keep writing.
            for _ in range(EXIT_DRAIN_READS):
                before = self.offset
                if self._eof:
                    break
                self._on_readable()
                if self.offset == before:
                    break
            self._finish()

    def _finish(self) -> None:
        if not self.running:
            return
        self.running = False
        for t in self._timers:
            if t is not self._kill_timer:  # a kill still escalates to the group's stragglers (HUP-ignoring jobs)
                t.cancel()
        self._timers.clear()
        if not self._eof and not self._emu_paused:
            self._loop.remove_reader(self._fd)
        if self._input:
            self._loop.remove_writer(self._fd)
            self._input.clear()
            self._input_bytes = 0
        os.close(self._fd)  # the slave side gets a hangup: a lingering grandchild sees EOF/SIGHUP
        self._fd = -1
        frame = protocol.encode({"type": "exit", "session": self.id, "code": self.exit_code,
                                 "signal": self.exit_signal})
        for sub in tuple(self.subscribers.values()):
            sub.push_exit(frame)
        log.info("session %d exited (code=%s signal=%s)", self.id, self.exit_code, self.exit_signal)
        self._on_exit(self)

    # -- requests ----------------------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self.running:
            raise ProtocolError(protocol.SESSION_EXITED, f"session {self.id} has exited")

    def write_input(self, data: bytes) -> None:
        self._require_running()
        if not data:
            return
        if self._input_bytes + len(data) > self._input_max:
            raise ProtocolError(
                protocol.INPUT_QUEUE_FULL,
                f"session {self.id}: input queue holds {self._input_bytes} bytes; "
                f"{len(data)} more would pass the limit of {self._input_max}",
            )
        view = memoryview(data)
        if not self._input:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                log.debug("session %d: write: %s", self.id, exc)
                return  # the child is gone; the exit event follows
            self._counters.bytes_in += n
            view = view[n:]
            if not view:
                return
            self._loop.add_writer(self._fd, self._on_writable)
        self._input.append(view)
        self._input_bytes += len(view)

    def _on_writable(self) -> None:
        while self._input:
            view = self._input[0]
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                return
            except OSError:
                self._input.clear()
                self._input_bytes = 0
                break
            self._counters.bytes_in += n
            self._input_bytes -= n
            if n < len(view):
                self._input[0] = view[n:]
                return
            self._input.popleft()
        self._loop.remove_writer(self._fd)

    def resize(self, cols: int, rows: int) -> None:
        self._require_running()
        set_winsize(self._fd, cols, rows)  # the kernel sends SIGWINCH to the foreground group
        emu, fence = self.emulator, self._fence()

        def job() -> None:
            self._catch_up(fence)  # the resize lands exactly between the bytes before and after it
            emu.resize(cols, rows)
            if self._responder is not None:
                self._responder.resize(cols, rows)

        self._worker.submit(job)
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
        self._hangup(signal.SIGHUP)
        if self._kill_timer is None:
            self._kill_timer = self._loop.call_later(self._kill_grace_s, self._hangup, signal.SIGKILL)
            self._timers.append(self._kill_timer)

    def _hangup(self, sig: int) -> None:
        groups = {self.pid}  # a group id is not reused while the group has members; else this is ESRCH
        if self._fd >= 0 and (fg := foreground_pgrp(self._fd)) is not None:
            groups.add(fg)
        for pg in groups:
            try:
                os.killpg(pg, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._reaped:  # a leader that moved to another group still gets it
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    # -- views -------------------------------------------------------------------------------------------------

    def replay_since(self, since: int) -> bytes | None:
        """Raw output from `since` to now, or None when `since` is older than the replay window."""
        if since > self.offset:
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"since={since} is past the session's offset {self.offset}")
        start = self.offset - len(self._replay)
        if since < start:
            return None
        return bytes(self._replay[since - start :])

    def cwd(self) -> str:
        cwd = self._osc_cwd
        if cwd:
            return cwd
        if self.running:
            try:
                return os.readlink(f"/proc/{self.pid}/cwd")
            except OSError:
                pass
        return self.initial_cwd

    def request_snapshot(self, done: SnapshotDone) -> int:
        """Ask the worker for the terminal state at the current offset (returned); `done` gets the Snapshot map,
        or the exception, on the loop."""
        offset = self.offset
        emu, loop, fence = self.emulator, self._loop, self._fence()

        def job() -> None:
            try:
                self._catch_up(fence)  # exactly the output before `offset`, no more
                st: ScreenState | Exception = emu.snapshot()
            except Exception as exc:
                log.exception("session %d: snapshot failed", self.id)
                st = exc
            loop.call_soon_threadsafe(self._snapshot_done, st, offset, done)

        self._worker.submit(job)
        return offset

    def _snapshot_done(self, st: ScreenState | Exception, offset: int, done: SnapshotDone) -> None:
        if isinstance(st, Exception):
            done(st)
            return
        done({
            "data": st.data, "offset": offset, "cols": st.cols, "rows": st.rows, "cursor": list(st.cursor),
            "cursor_visible": st.cursor_visible, "alt_screen": st.alt_screen, "modes": st.modes,
            "title": st.title, "cwd": st.cwd or self.cwd(), "scrollback_lines": st.scrollback_lines,
        })

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id, "pid": self.pid, "command": self.command, "name": self.name, "tags": self.tags,
            "cwd": self.cwd(), "title": self.title, "cols": self.cols, "rows": self.rows,
            "created_at": self.created_at, "last_attached_at": self.last_attached_at, "running": self.running,
            "exit_code": self.exit_code, "exit_signal": self.exit_signal, "clients": len(self.subscribers),
            "process": self.process(),
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
        sub = Subscriber(self.id, sink, limits, self.request_snapshot)
        self.subscribers[conn_id] = sub
        self.last_attached_at = time.time()
        if not self.running:
            sub.push_exit(protocol.encode({"type": "exit", "session": self.id, "code": self.exit_code,
                                           "signal": self.exit_signal}))
        return sub

    def unsubscribe(self, conn_id: int) -> Subscriber | None:
        return self.subscribers.pop(conn_id, None)

    def close(self) -> None:
        """Free what an exited session still holds (the emulator)."""
        for sub in list(self.subscribers.values()):
            sub.sink.forget(sub)
        self.subscribers.clear()
        self._worker.submit(self._close_emulator)  # after every job already queued for it

    def _close_emulator(self) -> None:
        """Worker thread."""
        self._unparsed.clear()
        self.emulator.close()


class _Fence:
    """A point in a session's output stream that a snapshot or resize job waits for (see Session._fence)."""

    __slots__ = ()


class Counters:
    __slots__ = ("bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
