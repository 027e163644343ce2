"""A snapshot's cost follows the content, not the screen's area: counted in C calls, not in time.

Every libghostty-vt call goes through `vt._lib` (and `vt._grid_ref_c`), so wrapping them counts the calls a snapshot
makes. A blank 1000x1000 screen was 3 calls per cell of every blank row (3 million, ~1.2 s) before the row pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from vibest_pty import vt
from vibest_pty.emulator import Emulator

from .test_emulator import _assert_same, _state


class _Counting:
    """Forwards to the real cffi lib; counts every function called through it."""

    def __init__(self, lib: Any, counts: Counter[str]) -> None:
        self._lib = lib
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._lib, name)
        if not callable(value):
            return value
        counts = self._counts

        def call(*args: Any) -> Any:
            counts[name] += 1
            return value(*args)

        return call


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    vt._default_cell()  # cached once per process: not part of any snapshot's cost
    grid_ref = vt._grid_ref_fn()

    def counted_grid_ref(*args: Any) -> Any:
        counts["ghostty_terminal_grid_ref"] += 1
        return grid_ref(*args)

    monkeypatch.setattr(vt, "_lib", _Counting(vt._lib, counts))
    monkeypatch.setattr(vt, "_grid_ref_c", counted_grid_ref)
    yield counts


def _snapshot_calls(calls: Counter[str], cols: int, rows: int, stream: bytes = b"") -> int:
    with Emulator(cols, rows, 100) as emu:
        emu.feed(stream)
        calls.clear()
        emu.snapshot()
        return sum(calls.values())


def test_a_blank_snapshot_costs_a_few_calls_per_row_not_per_cell(calls: Counter[str]) -> None:
    small = _snapshot_calls(calls, 80, 24)
    big = _snapshot_calls(calls, 1000, 1000)
    assert small > 20  # the calls are counted at all (the formatter, the extras, the cursor)
    # 976 more rows, each walked a few times (wrap flags, the row pass): well under 10 calls a row.
    assert big - small < 10 * (1000 - 24), (small, big)


def test_a_coloured_erase_costs_calls_per_distinct_cell_not_per_cell(calls: Counter[str]) -> None:
    plain = _snapshot_calls(calls, 1000, 1000)
    coloured = _snapshot_calls(calls, 1000, 1000, b"\x1b[41m\x1b[2J\x1b[48;2;1;2;3m\x1b[3;1H\x1b[K")
    assert coloured - plain < 100, (plain, coloured)  # two distinct cell values, each asked about once


def test_the_blank_and_coloured_screens_still_round_trip() -> None:
    stream = b"\x1b[41m\x1b[2J\x1b[48;2;1;2;3m\x1b[3;5H\x1b[K\x1b[0m\x1b[10;10Hx\x1b[44m\x1b[5X"
    with Emulator(300, 200, 10) as src, Emulator(300, 200, 10) as dst:
        src.feed(stream)
        snap = src.snapshot()
        dst.feed(snap.data)
        _assert_same(_state(src), _state(dst))  # every cell: text, width, style, background
        assert dst.snapshot().data == snap.data


@pytest.mark.parametrize("kind", ["plain", "wrapped", "alt"])
def test_an_oversized_snapshot_stops_formatting_at_its_limit_and_still_serves_most_history(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trimming history to fit `max_bytes` used to format everything first (a dense 1000x1000 screen with history:
    twice its whole size at the peak of the process's RSS); now an oversized attempt stops at the limit."""
    if kind == "wrapped":  # 600 lines of 10 rows each: the rows that fitted are counted in rows, not lines
        data = b"".join(b"\x1b[3%dm" % (i % 8) + b"w%d " % i * 100 + b"\x1b[0m\r\n" for i in range(600))
    else:
        data = b"".join(b"\x1b[3%dmline %d padding padding\x1b[0m\r\n" % (i % 8, i) for i in range(6000))
    if kind == "alt":
        data += b"\x1b[?1049halt screen"
    with Emulator(80, 24, 5000) as emu:
        emu.feed(data)
        whole = emu.snapshot()
        limit = len(whole.data) // 3
        formatted = []
        real = vt.format_vt

        def counting(*args: Any, **kwargs: Any) -> bytes:
            try:
                out = real(*args, **kwargs)
            except vt.TooLarge:
                formatted.append(kwargs["limit"])
                raise
            formatted.append(len(out))
            return out

        monkeypatch.setattr(vt, "format_vt", counting)
        snap = emu.snapshot(limit)
    assert len(snap.data) <= limit
    assert sum(formatted) < 2.2 * limit, formatted  # the aborted attempt, then the one that fits
    # About a third of the history fits; 0.8 of that is served at least (0.9 spare on the rows, row granularity).
    assert snap.scrollback_lines >= 0.8 * whole.scrollback_lines / 3, (snap.scrollback_lines, whole.scrollback_lines)
    with Emulator(80, 24, 5000) as dst:
        dst.feed(snap.data)
        assert _state(dst, None)["history"] == (0 if kind == "alt" else snap.scrollback_lines)
