"""The flow-control core, sans-I/O: per-subscriber output queues, and each connection's Outbox.

A subscriber is one (connection, session) pair. The session pushes each output frame (encoded once, shared by
every subscriber) and never waits; the connection's writer pops frames when its socket can take them. A queue that
fills up never blocks the PTY: its backlog is discarded and replaced by a resync (a fresh snapshot) once the
connection has drained, or, when so configured, the connection is closed.

Snapshots come back asynchronously (from an emulator process, through the session's feed). While one is being made the subscriber is `held`:
output from the snapshot's offset on is queued as usual but not sent before the snapshot itself.

The Outbox is a connection's writer: control frames first (reply slots keep request order), subscribers
round-robin, batching, the read pause, and the connection's one state (open / failing / closing / closed). The
server's Connection feeds it and writes what it hands out; the tests drive both with fakes (tests/test_outbox.py).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import protocol
from .shapes import BackpressureWarningEvent, ResyncEvent, Snapshot, SubscriberStats

GREEN, YELLOW, RED = "green", "yellow", "red"


@dataclass(frozen=True, slots=True)
class FlowLimits:
    max_events: int = 16384
    max_bytes: int = 8 * 1024 * 1024
    threshold: int = 4096  # yellow when fewer free event slots remain than this
    auto_disconnect: bool = False


class Sink(Protocol):
    """What a subscriber needs from its connection."""

    def subscriber_ready(self, sub: Subscriber) -> None:
        """The subscriber has something to send: put it in the writer's rotation."""

    def send_control(self, message: Mapping[str, Any]) -> None:
        """Queue a message ahead of all output (warnings)."""

    def overflowed(self, sub: Subscriber) -> None:
        """The queue is full and the policy is to disconnect."""

    def forget(self, sub: Subscriber) -> None:
        """The session's record is gone: drop the subscription without sending anything more."""


