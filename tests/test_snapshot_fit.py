"""A snapshot always fits its max_bytes (the frame limit less the reply's margin), degraded when the screen alone does
not: a dense truecolour 1000x1000 screen was 21.6 MiB (fg only) or 38.5 MiB (fg and bg) against a 16 MiB frame, so
such a session could never be attached. Exact snapshots (what fits) are unchanged: tests/test_emulator.py."""

from __future__ import annotations

from typing import Any

import pytest

from vibest_pty import snapshot as snap
from vibest_pty import vt
from vibest_pty.emulator import Emulator
from vibest_pty.emulator_host import EmulatorHost

from .test_emulator import _assert_same, _cell, _state, _view

FRAME_FIT = 16 * 1024 * 1024 - 64 * 1024  # session.py: the frame limit less SNAPSHOT_FRAME_MARGIN
N = 1000


def _dense(cols: int, rows: int, bg: bool) -> bytes:
    """Every cell its own truecolour style: a lolcat-like fg gradient, and with `bg` a scrambled background."""
    out = []
    for y in range(rows):
        out.append("".join(
            f"\x1b[38;2;{(y + x) % 256};{x * 3 % 256};{y * 7 % 256}"
            + (f";48;2;{x % 256};{(y * 5 + x) % 256};{x * y % 256}" if bg else "")
            + f"m{chr(33 + (x + y) % 90)}"
            for x in range(cols)
        ))
    return "\r\n".join(out).encode() + b"\x1b[0m\x1b[?2004h\x1b[5;7H"


def _text_and_cursor(emu: Emulator) -> tuple[str, tuple[int, int], dict[str, bool]]:
    s = emu.snapshot()
    return emu.text("screen"), s.cursor, s.modes


@pytest.fixture(scope="module")
def dense_fg() -> Any:
    with Emulator(N, N, 1000) as emu:
        emu.feed(_dense(N, N, bg=False))
        yield emu


@pytest.fixture(scope="module")
def dense_fg_bg() -> Any:
    with Emulator(N, N, 1000) as emu:
        emu.feed(_dense(N, N, bg=True))
        yield emu


def _restored(st: snap.ScreenState) -> Emulator:
    dst = Emulator(st.cols, st.rows, 1000)
    dst.feed(st.data)
    return dst


def test_a_dense_truecolour_fg_screen_fits_the_frame_quantised_to_the_palette(dense_fg: Emulator) -> None:
    assert len(dense_fg.snapshot().data) > FRAME_FIT  # the case: exact, it does not fit
    st = dense_fg.snapshot(FRAME_FIT)
    assert len(st.data) <= FRAME_FIT
    assert st.degraded == "palette" and st.to_wire()["degraded"] == "palette"
    with _restored(st) as dst:
        assert _text_and_cursor(dst) == _text_and_cursor(dense_fg)
        # Colours are kept as the nearest palette entry: the cell (10, 20) was rgb(30, 30, 140).
        style = dict(_cell(_view(dst), 10, 20)[2])
        assert style["fg"] == ("palette", snap.palette_index(30, 30, 140)), style


def test_a_dense_truecolour_fg_and_bg_screen_fits_the_frame_as_plain_text(dense_fg_bg: Emulator) -> None:
    assert len(dense_fg_bg.snapshot().data) > 2 * FRAME_FIT
    st = dense_fg_bg.snapshot(FRAME_FIT)
    assert len(st.data) <= FRAME_FIT
    assert st.degraded == "plain"
    with _restored(st) as dst:
        assert _text_and_cursor(dst) == _text_and_cursor(dense_fg_bg)
        assert dst.modes()["bracketed_paste"]


@pytest.mark.parametrize("max_bytes", [4096, 100_000])
def test_when_even_plain_text_does_not_fit_the_bottom_rows_that_fit_are_served(
    dense_fg: Emulator, max_bytes: int
) -> None:
    st = dense_fg.snapshot(max_bytes)
    assert len(st.data) <= max_bytes
    assert st.degraded == "rows" and st.scrollback_lines == 0
    src_rows = dense_fg.text("screen").split("\n")
    with _restored(st) as dst:
        rows = dst.text("screen").split("\n")
        served = [i for i, r in enumerate(rows) if r]
        assert served and served[-1] == N - 1 and served == list(range(served[0], N))
        assert len(served) >= (max_bytes - 1500) // (N + 2)  # ~1 KiB a row, the rest of the snapshot ~1 KiB
        assert [rows[i] for i in served] == [src_rows[i] for i in served]
        assert dst.snapshot().cursor == dense_fg.snapshot().cursor


