"""Per-subscriber output queues: the flow-control core.

A subscriber is one (connection, session) pair. The session pushes each output frame (encoded once, shared by
every subscriber) and never waits; the connection's writer pops frames when its socket can take them. A queue that
fills up never blocks the PTY: its backlog is discarded and replaced by a resync (a fresh snapshot) once the
connection has drained, or, when so configured, the connection is closed.

Snapshots come back asynchronously (from the emulator thread). While one is being made the subscriber is `held`:
output from the snapshot's offset on is queued as usual but not sent before the snapshot itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import protocol

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

    def send_control(self, message: dict[str, Any]) -> None:
        """Queue a message ahead of all output (warnings)."""

    def overflowed(self, sub: Subscriber) -> None:
        """The queue is full and the policy is to disconnect."""

    def forget(self, sub: Subscriber) -> None:
        """The session's record is gone: drop the subscription without sending anything more."""


class Subscriber:
    __slots__ = (
        "_snapshot_fn", "bytes", "discarded", "exit_frame", "head", "held", "in_rotation", "level", "limits",
        "queue", "resync_pending", "resyncs", "session_id", "sink", "warnings",
    )

    def __init__(
        self,
        session_id: int,
        sink: Sink,
        limits: FlowLimits,
        snapshot_fn: Callable[[Callable[[dict[str, Any] | Exception], None]], int],
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
        self.discarded = 0  # frames thrown away by overflows, for stats
        self.resyncs = 0
        self.warnings = 0

    # -- producer side (the session) -----------------------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        if self.resync_pending:
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
        self.exit_frame = frame
        self._ready()

    def _ready(self) -> None:
        if not self.in_rotation and not self.held:
            self.sink.subscriber_ready(self)

    def hold(self) -> None:
        """Send nothing until release(): the attach reply carrying the snapshot must go first."""
        self.held = True

    def release(self) -> None:
        self.held = False
        if self.has_work():
            self._ready()

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

    def _warn(self, level: str) -> None:
        if self.level == level:
            return
        self.level = level
        self.warnings += 1
        self.sink.send_control(
            {"type": "backpressure_warning", "session": self.session_id, "queue_size": len(self.queue),
             "level": level}
        )

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

    def _resync_ready(self, snapshot: dict[str, Any] | Exception) -> None:
        if self.resync_pending:
            pass  # overflowed again while the snapshot was made: it is stale, a fresh one will be asked for
        elif isinstance(snapshot, Exception):
            self.head = protocol.encode(protocol.error(None, protocol.INTERNAL, f"resync failed: {snapshot}",
                                                       "resync", self.session_id))
        else:
            self.resyncs += 1
            self.head = protocol.encode({"type": "resync", "session": self.session_id, "snapshot": snapshot})
        self.release()

    def stats(self) -> dict[str, Any]:
        return {"session": self.session_id, "events": len(self.queue), "bytes": self.bytes, "level": self.level,
                "discarded": self.discarded, "resyncs": self.resyncs, "warnings": self.warnings}