class Subscriber:
    __slots__ = (
        "_snapshot_fn", "bytes", "closed", "discarded", "exit_frame", "head", "held", "in_rotation", "level",
        "limits",
        "queue", "resync_pending", "resyncs", "session_id", "sink", "warnings",
    )

    def __init__(
        self,
        session_id: int,
        sink: Sink,
        limits: FlowLimits,
        snapshot_fn: Callable[[Callable[[Snapshot | Exception], None]], int],
    ) -> None:
        self.session_id = session_id
        self.sink = sink
        self.limits = limits
        self._snapshot_fn = snapshot_fn
        self.queue: deque[bytes] = deque()
        self.bytes = 0
        self.level = GREEN
        self.resync_pending = False
        self.exit_frame: bytes | None = None
        self.head: bytes | None = None  # a resync frame, sent before the queue
        self.held = False  # waiting for a snapshot: nothing is sent meanwhile
        self.in_rotation = False
        self.closed = False  # unsubscribed: a snapshot still in flight must not bring it back (no resync after detach)
        self.discarded = 0  # frames thrown away by overflows, for stats
        self.resyncs = 0
        self.warnings = 0

    # -- producer side (the session) -----------------------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        if self.resync_pending or self.closed:
            return  # the coming snapshot covers this output
        lim = self.limits
        n = len(self.queue)
        if n >= lim.max_events or self.bytes + len(frame) > lim.max_bytes:
            self._overflow()
            return
        self.queue.append(frame)
        self.bytes += len(frame)
        n += 1
        if self.level == GREEN and (lim.max_events - n < lim.threshold or self.bytes * 4 > lim.max_bytes * 3):
            self._warn(YELLOW)
        self._ready()

    def push_exit(self, frame: bytes) -> None:
        """The session's exit event: exempt from the bounds, always after every output frame."""
        if self.closed:
            return
        self.exit_frame = frame
        self._ready()

    def _ready(self) -> None:
        if not self.in_rotation and not self.held and not self.closed:
            self.sink.subscriber_ready(self)

    def hold(self) -> None:
        """Send nothing until release(): the attach reply carrying the snapshot must go first."""
        self.held = True

    def release(self) -> None:
        self.held = False
        if self.has_work():
            self._ready()

    def close(self) -> None:
        """Unsubscribed (detach, a new attach, the connection gone): drop everything, send nothing more."""
        self.closed = True
        self.queue.clear()
        self.bytes = 0
        self.head = self.exit_frame = None
        self.resync_pending = False

    def _overflow(self) -> None:
        self._warn(RED)
        if self.limits.auto_disconnect:
            self.sink.overflowed(self)
            return
        self.discarded += len(self.queue)
        self.queue.clear()
        self.bytes = 0
        self.resync_pending = True
        self._ready()

    def request_resync(self) -> None:
        """Replace what is queued by a fresh snapshot (the session's emulator was rebuilt)."""
        self.discarded += len(self.queue)
        self.queue.clear()
        self.bytes = 0
        self.resync_pending = True
        self._ready()

    def _warn(self, level: str) -> None:
        if self.level == level:
            return
        self.level = level
        self.warnings += 1
        warning: BackpressureWarningEvent = {"type": "backpressure_warning", "session": self.session_id,
                                             "queue_size": len(self.queue), "level": level}
        self.sink.send_control(warning)

    # -- consumer side (the connection's writer) -----------------------------------------------------------------

    def has_work(self) -> bool:
        if self.held:
            return False
        return self.head is not None or bool(self.queue) or self.resync_pending or self.exit_frame is not None

    def pop(self) -> bytes | None:
        """The next frame to write, or None when there is nothing to send now."""
        if self.held:
            return None
        if self.head is not None:
            frame, self.head = self.head, None
            return frame
        if self.resync_pending:
            # Asked for now, when the connection has room again, so it is as fresh as it can be. Output pushed
            # from here on is queued; it follows the resync frame, which continues at snapshot.offset.
            self.resync_pending = False
            self.level = GREEN
            self.held = True
            self._snapshot_fn(self._resync_ready)
            return None
        if self.queue:
            frame = self.queue.popleft()
            self.bytes -= len(frame)
            if not self.queue:
                self.level = GREEN
            return frame
        if self.exit_frame is not None:
            frame, self.exit_frame = self.exit_frame, None
            return frame
        return None

    def _resync_ready(self, snapshot: Snapshot | Exception) -> None:
        if self.closed:
            return  # detached while the snapshot was made: nobody to send it to
        if self.resync_pending:
            pass  # overflowed again while the snapshot was made: it is stale, a fresh one will be asked for
        elif isinstance(snapshot, Exception):
            self.head = protocol.encode(protocol.error(None, protocol.INTERNAL, f"resync failed: {snapshot}",
                                                       "resync", self.session_id))
        else:
            self.resyncs += 1
            resync: ResyncEvent = {"type": "resync", "session": self.session_id, "snapshot": snapshot}
            self.head = protocol.encode(resync)
        self.release()

    # -- in-place upgrade (upgrade.py) ------------------------------------------------------------------------

    def mark_resync(self) -> None:
        """What is queued cannot be sent before the upgrade (the client does not read): the new code sends a
        fresh snapshot instead, as after an overflow."""
        if self.queue:
            self.request_resync()

    def export(self) -> dict[str, Any]:
        if self.held:
            raise RuntimeError(f"session {self.session_id}: a snapshot is still being made for this subscriber")
        return {"queue": list(self.queue), "level": self.level, "resync_pending": self.resync_pending,
                "exit_frame": self.exit_frame, "head": self.head, "discarded": self.discarded,
                "resyncs": self.resyncs, "warnings": self.warnings}

    def restore(self, st: dict[str, Any]) -> None:
        self.queue = deque(st["queue"])
        self.bytes = sum(map(len, self.queue))
        self.level, self.resync_pending = st["level"], st["resync_pending"]
        self.exit_frame, self.head = st["exit_frame"], st["head"]
        self.discarded, self.resyncs, self.warnings = st["discarded"], st["resyncs"], st["warnings"]

    def stats(self) -> SubscriberStats:
        return {"session": self.session_id, "events": len(self.queue), "bytes": self.bytes, "level": self.level,
                "discarded": self.discarded, "resyncs": self.resyncs, "warnings": self.warnings}