def test_a_dense_alternate_screen_is_degraded_and_still_alternate() -> None:
    with Emulator(N, N, 1000) as emu:
        emu.feed(b"primary line\r\n\x1b[?1049h" + _dense(N, N, bg=True))
        st = emu.snapshot(FRAME_FIT)
        assert len(st.data) <= FRAME_FIT and st.degraded == "plain" and st.alt_screen
        with _restored(st) as dst:
            assert _text_and_cursor(dst) == _text_and_cursor(emu)
            dst.feed(b"\x1b[?1049l")
            assert dst.text("screen").startswith("primary line")


def test_a_screen_that_fits_is_exact_and_not_marked_degraded() -> None:
    data = b"".join(b"\x1b[38;2;%d;2;3mline %d\x1b[0m\r\n" % (i % 256, i) for i in range(600))
    with Emulator(80, 24, 5000) as emu:
        emu.feed(data)
        whole = emu.snapshot()
        assert whole.degraded is None and "degraded" not in whole.to_wire()
        trimmed = emu.snapshot(len(whole.data) // 2)  # history trimmed, encoding exact
        assert trimmed.degraded is None and 0 < trimmed.scrollback_lines < whole.scrollback_lines
        with Emulator(80, 24, 5000) as dst:
            dst.feed(whole.data)
            _assert_same(_state(emu), _state(dst))


def test_the_palette_rewrite_gives_the_same_terminal_whatever_the_chunking() -> None:
    """The formatter hands over 4 KiB at a time, cutting sequences anywhere: a cut run is kept for the next chunk."""
    src = _dense(40, 9, bg=True) + b"\x1b[10;1H\x1b[1;4;38;5;100mbold\x1b[0m \x1b[38;2;0;0;0;48;2;255;255;255mbw"
    with Emulator(40, 10, 0) as emu:
        emu.feed(src)
        t = emu._live()
        formatted = vt.format_vt(t, vt.selection(t, 0, 0, 39, 9), unwrap=True)
    results = []
    for size in (1, 7, 4096):
        rw = snap._PaletteSgr()
        out = b"".join(rw.feed(formatted[i : i + size]) for i in range(0, len(formatted), size)) + rw.end()
        assert b"38;2;" not in out and b"48;2;" not in out
        with Emulator(40, 10, 0) as dst:
            dst.feed(out)
            results.append(_state(dst))
    assert results[0] == results[1] == results[2]
    cells = results[2]["lines"][9][1]
    assert dict(cells[0][2])["bold"] and dict(cells[0][2])["fg"] == ("palette", 100)


@pytest.mark.parametrize(("rgb", "index"), [
    ((0, 0, 0), 16), ((255, 255, 255), 231), ((255, 0, 0), 196), ((95, 135, 175), 67),
    ((128, 128, 128), 244), ((8, 8, 8), 232), ((238, 238, 238), 255),
])
def test_truecolour_maps_to_the_nearest_xterm_palette_entry(rgb: tuple[int, int, int], index: int) -> None:
    assert snap.palette_index(*rgb) == index


def test_the_emulator_host_logs_one_line_when_it_serves_a_degraded_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Any] = []
    host = EmulatorHost(events.append)
    host.put(1, [("open", 200, 50, 100), ("feed", _dense(200, 50, bg=True)), ("snapshot", 7, 5000),
                 ("snapshot", 8, 1 << 24)])
    with caplog.at_level("WARNING", logger="vibest_pty.emulator_host"):
        host.run_all()
    results = {e[2]: e[3] for e in events if e[0] == "result"}
    assert len(results[7]["data"]) <= 5000 and results[7]["degraded"] == "rows"
    assert "degraded" not in results[8]
    lines = [r.getMessage() for r in caplog.records if r.name == "vibest_pty.emulator_host"]
    assert len(lines) == 1 and "session 1" in lines[0] and "rows" in lines[0], lines
