"""The daemon side of one session's emulator: the owner of "a snapshot is exact at its offset".

Sans-I/O apart from a scheduling hook: a `Feed` receives every output chunk of its session (in order, at increasing
offsets) and the session's jobs (resize, snapshot, text), and hands them to a `Backend` (wherever the emulator runs:
a pool process, or a synchronous fake in the unit tests) as one ordered command stream. Because the backend executes
a session's commands in order, a job sent right after the bytes up to offset X sees exactly the output before X.

What it keeps here, on the loop:
- the unsent backlog: output not handed to the backend yet. Interactive output is handed over lazily (LAZY_WAKE_S)
  so the emulator never competes with the echo that is on its way to a client; a job is a fence: everything before
  it is handed over first, then the job, and output after it waits behind it.
- the unparsed count: bytes handed over but not yet acknowledged as parsed. Past BACKLOG_HIGH the session's PTY is not
  read (`pause(True)`) until the emulator is back under BACKLOG_LOW: a program cannot outrun its terminal, memory
  stays bounded, and no client can pause anything.
- the job queue: at most MAX_INFLIGHT_JOBS of a session's jobs are at the backend at once (so one session cannot
  fill the emulator's queue); the others wait here, where a resize replaces a resize still waiting (only the latest
  pending size is applied) and a snapshot asked at the offset of one still waiting shares its result.
- the published `title` and `cwd`, copied from each "parsed" acknowledgement.
- recovery: if the backend loses the emulator (a crashed pool process), `rebuild()` opens a new one from the replay
  window and re-sends the jobs still owed (the session then resyncs its subscribers).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .protocol import ProtocolError
from .queries import Marked

log = logging.getLogger("vibest_pty.feed")

BACKLOG_HIGH = 4 * 1024 * 1024
BACKLOG_LOW = 1024 * 1024
SEND_BATCH = 256 * 1024  # bytes per feed command: fewer, longer native calls on the emulator side
EAGER_BYTES = 64 * 1024  # this much unsent output is handed over at the next loop turn, not after LAZY_WAKE_S
LAZY_WAKE_S = 0.02  # interactive output waits this long (title/cwd then lag by as much; jobs never wait)
MAX_INFLIGHT_JOBS = 1  # per session at the backend; the rest wait here (coalescing, fairness)
MAX_QUEUED_REQUESTS = 16  # snapshot/text requests per session waiting or in flight; more is `limit_reached`

TEXT_WHICH = ("screen", "scrollback", "all")

# Commands (daemon -> emulator), as tuples so they cross a socket as msgpack arrays unchanged:
#   ("open", cols, rows, scrollback_lines, respond, colors)   ("feed", data, scan)   ("resize", job_id, cols, rows)
#   ("colors", job_id, colors)   ("snapshot", job_id, max_bytes)   ("text", job_id, which)   ("close",)
# `respond`: the emulator answers terminal queries (queries="daemon", see queries.py and responder.py); `colors`
# is queries.Colors as emulator_host.colors_to_wire makes it (or None for the defaults). `scan`: the bytes hold a
# query the responder answers itself (they were queries.Marked on the loop, which does not cross a socket).
# Every job is answered by a result (a resize by None), which is what frees its MAX_INFLIGHT_JOBS slot.
# Events (emulator -> daemon), delivered to the Feed's on_* methods:
#   parsed(nbytes, title, cwd)   result(job_id, value | None, error | None)   reply(bytes to write to the PTY)
Command = tuple[Any, ...]


class Backend(Protocol):
    """Where emulators run. `send` must execute one session's commands in order."""

    def register(self, feed: Feed) -> None:
        """Take `feed` (its `sid`); the backend calls its on_* methods with the events of its emulator."""

    def send(self, sid: int, cmds: list[Command]) -> None: ...

    def unregister(self, sid: int) -> None:
        """After ("close",): the backend forgets the session."""


# What Feed.export() carries (the rest is the daemon's links: backend, callbacks, the empty queues).
_EXPORTED = ("cols", "rows", "_scrollback_lines", "snapshot_max_bytes", "offset", "sent", "parsed", "_next_jid",
             "paused", "closed", "title", "cwd", "rebuilds", "_respond", "_colors", "_mute_until")

Done = Callable[[Any], None]  # a result value, or an Exception


@dataclass(slots=True)
class _Job:
    kind: str  # "resize" | "snapshot" | "text"
    offset: int  # the stream offset the job is exact at
    args: tuple[Any, ...]
    callbacks: list[Done] = field(default_factory=list)
    jid: int = 0
    counted: int = 0  # requests counted against MAX_QUEUED_REQUESTS


