"""A feed Backend that runs every session's emulator on one worker thread, beside the event loop.

Parsing output and building snapshots is CPU work in native code (cffi releases the GIL), so it runs off the loop:
a flood in one session or a snapshot of a 1000x1000 terminal never stalls the loop. Commands arrive per session in
order (which is what keeps a snapshot exact at its offset, see feed.py) and are served round-robin across sessions
by an EmulatorHost; events go back to the loop in one `call_soon_threadsafe` per unit of work.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from .emulator_host import EmulatorHost, Event, warm_up
from .feed import Command

if TYPE_CHECKING:
    from .feed import Feed

log = logging.getLogger("vibest_pty.worker")


class EmulatorWorker:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.SimpleQueue[tuple[int, list[Command]] | None] = queue.SimpleQueue()
        self._feeds: dict[int, Feed] = {}
        self._events: list[Event] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- Backend (loop thread) -------------------------------------------------------------------------------

    def register(self, feed: Feed) -> None:
        self._feeds[feed.sid] = feed
        if self._thread is None:  # started at the first session: an empty daemon runs no emulator code
            self._thread = threading.Thread(target=self._run, name="vibest-emulator", daemon=True)
            self._thread.start()

    def send(self, sid: int, cmds: list[Command]) -> None:
        self._inbox.put((sid, cmds))

    def unregister(self, sid: int) -> None:
        self._feeds.pop(sid, None)

    def _dispatch(self, events: list[Event]) -> None:
        for ev in events:
            feed = self._feeds.get(ev[1])
            if feed is None:
                continue
            if ev[0] == "parsed":
                feed.on_parsed(ev[2], ev[3], ev[4])
            elif ev[0] == "result":
                feed.on_result(ev[2], ev[3], ev[4])
            elif ev[0] == "reply":
                feed.on_reply(ev[2])

    def stats(self) -> list[dict[str, Any]]:
        return []

    # -- worker thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            warm_up()
        except Exception:
            log.exception("emulator warm-up failed")
        host = EmulatorHost(self._events.append)
        inbox = self._inbox
        while True:
            block = not host.has_work()
            while True:
                try:
                    item = inbox.get(block=block)
                except queue.Empty:
                    break
                if item is None:
                    return
                host.put(*item)
                block = False
            host.step()
            if self._events:
                events, self._events[:] = list(self._events), []
                try:
                    self._loop.call_soon_threadsafe(self._dispatch, events)
                except RuntimeError:  # the loop is closed: the daemon is stopping
                    return

    def stop(self, timeout: float = 5.0) -> None:
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
