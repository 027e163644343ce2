"""The one thread that runs every session's emulator.

Parsing output and building snapshots is CPU work in native code (cffi releases the GIL), so it runs beside the
event loop instead of on it: a flood in one session or a snapshot of a 1000x1000 terminal never stalls the loop,
and parsing overlaps with the loop's reads and writes on a second core. One FIFO for all sessions keeps each
session's feeds, resizes and snapshot requests in order, which is what makes a snapshot exact at its offset.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("vibest_pty.worker")

Job = Callable[[], None]


class EmulatorWorker:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="vibest-emulator", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a broken emulator must not take the others with it
                log.exception("emulator job failed")

    def warm_up(self) -> None:
        """Load the emulator (pyghostty's cffi set-up parses C declarations: ~0.3 s) and run one snapshot (cffi
        builds its types on first use: ~0.2 s) here, off the loop, so neither the daemon's start nor the first
        attach pays for it."""

        def job() -> None:
            from .emulator import Emulator

            with Emulator(8, 2, 1) as emu:
                emu.feed(b"x\x1b[1mx\r\n")
                emu.snapshot()

        self.submit(job)

    def stop(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)
