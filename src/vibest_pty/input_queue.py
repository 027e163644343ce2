"""Input for one session's PTY that the kernel did not take at once, bounded in bytes.

The first write is tried at once (the common case: a keystroke goes out in the callback that received it); what the
PTY does not take waits here, in order, until the master is writable again (`add_writer`). Past `max_bytes` a write
is refused with `input_queue_full` rather than buffered: a client cannot make the daemon hold unbounded input for a
program that does not read.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable

from . import protocol
from .protocol import ProtocolError

log = logging.getLogger("vibest_pty.input")


class InputQueue:
    def __init__(self, fd: int, max_bytes: int, *, want_writable: Callable[[bool], None],
                 on_written: Callable[[int], None], label: str = "") -> None:
        """`want_writable(flag)` adds/removes the loop's writer for `fd`; `on_written(n)` counts bytes taken."""
        self.fd = fd
        self.max_bytes = max_bytes
        self._want = want_writable
        self._written = on_written
        self._label = label
        self._views: deque[memoryview] = deque()
        self.bytes = 0

    def __bool__(self) -> bool:
        return bool(self._views)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.bytes + len(data) > self.max_bytes:
            raise ProtocolError(
                protocol.INPUT_QUEUE_FULL,
                f"{self._label}: input queue holds {self.bytes} bytes; "
                f"{len(data)} more would pass the limit of {self.max_bytes}",
            )
        view = memoryview(data)
        if not self._views:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                log.debug("%s: write: %s", self._label, exc)
                return  # the child is gone; the exit event follows
            self._written(n)
            view = view[n:]
            if not view:
                return
            self._want(True)
        self._views.append(view)
        self.bytes += len(view)

    def on_writable(self) -> None:
        views = self._views
        while views:
            view = views[0]
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                return
            except OSError:
                views.clear()
                self.bytes = 0
                break
            self._written(n)
            self.bytes -= n
            if n < len(view):
                views[0] = view[n:]
                return
            views.popleft()
        self._want(False)

    def export(self) -> bytes:
        """What still waits for the PTY, in order (an in-place upgrade carries it to the new code)."""
        return b"".join(self._views)

    def restore(self, data: bytes) -> None:
        """The old code's export(); the caller asks for writability (the loop is not watching yet)."""
        self._views.clear()
        if data:
            self._views.append(memoryview(data))
        self.bytes = len(data)

    def clear(self) -> None:
        if self._views:
            self._want(False)
        self._views.clear()
        self.bytes = 0