# ---------------------------------------------------------------------------------------------------------------
# The connection's writer, sans-I/O


class State(enum.Enum):
    """A connection's one state (the Outbox holds it; the Connection acts on it)."""

    OPEN = "open"  # requests are read and handled; replies and output are written
    FAILING = "failing"  # a fatal error waits behind earlier replies: nothing more is read, handled or streamed
    CLOSING = "closing"  # the transport was told to close: nothing more is queued
    CLOSED = "closed"  # the transport is gone


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    batch: int = 64 * 1024  # bytes joined into one transport.write (one syscall for many small frames)
    # Replies waiting for a peer that does not read: past `control_high` its requests are not read (nor handled)
    # until the replies drain under `control_low`, so pipelining requests cannot make the daemon allocate
    # without bound.
    control_high: int = 4 * 1024 * 1024
    control_low: int = 1024 * 1024
    max_pending: int = 8  # snapshots being made for one connection before its next requests wait


class Slot:
    """A reply's place in the control queue, filled later (a snapshot): replies keep the order of requests."""

    __slots__ = ("frame",)

    def __init__(self) -> None:
        self.frame: bytes | None = None


class Source(Protocol):
    """What the outbox needs from a subscriber (flow.Subscriber; fakes in the unit tests)."""

    in_rotation: bool

    def has_work(self) -> bool: ...

    def pop(self) -> bytes | None: ...