class Feed:
    def __init__(
        self,
        sid: int,
        cols: int,
        rows: int,
        scrollback_lines: int,
        backend: Backend,
        *,
        schedule: Callable[[float, Callable[[], None]], object],
        pause: Callable[[bool], None] = lambda paused: None,
        on_reply: Callable[[bytes], None] = lambda data: None,
        history: Callable[[], tuple[int, bytes]] = lambda: (0, b""),
        snapshot_max_bytes: int = 1 << 62,
        respond: bool = False,
        colors: Any = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """`schedule(delay, fn)` runs fn later on the loop (delay 0: next turn); `pause(flag)` stops/starts reading
        the PTY for the backlog; `on_reply` gets bytes the emulator answers on the terminal's behalf (queries);
        `history()` gives (start offset, bytes) of the replay window, for `rebuild`."""
        self.sid = sid
        self.cols, self.rows = cols, rows
        self._scrollback_lines = scrollback_lines
        self._backend = backend
        self._schedule_fn = schedule
        self._pause_fn = pause
        self._on_reply = on_reply
        self._history = history
        self.snapshot_max_bytes = snapshot_max_bytes
        self.offset = 0  # output received
        self.sent = 0  # output handed to the backend
        self.parsed = 0  # output the emulator has acknowledged
        self._backlog: deque[bytes] = deque()  # offsets sent..offset
        self._jobs: deque[_Job] = deque()  # not yet sent, in stream order
        self._inflight: dict[int, _Job] = {}  # sent, by job id (insertion order = send order)
        self._next_jid = 1
        self._requests = 0  # snapshot/text requests waiting or in flight
        self._wake: object | None = None  # the scheduled _pump, if any
        self._wake_eager = False
        self.paused = False
        self.closed = False
        self.title = ""
        self.cwd: str | None = None
        self.rebuilds = 0
        self._respond = respond
        self._colors = colors
        self._mute_until = 0  # replies to output before this offset are not written again (see rebuild)
        if state is not None:  # an in-place upgrade: the emulator kept running in its process (export())
            for k in _EXPORTED:
                setattr(self, k, state[k])
            backend.register(self)
            return
        backend.register(self)
        backend.send(sid, [self._open_command()])

    # -- in-place upgrade (upgrade.py) -----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No job waiting or at the backend: no callback of this daemon's is owed an answer."""
        return not self._jobs and not self._inflight

    def export(self) -> dict[str, Any]:
        """The counters and views the new code continues from (after `flush()` with `idle`: nothing is owed and
        the whole backlog was handed over; the emulator itself stays in its process). `parsed` may lag: the
        member's "parsed" events still on their way reach the new code through the same socket."""
        if not self.idle or self.sent != self.offset:
            raise RuntimeError(f"session {self.sid}: feed not drained ({self.stats()})")
        return {k: getattr(self, k) for k in _EXPORTED}

    def _open_command(self) -> Command:
        return ("open", self.cols, self.rows, self._scrollback_lines, self._respond, self._colors)

    # -- producer side (the session, on the loop) ------------------------------------------------------------------

    def output(self, data: bytes, eager: bool = False) -> None:
        """`eager`: hand it over at the next loop turn, not after LAZY_WAKE_S (it holds a query to answer)."""
        if self.closed or not data:
            return
        self._backlog.append(data)
        self.offset += len(data)
        if self.offset - self.parsed > BACKLOG_HIGH and not self.paused:
            self.paused = True
            self._pause_fn(True)
        self._wake_up(eager=eager or self.offset - self.sent >= EAGER_BYTES)

    def resize(self, cols: int, rows: int) -> None:
        if self.closed:
            return
        self.cols, self.rows = cols, rows
        last = self._jobs[-1] if self._jobs else None
        if last is not None and last.kind == "resize":  # only the latest pending size is applied
            last.args, last.offset = (cols, rows), self.offset
        else:
            self._jobs.append(_Job("resize", self.offset, (cols, rows)))
        self._wake_up(eager=True)

    def set_colors(self, colors: Any) -> None:
        """The colours queries are answered with from this point of the stream on."""
        if self.closed:
            return
        self._colors = colors
        self._jobs.append(_Job("colors", self.offset, (colors,)))
        self._wake_up(eager=True)

    def snapshot(self, done: Done, *, bounded: bool = True) -> int:
        """Ask for the terminal state at the current offset (returned); `done` gets the wire map or the exception.
        `bounded` requests (clients' own) count against MAX_QUEUED_REQUESTS; resyncs are bounded by subscribers."""
        self._request("snapshot", (self.snapshot_max_bytes,), done, bounded)
        return self.offset

    def text(self, which: str, done: Done, *, bounded: bool = True) -> int:
        """Plain text of the screen, the served history or both, rendered by the emulator, at the current offset."""
        if which not in TEXT_WHICH:
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"text must be one of {', '.join(TEXT_WHICH)}")
        self._request("text", (which,), done, bounded)
        return self.offset

    def _request(self, kind: str, args: tuple[Any, ...], done: Done, bounded: bool) -> None:
        if self.closed:
            raise ProtocolError(protocol.SESSION_NOT_FOUND, f"session {self.sid} is closed")
        if bounded and self._requests >= MAX_QUEUED_REQUESTS:
            raise ProtocolError(
                protocol.LIMIT_REACHED,
                f"session {self.sid}: {self._requests} snapshot/text requests are being made; try again later",
            )
        last = self._jobs[-1] if self._jobs else None
        if last is not None and last.kind == kind and last.args == args and last.offset == self.offset:
            job = last  # nothing happened in between: the same answer
        else:
            job = _Job(kind, self.offset, args)
            self._jobs.append(job)
        job.callbacks.append(done)
        if bounded:
            job.counted += 1
            self._requests += 1
        self._wake_up(eager=True)

    def close(self) -> None:
        """Free the emulator after what is queued for it; callbacks still owed get an exception."""
        if self.closed:
            return
        self.closed = True
        err = ProtocolError(protocol.SESSION_NOT_FOUND, f"session {self.sid} is closed")
        for job in [*self._inflight.values(), *self._jobs]:
            self._finish(job, err)
        self._inflight.clear()
        self._jobs.clear()
        self._backlog.clear()
        self._backend.send(self.sid, [("close",)])
        self._backend.unregister(self.sid)

    # -- handing over ----------------------------------------------------------------------------------------------

    def _wake_up(self, eager: bool) -> None:
        if self._wake is not None and (self._wake_eager or not eager):
            return
        self._wake_eager = eager
        self._wake = self._schedule_fn(0.0 if eager else LAZY_WAKE_S, self._pump)

    def flush(self) -> None:
        """Hand over everything that may go now (tests call this; the loop does it via `schedule`)."""
        self._pump()

    def _pump(self) -> None:
        self._wake = None
        self._wake_eager = False
        if self.closed:
            return
        cmds: list[Command] = []
        while True:
            job = self._jobs[0] if self._jobs else None
            limit = job.offset if job is not None else self.offset
            self._take_bytes(limit, cmds)
            if job is None or self.sent < job.offset or len(self._inflight) >= MAX_INFLIGHT_JOBS:
                break
            self._jobs.popleft()
            job.jid = self._next_jid
            self._next_jid += 1
            self._inflight[job.jid] = job
            cmds.append(self._command(job))
        if cmds:
            self._backend.send(self.sid, cmds)

    def _take_bytes(self, limit: int, cmds: list[Command]) -> None:
        backlog = self._backlog
        batch: list[bytes] = []
        size = 0
        scan = False
        while backlog and self.sent < limit:
            chunk = backlog[0]
            room = limit - self.sent
            if len(chunk) > room:  # only after rebuild(): the window is one chunk with jobs inside it
                chunk, backlog[0] = chunk[:room], chunk[room:]
            else:
                backlog.popleft()
            batch.append(chunk)
            size += len(chunk)
            self.sent += len(chunk)
            scan = scan or type(chunk) is Marked
            if size >= SEND_BATCH:
                cmds.append(("feed", b"".join(batch), scan))
                batch, size, scan = [], 0, False
        if batch:
            cmds.append(("feed", bytes(batch[0]) if len(batch) == 1 else b"".join(batch), scan))

    @staticmethod
    def _command(job: _Job) -> Command:
        return (job.kind, job.jid, *job.args)

    # -- events from the backend (on the loop) ----------------------------------------------------------------------

    def on_parsed(self, nbytes: int, title: str, cwd: str | None) -> None:
        self.parsed += nbytes
        self.title, self.cwd = title, cwd
        if self.paused and self.offset - self.parsed <= BACKLOG_LOW:
            self.paused = False
            self._pause_fn(False)

    def on_result(self, jid: int, value: Any, error: str | None) -> None:
        job = self._inflight.pop(jid, None)
        if job is None:
            return  # answered for an emulator that was rebuilt since, or closed
        self._finish(job, RuntimeError(error) if error is not None else value)
        if self._jobs:
            self._wake_up(eager=True)

    def on_reply(self, data: bytes) -> None:
        """Sent by the emulator before the "parsed" of the bytes that caused it."""
        if not self.closed and data and self.parsed >= self._mute_until:
            self._on_reply(data)

    def _finish(self, job: _Job, value: Any) -> None:
        self._requests -= job.counted
        job.counted = 0
        for cb in job.callbacks:
            try:
                cb(value)
            except Exception:  # one broken callback must not lose the others' answers
                log.exception("session %d: %s callback failed", self.sid, job.kind)

    # -- recovery ----------------------------------------------------------------------------------------------------

    def rebuild(self) -> None:
        """The backend lost this session's emulator: open a new one, feed it the replay window (`history()`) and
        send the jobs still owed. Those are answered at the current offset, not at their own (the window is the
        clients' stream, without the queries kept from them, so offsets inside it are not the feed's): the caller
        resyncs the session's subscribers. Queries in the window are not answered again."""
        if self.closed:
            return
        _, data = self._history()
        owed = sorted(self._inflight.values(), key=lambda j: j.jid) + list(self._jobs)
        self._inflight.clear()
        for job in owed:
            job.offset = self.offset
        self._jobs = deque(owed)
        self._backlog.clear()
        self.sent = self.parsed = self.offset - len(data)
        self._mute_until = self.offset
        self._backend.send(self.sid, [self._open_command()])
        if data:
            self._backlog.append(data)
        self.rebuilds += 1
        self._pump()

    def stats(self) -> dict[str, int]:
        return {"unsent": self.offset - self.sent, "unparsed": self.offset - self.parsed,
                "jobs": len(self._jobs) + len(self._inflight), "rebuilds": self.rebuilds}
