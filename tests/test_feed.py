"""The feed's promises with a synchronous fake emulator: no I/O, no threads, milliseconds.

The fake terminal's state is the bytes it was fed and its size; a snapshot is that state, so "exact at its offset"
means: the snapshot holds exactly the output before the offset the request returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vibest_pty import feed as feedmod
from vibest_pty.emulator_host import EmulatorHost, Event
from vibest_pty.feed import Command, Feed
from vibest_pty.protocol import ProtocolError


class FakeTerminal:
    def __init__(self, cols: int, rows: int, scrollback: int, respond: bool = False, colors: Any = None) -> None:
        self.cols, self.rows = cols, rows
        self.data = bytearray()
        self.resizes: list[tuple[int, int]] = []
        self.closed = False
        self._replies = bytearray()

    @property
    def title(self) -> str:
        i = self.data.rfind(b"T:")
        return self.data[i + 2 : i + 3].decode() if i >= 0 else ""

    @property
    def cwd(self) -> str | None:
        return None

    def feed(self, data: bytes, scan: bool = True) -> None:
        self.data += data
        if b"?Q" in data:  # a query: the terminal answers on its own
            self._replies += b"ANSWER"

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.resizes.append((cols, rows))

    def set_colors(self, colors: Any) -> None:
        pass

    def snapshot_wire(self, max_bytes: int) -> dict[str, Any]:
        return {"data": bytes(self.data), "cols": self.cols, "rows": self.rows}

    def text(self, which: str) -> str:
        return f"{which}:{self.data.decode()}"

    def take_replies(self) -> bytes:
        out, self._replies = bytes(self._replies), bytearray()
        return out

    def close(self) -> None:
        self.closed = True


class SyncBackend:
    """Runs commands only when told (`run`), so a test sees what waits where."""

    def __init__(self) -> None:
        self.feeds: dict[int, Feed] = {}
        self.terms: dict[int, FakeTerminal] = {}
        self.sent: list[tuple[int, Command]] = []
        self.host = EmulatorHost(self._event, self._make)
        self._opening = 0

    def _make(self, cols: int, rows: int, sb: int, respond: bool = False, colors: Any = None) -> FakeTerminal:
        t = FakeTerminal(cols, rows, sb)
        self.terms[self._opening] = t
        return t

    def register(self, feed: Feed) -> None:
        self.feeds[feed.sid] = feed

    def send(self, sid: int, cmds: list[Command]) -> None:
        self.sent += [(sid, c) for c in cmds]
        self.host.put(sid, cmds)

    def unregister(self, sid: int) -> None:
        self.feeds.pop(sid, None)

    def _event(self, ev: Event) -> None:
        f = self.feeds.get(ev[1])
        if f is None:
            return
        if ev[0] == "parsed":
            f.on_parsed(ev[2], ev[3], ev[4])
        elif ev[0] == "result":
            f.on_result(ev[2], ev[3], ev[4])
        else:
            f.on_reply(ev[2])

    def run(self) -> None:
        while self.host.has_work():
            if self.host._ready:
                self._opening = self.host._ready[0]
            self.host.step()


class Harness:
    def __init__(self, backend: SyncBackend | None = None, sid: int = 1, **kw: Any) -> None:
        self.backend = backend or SyncBackend()
        self.later: list[Callable[[], None]] = []
        self.paused: list[bool] = []
        self.replies: list[bytes] = []
        self.history = bytearray()
        self.feed = Feed(sid, 80, 24, 100, self.backend, schedule=self._schedule, pause=self.paused.append,
                         on_reply=self.replies.append, history=lambda: (0, bytes(self.history)), **kw)

    def _schedule(self, delay: float, fn: Callable[[], None]) -> object:
        self.later.append(fn)
        return fn

    def out(self, data: bytes) -> None:
        self.history += data
        self.feed.output(data)

    def turn(self) -> None:
        """One loop turn: scheduled pumps run, then the emulator runs what it was sent."""
        fns, self.later = self.later, []
        for fn in fns:
            fn()
        self.backend.run()

    @property
    def term(self) -> FakeTerminal:
        return self.backend.terms[self.feed.sid]


def test_snapshot_is_exact_at_the_offset_it_returns() -> None:
    h = Harness()
    h.out(b"before ")
    got: list[Any] = []
    off = h.feed.snapshot(got.append)
    h.out(b"after")  # arrives before the emulator ran anything
    for _ in range(3):
        h.turn()
    assert off == 7
    assert got == [{"data": b"before ", "cols": 80, "rows": 24}]
    assert bytes(h.term.data) == b"before after"  # output after the fence is parsed after the job


def test_interactive_output_is_handed_over_lazily_and_a_job_is_not() -> None:
    h = Harness()
    h.turn()  # the open
    h.out(b"x")
    assert not any(c[0] == "feed" for _, c in h.backend.sent), "nothing handed over in the reading callback"
    h.turn()
    assert bytes(h.term.data) == b"x"


def test_a_flood_is_handed_over_in_batches_not_per_chunk() -> None:
    h = Harness()
    for _ in range(64):
        h.out(b"y" * 4096)
    h.turn()
    feeds = [c for _, c in h.backend.sent if c[0] == "feed"]
    assert len(feeds) == 1 and len(feeds[0][1]) == 64 * 4096


def test_backlog_pauses_reading_and_resumes_under_the_low_mark() -> None:
    h = Harness()
    chunk = b"z" * 65536
    while not h.paused:
        h.out(chunk)
    assert h.feed.offset - h.feed.parsed > feedmod.BACKLOG_HIGH
    h.turn()
    h.turn()
    assert h.paused == [True, False]


def test_resizes_waiting_behind_a_job_coalesce_to_the_latest() -> None:
    h = Harness()
    got: list[Any] = []
    h.feed.snapshot(got.append)  # in flight: later jobs wait in the feed
    h.later.pop()()  # send the snapshot, do not run the emulator yet
    for i in range(1000):
        h.feed.resize(10 + i, 5)
    for _ in range(4):
        h.turn()
    assert h.term.resizes == [(1009, 5)]
    assert h.feed.cols == 1009


def test_at_most_one_job_of_a_session_is_at_the_emulator() -> None:
    h = Harness()
    got: list[Any] = []
    for _ in range(5):
        h.feed.text("screen", got.append)
        h.out(b".")
    h.later.pop()()
    jobs = [c for _, c in h.backend.sent if c[0] in ("snapshot", "text", "resize")]
    assert len(jobs) == 1
    for _ in range(12):
        h.turn()
    assert got == ["screen:", "screen:.", "screen:..", "screen:...", "screen:...."]


def test_requests_at_the_same_offset_share_one_job() -> None:
    h = Harness()
    got: list[Any] = []
    for _ in range(5):
        h.feed.snapshot(got.append)
    h.turn()
    h.turn()
    assert len([c for _, c in h.backend.sent if c[0] == "snapshot"]) == 1
    assert len(got) == 5


def test_client_requests_per_session_are_bounded_resyncs_are_not() -> None:
    h = Harness()
    got: list[Any] = []
    for i in range(feedmod.MAX_QUEUED_REQUESTS):
        h.out(bytes([65 + i % 26]))
        h.feed.snapshot(got.append)
    h.out(b"!")
    with pytest.raises(ProtocolError) as e:
        h.feed.snapshot(got.append)
    assert e.value.code == "limit_reached"
    h.feed.snapshot(got.append, bounded=False)  # a resync: bounded by the number of subscribers instead
    for _ in range(40):
        h.turn()
    assert len(got) == feedmod.MAX_QUEUED_REQUESTS + 1
    h.feed.snapshot(got.append)  # room again


def test_a_slow_session_does_not_starve_another() -> None:
    backend = SyncBackend()
    a, b = Harness(backend, 1), Harness(backend, 2)
    a.turn()
    for _ in range(50):
        a.feed.output(b"a" * 1024 * 1024)  # 50 MiB queued at the emulator for session 1
        a.later.clear()
        a.feed.flush()
    got: list[Any] = []
    b.out(b"hi")
    b.feed.snapshot(got.append)
    b.later.clear()
    b.feed.flush()
    steps = 0
    while not got:
        backend.host.step()
        steps += 1
    assert steps <= 6, "session 2's snapshot waited behind session 1's whole queue"
    assert got[0]["data"] == b"hi"


def test_emulator_replies_reach_the_session() -> None:
    h = Harness()
    h.out(b"\x1b?Q")
    h.turn()
    assert h.replies == [b"ANSWER"]


def test_title_is_published_after_parsing() -> None:
    h = Harness()
    h.out(b"T:x")
    assert h.feed.title == ""
    h.turn()
    assert h.feed.title == "x"


def test_rebuild_replays_the_window_answers_owed_jobs_and_does_not_answer_queries_again() -> None:
    h = Harness()
    h.out(b"one \x1b?Q ")
    h.turn()
    assert h.replies == [b"ANSWER"]
    got: list[Any] = []
    h.feed.snapshot(got.append)
    h.out(b"two ")
    h.later.pop()()  # the snapshot is sent, then the emulator "dies" before answering
    h.backend.host = EmulatorHost(h.backend._event, h.backend._make)
    h.feed.rebuild()
    for _ in range(4):
        h.turn()
    assert got == [{"data": b"one \x1b?Q two ", "cols": 80, "rows": 24}]
    assert bytes(h.term.data) == b"one \x1b?Q two "
    assert h.replies == [b"ANSWER"], "a query in the replay window was answered again"
    h.out(b"\x1b?Q")
    h.turn()
    assert h.replies == [b"ANSWER", b"ANSWER"]


def test_close_answers_what_is_owed_with_an_error() -> None:
    h = Harness()
    got: list[Any] = []
    h.feed.snapshot(got.append)
    h.feed.close()
    assert len(got) == 1 and isinstance(got[0], ProtocolError)
    h.backend.run()
