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