class Outbox:
    """What one connection has to send, and in which order; no I/O (the Connection writes what it returns).

    Control frames (replies, warnings, errors) go first, in the order they were queued; a `Slot` holds its place
    until filled, and control frames behind it wait with it (replies keep the order of requests), while output
    does not. Subscribers with work are served round-robin, one frame each per turn, so one flooding session
    never delays another. `next_batch` joins frames up to `limits.batch` bytes. The read pause (uvicorn's
    FlowControl, on the reading side) and the write pause (the transport's pause_writing) are tracked here too.
    """

    __slots__ = ("_control", "_ready", "control_bytes", "limits", "pending", "reading_paused", "state",
                 "writing_paused")

    def __init__(self, limits: OutboxLimits | None = None) -> None:
        self.limits = limits or OutboxLimits()
        self.state = State.OPEN
        self._control: deque[bytes | Slot] = deque()
        self._ready: deque[Source] = deque()
        self.control_bytes = 0  # filled control frames not yet written
        self.pending = 0  # slots not yet filled
        self.reading_paused = False
        self.writing_paused = False

    # -- producers ----------------------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a control frame (a reply, a warning). Only an open connection takes new ones."""
        if self.state is State.OPEN:
            self._control.append(frame)
            self.control_bytes += len(frame)

    def reserve(self) -> Slot:
        slot = Slot()
        if self.state is State.OPEN:
            self._control.append(slot)
            self.pending += 1
        return slot

    def fill(self, slot: Slot, frame: bytes) -> None:
        if slot.frame is not None:
            raise ValueError("slot filled twice")
        slot.frame = frame
        if self.state in (State.OPEN, State.FAILING):
            self.pending -= 1
            self.control_bytes += len(frame)

    def ready(self, src: Source) -> None:
        """`src` has work: put it in the rotation (once)."""
        if self.state is State.OPEN and not src.in_rotation:
            src.in_rotation = True
            self._ready.append(src)

    def remove(self, src: Source) -> None:
        if src.in_rotation:
            self._ready.remove(src)
            src.in_rotation = False

    # -- consumer -----------------------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Control entries plus subscribers in rotation (the Connection writes at once when this is 1)."""
        return len(self._control) + len(self._ready)

    def next_batch(self) -> tuple[bytes, int] | None:
        """The next bytes to write and how many frames they hold, or None when nothing can go now."""
        if self.writing_paused or self.state not in (State.OPEN, State.FAILING):
            return None
        control, ready, batch = self._control, self._ready, self.limits.batch
        stream = self.state is State.OPEN
        frames: list[bytes] = []
        size = 0
        while size < batch:
            frame: bytes | None = None
            if control:
                head = control[0]
                frame = head if isinstance(head, bytes) else head.frame
                if frame is not None:
                    control.popleft()
                    self.control_bytes -= len(frame)
            if frame is None:  # no control frame ready: serve the sessions
                if not ready or not stream:
                    break
                src = ready.popleft()
                frame = src.pop()
                if src.has_work():
                    ready.append(src)
                else:
                    src.in_rotation = False
                if frame is None:
                    continue
            frames.append(frame)
            size += len(frame)
        if not frames:
            return None
        return (frames[0] if len(frames) == 1 else b"".join(frames)), len(frames)

    def take_control(self) -> bytes:
        """The control frames ready now, ahead of everything (before a hard close or a shutdown notice)."""
        frames: list[bytes] = []
        control = self._control
        while control:
            head = control[0]
            frame = head if isinstance(head, bytes) else head.frame
            if frame is None:
                break
            control.popleft()
            frames.append(frame)
        data = b"".join(frames)
        self.control_bytes -= len(data)
        return data

    # -- in-place upgrade (upgrade.py) ------------------------------------------------------------------------

    def export_control(self, ours: Slot | None) -> list[bytes | None]:
        """The control queue, `ours` (the upgrade's own reply, filled by the new code) as None. Every other slot
        must be filled by now (the upgrade waits for the snapshots being made)."""
        out: list[bytes | None] = []
        for item in self._control:
            if isinstance(item, bytes):
                out.append(item)
            elif item is ours:
                out.append(None)
            elif item.frame is not None:
                out.append(item.frame)
            else:
                raise RuntimeError("a reply is still being made")
        return out

    def restore_control(self, items: list[bytes | None], reading_paused: bool) -> Slot | None:
        """The old code's export_control(); returns the slot standing for None (the upgrade's reply)."""
        ours = None
        for item in items:
            if item is None:
                ours = self.reserve()
            else:
                self.send(item)
        self.reading_paused = reading_paused
        return ours

    def drained(self, ours: Slot | None) -> bool:
        """Nothing this outbox could write now: no output in the rotation, and no control frame that is not
        behind `ours` (the upgrade's own reply, which holds what follows it in place)."""
        return not self._ready and (not self._control or self._control[0] is ours)

    # -- reading ------------------------------------------------------------------------------------------------

    def pause_reading(self) -> bool:
        """True when reading must pause now (too many replies waiting); the caller stops handling requests."""
        lim = self.limits
        if not self.reading_paused and self.state is State.OPEN and (
                self.control_bytes > lim.control_high or self.pending >= lim.max_pending):
            self.reading_paused = True
            return True
        return False

    def resume_reading(self) -> bool:
        """True when reading may resume now (the replies drained under the low mark)."""
        lim = self.limits
        if self.reading_paused and self.state is State.OPEN and (
                self.control_bytes < lim.control_low and self.pending < lim.max_pending):
            self.reading_paused = False
            return True
        return False

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def fail(self, frame: bytes) -> bool:
        """open -> failing: `frame` (the fatal error) goes after every reply already queued or reserved; output
        stops. False when the connection was not open (a first failure or close wins)."""
        if self.state is not State.OPEN:
            return False
        self._control.append(frame)
        self.control_bytes += len(frame)
        self.state = State.FAILING
        self._clear_rotation()
        return True

    @property
    def failed_and_drained(self) -> bool:
        """failing, and the error and the replies before it are all written: time to close."""
        return self.state is State.FAILING and not self._control

    def close(self) -> None:
        """-> closing: whatever is still queued is abandoned."""
        if self.state in (State.OPEN, State.FAILING):
            self.state = State.CLOSING
            self._abandon()

    def lost(self) -> None:
        """-> closed."""
        self.state = State.CLOSED
        self._abandon()

    def _abandon(self) -> None:
        self._control.clear()
        self.control_bytes = self.pending = 0
        self._clear_rotation()

    def _clear_rotation(self) -> None:
        for src in self._ready:
            src.in_rotation = False
        self._ready.clear()
