"""The flow-control core without I/O: flow.Subscriber with a fake sink, flow.Outbox with fake sources.

These run in milliseconds and pin the orderings the daemon promises; tests/test_flow.py keeps a few real floods
through a real daemon as acceptance tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vibest_pty import protocol
from vibest_pty.flow import FlowLimits, Outbox, OutboxLimits, State, Subscriber

Done = Callable[[dict[str, Any] | Exception], None]


class FakeSink:
    """Records what a Subscriber asks of its connection."""

    def __init__(self) -> None:
        self.ready: list[Subscriber] = []
        self.control: list[dict[str, Any]] = []
        self.overflows = 0
        self.forgotten = 0

    def subscriber_ready(self, sub: Subscriber) -> None:
        sub.in_rotation = True  # as the Outbox does
        self.ready.append(sub)

    def send_control(self, message: dict[str, Any]) -> None:
        self.control.append(message)

    def overflowed(self, sub: Subscriber) -> None:
        self.overflows += 1

    def forget(self, sub: Subscriber) -> None:
        self.forgotten += 1


class FakeSnapshots:
    """A synchronous stand-in for the emulator: snapshot requests wait in a list until the test answers them."""

    def __init__(self) -> None:
        self.waiting: list[Done] = []
        self.offset = 0

    def request(self, done: Done) -> int:
        self.waiting.append(done)
        return self.offset

    def answer(self, i: int = 0, offset: int | None = None) -> None:
        self.waiting.pop(i)({"data": b"SNAP", "offset": self.offset if offset is None else offset})


def make_sub(limits: FlowLimits | None = None) -> tuple[Subscriber, FakeSink, FakeSnapshots]:
    sink, snaps = FakeSink(), FakeSnapshots()
    sub = Subscriber(7, sink, limits or FlowLimits(max_events=8, max_bytes=1000, threshold=2), snaps.request)
    return sub, sink, snaps


def drain(sub: Subscriber) -> list[bytes]:
    out = []
    while sub.has_work():
        frame = sub.pop()
        if frame is not None:
            out.append(frame)
    sub.in_rotation = False
    return out


def decoded(frames: list[bytes]) -> list[dict[str, Any]]:
    return [m for m in protocol.decode_all(b"".join(frames)) if isinstance(m, dict)]


# -- Subscriber ------------------------------------------------------------------------------------------------


def test_subscriber_sends_output_in_order_then_exit_after_all_of_it() -> None:
    sub, sink, _ = make_sub()
    sub.push(b"a")
    sub.push_exit(b"EXIT")
    sub.push(b"b")  # output read before the exit was reported still goes first
    assert sink.ready == [sub], "put in rotation once"
    assert drain(sub) == [b"a", b"b", b"EXIT"]
    assert not sub.has_work()


def test_subscriber_overflow_discards_backlog_and_resyncs_at_the_snapshot_offset() -> None:
    sub, sink, snaps = make_sub()
    for i in range(9):  # max_events=8: the ninth overflows
        sub.push(bytes([65 + i]))
    assert [m["level"] for m in sink.control] == ["yellow", "red"]
    assert sub.discarded == 8 and not sub.queue
    sub.push(b"covered")  # covered by the coming snapshot: not queued
    assert not sub.queue
    assert sub.pop() is None and snaps.waiting, "the snapshot is asked for when the writer gets to it"
    assert not sub.has_work(), "held while the snapshot is made"
    snaps.offset = 42
    snaps.answer()
    (frame,) = decoded(drain(sub))
    assert frame["type"] == "resync" and frame["snapshot"] == {"data": b"SNAP", "offset": 42}
    assert sub.resyncs == 1 and sub.level == "green"


def test_subscriber_output_after_resync_follows_it() -> None:
    sub, _, snaps = make_sub()
    for _ in range(9):
        sub.push(b"x")
    sub.pop()
    sub.push(b"after")
    snaps.answer()
    out = drain(sub)
    assert decoded(out[:1])[0]["type"] == "resync"
    assert out[1:] == [b"after"]


def test_a_stale_resync_is_dropped_when_the_queue_overflowed_again() -> None:
    sub, _, snaps = make_sub()
    for _ in range(9):
        sub.push(b"x")
    sub.pop()  # first snapshot requested
    for _ in range(9):
        sub.push(b"y")  # overflows again while it is being made
    assert sub.resync_pending
    snaps.answer()  # the first snapshot is stale now
    assert sub.head is None and sub.resyncs == 0
    assert sub.pop() is None and len(snaps.waiting) == 1, "a fresh one is asked for instead"
    snaps.answer()
    assert [m["type"] for m in decoded(drain(sub))] == ["resync"] and sub.resyncs == 1


def test_hold_sends_nothing_until_release() -> None:
    sub, sink, _ = make_sub()
    sub.hold()
    sub.push(b"a")
    assert not sink.ready and not sub.has_work() and sub.pop() is None
    sub.release()
    assert sink.ready == [sub]
    assert drain(sub) == [b"a"]


def test_no_resync_after_detach_when_the_snapshot_was_in_flight() -> None:
    """#11 item 7: a detach while the resync snapshot is being made: nothing more is ever sent."""
    sub, sink, snaps = make_sub()
    for _ in range(9):
        sub.push(b"x")
    sub.pop()
    sink.ready.clear()
    sub.in_rotation = False
    sub.close()  # the client detached
    snaps.answer()
    sub.push(b"late")
    sub.push_exit(b"EXIT")
    assert not sink.ready, "not put back in the rotation"
    assert not sub.has_work() and sub.pop() is None


def test_auto_disconnect_policy_reports_the_overflow_to_the_sink() -> None:
    sub, sink, snaps = make_sub(FlowLimits(max_events=2, max_bytes=1000, threshold=1, auto_disconnect=True))
    for _ in range(3):
        sub.push(b"x")
    assert sink.overflows == 1 and sink.control[-1]["level"] == "red" and not snaps.waiting


def test_byte_bound_overflows_too() -> None:
    sub, sink, _ = make_sub(FlowLimits(max_events=100, max_bytes=10, threshold=1))
    sub.push(b"12345678")  # 80% of the bytes: yellow
    sub.push(b"123")
    assert [m["level"] for m in sink.control] == ["yellow", "red"] and sub.resync_pending


def test_a_failed_resync_snapshot_is_reported_as_an_error() -> None:
    sub, _, snaps = make_sub()
    for _ in range(9):
        sub.push(b"x")
    sub.pop()
    snaps.waiting.pop()(RuntimeError("boom"))
    (err,) = decoded(drain(sub))
    assert err["type"] == "error" and err["request"] == "resync" and "boom" in err["message"]


# -- Outbox ----------------------------------------------------------------------------------------------------


class FakeSource:
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = list(frames)
        self.in_rotation = False

    def has_work(self) -> bool:
        return bool(self.frames)

    def pop(self) -> bytes | None:
        return self.frames.pop(0) if self.frames else None


def written(ob: Outbox) -> list[bytes]:
    """Everything the outbox hands out now, split back into frames (these tests use 1-byte frames)."""
    out: list[bytes] = []
    while (batch := ob.next_batch()) is not None:
        data, n = batch
        assert n == len(data)
        out.extend(data[i : i + 1] for i in range(n))
    return out


def test_replies_go_before_the_events_they_cause() -> None:
    ob = Outbox()
    src = FakeSource([b"e"])
    ob.ready(src)  # the event (an exit) became ready while its request was being handled
    ob.send(b"R")  # the reply
    assert written(ob) == [b"R", b"e"]


def test_slots_keep_request_order_and_output_does_not_wait_for_them() -> None:
    ob = Outbox()
    first = ob.reserve()  # a snapshot being made
    ob.send(b"2")  # the next request's reply waits behind it
    src = FakeSource([b"o"])
    ob.ready(src)
    assert written(ob) == [b"o"], "output of the sessions is not held by a slot"
    second = ob.reserve()
    ob.fill(second, b"3")
    assert written(ob) == []
    ob.fill(first, b"1")
    assert written(ob) == [b"1", b"2", b"3"]
    assert ob.control_bytes == 0 and ob.pending == 0


def test_a_fatal_error_goes_after_earlier_replies_then_the_outbox_says_close() -> None:
    ob = Outbox()
    slot = ob.reserve()
    ob.send(b"a")
    src = FakeSource([b"o"])
    ob.ready(src)
    assert ob.fail(b"E")
    assert ob.state is State.FAILING and not src.in_rotation, "output stops"
    ob.send(b"x")  # nothing new is taken once failing
    assert written(ob) == [] and not ob.failed_and_drained
    ob.fill(slot, b"s")
    assert written(ob) == [b"s", b"a", b"E"]
    assert ob.failed_and_drained
    assert not ob.fail(b"E2"), "one failure"
    ob.close()
    assert ob.state is State.CLOSING and ob.next_batch() is None


def test_subscribers_are_served_round_robin() -> None:
    ob = Outbox(OutboxLimits(batch=1))  # one frame per batch, to see the order
    a, b = FakeSource([b"a", b"a", b"a"]), FakeSource([b"b"])
    ob.ready(a)
    ob.ready(b)
    ob.ready(a)  # once in the rotation, not twice
    order = []
    while (batch := ob.next_batch()) is not None:
        order.append(batch[0])
    assert order == [b"a", b"b", b"a", b"a"]


def test_batches_join_frames_up_to_the_limit() -> None:
    ob = Outbox(OutboxLimits(batch=4))
    ob.ready(FakeSource([b"12", b"34", b"56"]))
    assert ob.next_batch() == (b"1234", 2)
    assert ob.next_batch() == (b"56", 1)
    assert ob.next_batch() is None


def test_nothing_goes_while_writing_is_paused() -> None:
    ob = Outbox()
    ob.send(b"r")
    ob.writing_paused = True
    assert ob.next_batch() is None
    ob.writing_paused = False
    assert written(ob) == [b"r"]


def test_reading_pauses_over_the_high_mark_and_resumes_under_the_low_one() -> None:
    ob = Outbox(OutboxLimits(control_high=10, control_low=4, max_pending=2))
    ob.send(b"x" * 11)
    assert ob.pause_reading() and ob.reading_paused
    assert not ob.pause_reading(), "reported once"
    assert not ob.resume_reading()
    ob.next_batch()
    assert ob.resume_reading() and not ob.reading_paused
    ob.reserve()
    ob.reserve()
    assert ob.pause_reading(), "two snapshots in the making"


def test_a_slot_filled_after_close_is_ignored() -> None:
    ob = Outbox()
    slot = ob.reserve()
    ob.close()
    ob.fill(slot, b"late")
    assert ob.control_bytes == 0 and ob.next_batch() is None
    with pytest.raises(ValueError):
        ob.fill(slot, b"again")


def test_take_control_stops_at_an_unfilled_slot() -> None:
    ob = Outbox()
    ob.send(b"a")
    ob.reserve()
    ob.send(b"b")
    assert ob.take_control() == b"a"
    assert ob.control_bytes == 1
