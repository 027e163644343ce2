"""Emulator round trips: a fresh Emulator fed snapshot.data must equal the Emulator fed the raw stream.

pyghostty itself is the oracle: `_view` wraps an Emulator's native terminal in a pyghostty Terminal (no
ownership) and `_state` walks every cell of history + screen (graphemes, width, style, wrap flags) plus the
cursor, modes, title and pwd. After comparing, `_probe` feeds both the same bytes (text, newlines, cursor
moves) and compares again, which exposes hidden state: the pen, charsets, pending wrap, origin mode, margins.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyghostty import Terminal, ffi, lib

from vibest_pty.emulator import Emulator
from vibest_pty.snapshot import MODES, ScreenState

ESC = "\x1b"


def _view(emu: Emulator) -> Any:
    """A pyghostty Terminal reading the emulator's terminal (borrowed: never closed through this view)."""
    v = Terminal.__new__(Terminal)
    v._t = ffi.new("GhosttyTerminal*", emu._t)
    return v


def _cell(v: Any, x: int, y: int) -> tuple[Any, ...]:
    ref = v.ref(x, y, "screen")
    cell = ffi.new("GhosttyCell*")
    assert lib.ghostty_grid_ref_cell(ref, cell) == 0
    wide = ffi.new("GhosttyCellWide*")
    assert lib.ghostty_cell_get(cell[0], lib.GHOSTTY_CELL_DATA_WIDE, wide) == 0
    buf = ffi.new("uint32_t[16]")
    n = ffi.new("size_t*")
    r = lib.ghostty_grid_ref_graphemes(ref, buf, 16, n)
    text = "".join(chr(buf[i]) for i in range(n[0])) if r == 0 else ""
    st_ = v.style(x, y, "screen")
    # A cell erased under a coloured pen keeps its colour in the cell, not the style: fold it into `bg`,
    # and count it the same as a space with that background (what the formatter writes for it in a row).
    tag = ffi.new("GhosttyCellContentTag*")
    assert lib.ghostty_cell_get(cell[0], lib.GHOSTTY_CELL_DATA_CONTENT_TAG, tag) == 0
    if tag[0] == lib.GHOSTTY_CELL_CONTENT_BG_COLOR_PALETTE:
        p = ffi.new("uint8_t*")
        assert lib.ghostty_cell_get(cell[0], lib.GHOSTTY_CELL_DATA_COLOR_PALETTE, p) == 0
        st_["bg"] = ("palette", p[0])
    elif tag[0] == lib.GHOSTTY_CELL_CONTENT_BG_COLOR_RGB:
        c = ffi.new("GhosttyColorRgb*")
        assert lib.ghostty_cell_get(cell[0], lib.GHOSTTY_CELL_DATA_COLOR_RGB, c) == 0
        st_["bg"] = ("rgb", (c.r, c.g, c.b))
    if text == " ":
        text = ""
    return (text, int(wide[0]), tuple(sorted(st_.items())))


def _row_wrap(v: Any, y: int) -> bool:
    row = ffi.new("GhosttyRow*")
    assert lib.ghostty_grid_ref_row(v.ref(0, y, "screen"), row) == 0
    out = ffi.new("bool*")
    assert lib.ghostty_row_get(row[0], lib.GHOSTTY_ROW_DATA_WRAP, out) == 0
    return bool(out[0])


def _tstr(v: Any, key: str) -> bytes:
    s = ffi.new("GhosttyString*")
    r = lib.ghostty_terminal_get(v._t[0], getattr(lib, f"GHOSTTY_TERMINAL_DATA_{key}"), s)
    return ffi.buffer(s.ptr, s.len)[:] if r == 0 and s.len else b""


def _state(emu: Emulator, history: int | None = None) -> dict[str, Any]:
    """Everything observable; `history` keeps only the last N history rows."""
    v = _view(emu)
    cols, rows = v.size
    total = v.get("total_rows", "size_t")
    hist = total - rows
    first = 0 if history is None else max(0, hist - history)
    lines = []
    for y in range(first, total):
        lines.append((_row_wrap(v, y), [_cell(v, x, y) for x in range(cols)]))
    return {
        "size": (cols, rows),
        "history": hist - first,
        "lines": lines,
        "cursor": v.cursor,
        "pending_wrap": v.get("cursor_pending_wrap", "bool"),
        "cursor_visible": v.get("cursor_visible", "bool"),
        "screen": v.get("active_screen", "int"),
        "modes": {name: v.mode(n, ansi) for name, n, ansi in MODES},
        "title": _tstr(v, "TITLE"),
        "pwd": _tstr(v, "PWD"),
        "kitty": v.get("kitty_keyboard_flags", "uint8_t"),
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k in a:
        if k == "lines":
            assert len(a[k]) == len(b[k]), "row count"
            for i, (ra, rb) in enumerate(zip(a[k], b[k], strict=True)):
                assert ra == rb, f"row {i} of {len(a[k])}"
        else:
            assert a[k] == b[k], k


PROBE = f"Zq\r\nab{ESC}[2;2HP{ESC}[1;1H\nQ{ESC}[99;99HE".encode()


def roundtrip(
    stream: bytes, cols: int = 20, rows: int = 6, scrollback: int = 100, *, exit_alt: bytes = b""
) -> ScreenState:
    """Feed `stream`, snapshot, replay into a fresh Emulator, compare; then probe both and compare again."""
    src = Emulator(cols, rows, scrollback)
    src.feed(stream)
    snap = src.snapshot()
    dst = Emulator(cols, rows, scrollback)
    dst.feed(snap.data)
    _assert_same(_state(src), _state(dst))
    again = dst.snapshot()
    assert again.data == snap.data  # the snapshot is a fixpoint
    assert (again.cursor, again.modes, again.title, again.cwd) == (
        snap.cursor,
        snap.modes,
        snap.title,
        snap.cwd,
    )
    if exit_alt:
        src.feed(exit_alt)
        dst.feed(exit_alt)
        _assert_same(_state(src), _state(dst))
    src.feed(PROBE)
    dst.feed(PROBE)
    _assert_same(_state(src), _state(dst))
    src.close()
    dst.close()
    return snap


def lines(n: int, fmt: str = "line {i}") -> bytes:
    return "".join(fmt.format(i=i) + "\r\n" for i in range(n)).encode()


# --------------------------------------------------------------------------------------------------------
# Streams

SGR = (
    f"{ESC}[31mred{ESC}[0m {ESC}[1;32mbold green{ESC}[0m {ESC}[93;104mbright{ESC}[m\r\n"
    f"{ESC}[38;5;208m256fg{ESC}[48;5;17m256bg{ESC}[0m {ESC}[38;2;10;200;30mtrue{ESC}[48;2;1;2;3mcolor{ESC}[m\r\n"
    f"{ESC}[3mital{ESC}[23m {ESC}[4mund{ESC}[4:2mdbl{ESC}[4:3mcurl{ESC}[4:4mdot{ESC}[4:5mdash{ESC}[24m\r\n"
    f"{ESC}[58:2::255:0:0;4mulcol{ESC}[59m{ESC}[58;5;3mpal{ESC}[0m {ESC}[7minv{ESC}[27m {ESC}[9mstrike{ESC}[m\r\n"
    f"{ESC}[2mfaint{ESC}[22m {ESC}[5mblink{ESC}[25m {ESC}[8mhid{ESC}[28m {ESC}[53mover{ESC}[55m\r\n"
    f"{ESC}[44mbg then erase{ESC}[K{ESC}[m\r\n  two spaces  \r\n\r\n\r\n"
).encode()
BCE = (
    f"{ESC}[41m{ESC}[2K{ESC}[m\r\n{ESC}[42m{ESC}[5X{ESC}[mxx\r\n{ESC}[45m{ESC}[10C{ESC}[3X{ESC}[m\r\n"
    f"{ESC}[48;2;9;8;7m{ESC}[K{ESC}[m\r\nend"
).encode()

UNICODE = (
    "CJK: 日本語テキスト\r\n"
    "emoji: 😀👍🏽 🇫🇷 👨‍👩‍👧 ok\r\n"
    "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937\r\n"
    "edge: 0123456789012345678世界 wraps wide\r\n"
    "box: ┌─┐│└┘\r\n"
).encode()


def test_plain_log_lines() -> None:
    snap = roundtrip(lines(40, "log line {i} with some words"), 30, 8)
    assert snap.scrollback_lines > 0


def test_long_wrapped_lines() -> None:
    roundtrip(b"x" * 95 + b"\r\n" + b"y" * 20 + b"\r\nshort\r\n" + b"z" * 300, 20, 6)


def test_colors_and_attributes() -> None:
    roundtrip(SGR * 3, 40, 10)


def test_background_erase_on_screen() -> None:
    """Rows made only of cells erased under a coloured pen (no text) are repainted with ECH."""
    roundtrip(BCE, 20, 6)
    roundtrip(lines(10) + BCE, 20, 6)
    roundtrip(lines(10) + f"{ESC}[44m{ESC}[2J{ESC}[m".encode(), 20, 6)
    roundtrip(lines(10) + f"{ESC}[?1049h{ESC}[44m{ESC}[2J{ESC}[1;1H{ESC}[43m{ESC}[K{ESC}[m".encode(), 20, 6)


def test_background_erase_in_history_is_a_known_limit() -> None:
    """Known limit (docs/architecture.md): text-less background-coloured rows in history come back blank. When
    this fails, the limit is gone: turn it into a plain roundtrip(BCE + lines(10), 20, 6)."""
    src = Emulator(20, 6, 100)
    src.feed(BCE + lines(10))
    dst = Emulator(20, 6, 100)
    dst.feed(src.snapshot().data)
    assert _state(src)["lines"] != _state(dst)["lines"]


def test_unicode_wide_combining() -> None:
    roundtrip(UNICODE * 3, 20, 6)


def test_unicode_grapheme_cluster_mode() -> None:
    roundtrip(f"{ESC}[?2027h".encode() + UNICODE * 2, 20, 6)


def test_alt_screen_entered_and_left() -> None:
    stream = lines(12) + f"{ESC}[?1049h{ESC}[Hvim here{ESC}[5;5Hx{ESC}[?1049l".encode() + b"back\r\n$ "
    snap = roundtrip(stream)
    assert not snap.alt_screen and not snap.modes["alt_screen"]


@pytest.mark.parametrize("mode", [1049, 1047, 47])
def test_alt_screen_active_over_primary(mode: int) -> None:
    stream = (
        lines(15, f"{ESC}[3{{i}}mshell {{i}}{ESC}[m".replace("{i}m", "1m"))
        + f"$ vim{ESC}[1m{ESC}(0".encode()
        + f"{ESC}[?{mode}h{ESC}(B{ESC}[H{ESC}[2J{ESC}[44mstatus{ESC}[m{ESC}[3;1H~\r\n~ {ESC}[32mtext{ESC}[4;3H".encode()
    )
    snap = roundtrip(stream, exit_alt=f"{ESC}[?{mode}l".encode())
    assert snap.alt_screen and snap.modes["alt_screen"] and snap.modes[f"alt_screen_{mode}"]
    assert snap.scrollback_lines == 15 + 1 - 6  # the primary's history is carried beneath


def test_alt_screen_primary_keeps_exact_scrollback() -> None:
    stream = lines(300) + f"{ESC}[?1049hALT".encode()
    src = Emulator(20, 6, 50)
    src.feed(stream)
    snap = src.snapshot()
    assert snap.scrollback_lines == 50
    dst = Emulator(20, 6, 50)
    dst.feed(snap.data + f"{ESC}[?1049l".encode())
    src.feed(f"{ESC}[?1049l".encode())
    _assert_same(_state(src, history=50), _state(dst))


def test_scroll_region_and_origin() -> None:
    stream = lines(8) + f"{ESC}[2;5r{ESC}[5;1H".encode() + lines(7, "in region {i}")
    roundtrip(stream)
    roundtrip(stream + f"{ESC}[?6h{ESC}[2;3Hrel".encode())


def test_left_right_margins() -> None:
    roundtrip(f"{ESC}[?69h{ESC}[3;15s{ESC}[2;4r{ESC}[?6h{ESC}[1;1Hmargins{ESC}[2;2H".encode())


def test_resize_in_the_middle() -> None:
    src = Emulator(30, 8, 100)
    ref = lines(20, "before resize, a fairly long line {i}")
    src.feed(ref)
    src.resize(18, 5)
    src.feed(lines(4, "after {i}") + b"tail")
    snap = src.snapshot()
    assert (snap.cols, snap.rows) == (18, 5)
    dst = Emulator(18, 5, 100)
    dst.feed(snap.data)
    _assert_same(_state(src), _state(dst))
    src.resize(40, 10)  # widen again: history reflows, the budget follows
    snap = src.snapshot()
    dst = Emulator(40, 10, 100)
    dst.feed(snap.data)
    _assert_same(_state(src), _state(dst))


def test_cursor_hidden_and_dec_modes() -> None:
    on = [1, 9, 12, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004, 2026, 66]
    stream = (
        b"text"
        + "".join(f"{ESC}[?{n}h" for n in on).encode()
        + f"{ESC}[?25l{ESC}[?7l{ESC}[4h{ESC}[20h".encode()
    )
    snap = roundtrip(stream)
    assert not snap.cursor_visible
    m = snap.modes
    assert m["application_cursor"] and m["mouse_x10"] and m["mouse_normal"] and m["mouse_button"]
    assert m["mouse_any"] and m["focus"] and m["mouse_utf8"] and m["mouse_sgr"] and m["mouse_urxvt"]
    assert m["bracketed_paste"] and m["insert"] and m["linefeed_newline"] and m["application_keypad"]
    assert not m["autowrap"] and not m["cursor_visible"] and not m["origin"] and not m["alt_screen"]


def test_title_and_cwd() -> None:
    stream = f"{ESC}]0;first{ESC}\\{ESC}]2;my títle\x07{ESC}]7;file://host/home/u/My%20Dir\x07$ ".encode()
    snap = roundtrip(stream)
    assert snap.title == "my títle"
    assert snap.cwd == "/home/u/My Dir"
    e = Emulator(10, 3, 10)
    assert e.title == "" and e.cwd is None
    e.feed(stream)
    assert e.title == "my títle" and e.cwd == "/home/u/My Dir"


def test_pending_wrap_charsets_tabs_palette_pen() -> None:
    roundtrip(b"y" * 20)  # cursor in the last column with a wrap pending
    roundtrip(b"ab" + "日本語テキスト世界".encode())  # ...after a wide character
    roundtrip(f'{ESC}(0lqqk{ESC}[1;33;44m{ESC}[1"q'.encode())
    roundtrip(f"{ESC}[3g{ESC}[1;5H{ESC}H{ESC}[1;13H{ESC}H\r\ta\tb".encode())
    roundtrip(f"{ESC}]4;1;rgb:12/34/56{ESC}\\{ESC}]11;rgb:01/02/03{ESC}\\{ESC}[31mred".encode())
    roundtrip(f"{ESC}]8;;https://example.com{ESC}\\link{ESC}[>1u{ESC}[>4;2m".encode())


def test_stream_stopped_mid_sequence() -> None:
    whole = f"abc{ESC}[38;2;1;2;3mX{ESC}]2;title{ESC}\\日本".encode()
    for cut in range(len(whole)):
        head, tail = whole[:cut], whole[cut:]
        src = Emulator(20, 4, 10)
        src.feed(head)
        dst = Emulator(20, 4, 10)
        dst.feed(src.snapshot().data + tail)
        src.feed(tail)
        _assert_same(_state(src), _state(dst))


def test_more_lines_than_scrollback() -> None:
    src = Emulator(20, 6, 30)
    src.feed(lines(500))
    snap = src.snapshot()
    assert snap.scrollback_lines == 30
    dst = Emulator(20, 6, 30)
    dst.feed(snap.data)
    assert _state(dst)["history"] == 30
    _assert_same(_state(src, history=30), _state(dst))
    v = _view(dst)
    assert v.contents().splitlines()[0] == "line 465"  # 500 lines, prompt row, 6 rows: 465..494 in history


def test_scrollback_limit_holds_at_scale() -> None:
    """10k configured lines are all kept (byte budget, not the line option) and exactly 10k are served."""
    src = Emulator(80, 24, 10_000)
    src.feed(lines(12_000, f"{ESC}[32mcolored {{i}} {ESC}[38;2;1;2;3mtruecolor{ESC}[m padding padding"))
    v = _view(src)
    assert v.get("scrollback_rows", "size_t") >= 10_000
    snap = src.snapshot()
    assert snap.scrollback_lines == 10_000
    dst = Emulator(80, 24, 10_000)
    dst.feed(snap.data)
    assert _view(dst).get("scrollback_rows", "size_t") == 10_000
    got = _view(dst).contents().split("\n")
    assert got[0].startswith("colored 1977 ")  # 12000 lines + prompt row: 23 on screen, 10000 before them
    assert got == v.contents().split("\n")[-len(got) :]


def test_no_scrollback() -> None:
    snap = roundtrip(lines(30), scrollback=0)
    assert snap.scrollback_lines == 0


def test_snapshot_does_not_disturb_live_state() -> None:
    e = Emulator(20, 6, 50)
    e.feed(lines(30) + f"{ESC}[?1049h{ESC}[31malt{ESC}]2;t".encode())
    before = _state(e)
    e.snapshot()
    _assert_same(before, _state(e))
    e.close()
    e.close()  # idempotent


# --------------------------------------------------------------------------------------------------------
# Any chunking gives the same state

PIECES = [
    b"plain text ",
    b"\r\n",
    "日本語😀e\u0301".encode(),
    f"{ESC}[1;38;2;200;100;50m".encode(),
    f"{ESC}[m".encode(),
    f"{ESC}]2;title{ESC}\\".encode(),
    f"{ESC}]7;file://h/tmp\x07".encode(),
    f"{ESC}[?1049h".encode(),
    f"{ESC}[?1049l".encode(),
    f"{ESC}[2;4r".encode(),
    f"{ESC}[?25l".encode(),
    f"{ESC}[3;7H".encode(),
    b"y" * 23,
]


# Derandomized: CI runs the same 40 streams every time. Random exploration finds one known class of divergence
# (test_wide_char_wrap_scrolled_by_a_region_is_a_known_limit); run it by hand with derandomize=False to look for more.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
          database=None)
@given(
    parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=25),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_chunking(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    whole = Emulator(12, 4, 20)
    whole.feed(stream)
    chunked = Emulator(12, 4, 20)
    prev = 0
    for p in [*points, len(stream)]:
        chunked.feed(stream[prev:p])
        prev = p
    a, b = whole.snapshot(), chunked.snapshot()
    assert a == b
    _assert_same(_state(whole), _state(chunked))
    replay = Emulator(12, 4, 20)
    replay.feed(a.data)
    _assert_same(_state(whole), _state(replay))


def test_application_keypad_uses_deckpam() -> None:
    """tmux ignores CSI ? 66 h: the snapshot must set the keypad mode with ESC = so any terminal honours it."""
    snap = roundtrip(b"\x1b=keypad")
    assert snap.modes["application_keypad"]
    assert b"\x1b=" in snap.data and b"\x1b[?66h" not in snap.data


def test_wrapped_lines_moved_by_a_scroll_region() -> None:
    """A scroll region can leave a row flagged as continuing a soft wrap under a row that is not wrapped; the
    formatter then misplaced a cell (found by test_any_chunking)."""
    roundtrip(b"plain text \r\nplain text plain text \x1b[2;4r\x1b[3;7Hplain text plain text ", cols=12, rows=4)
    roundtrip(b"x" * 30 + b"\x1b[1;3r\x1b[3;1H\n\n\x1b[r" + b"\r\n" * 5, cols=12, rows=4, scrollback=10)


def test_wide_char_wrap_scrolled_by_a_region_is_a_known_limit() -> None:
    """Known limit (found by random chunking): a row that wrapped before a wide character keeps its wrap flag and
    spacer when a scroll region moves a different row under it; the snapshot re-wraps the joined line, so the
    replay lays the text out differently. When this fails, the limit is gone: make it a plain roundtrip."""
    wide = "日本語😀e\u0301".encode()
    stream = b"plain text " * 5 + wide + b"y" * 23 + b"\x1b[?1049h\x1b[2;4r\x1b[?1049l" + wide
    src = Emulator(12, 4, 20)
    src.feed(stream)
    dst = Emulator(12, 4, 20)
    dst.feed(src.snapshot().data)
    assert _state(src)["lines"] != _state(dst)["lines"]


@pytest.mark.parametrize("dense", [False, True])
def test_exactly_scrollback_lines_are_served_after_60k_lines_with_the_adaptive_budget(dense: bool) -> None:
    """The byte budget starts low (0.8x the row estimate: ~8 MB instead of ~18 for 10k rows) and grows when
    evictions leave history short, so even SGR-dense output keeps (and serves) exactly `scrollback_lines`."""
    e = Emulator(80, 24, 10_000)
    lines = []
    for i in range(60_000):
        if dense:
            lines.append(f"\x1b[3{i % 8};4{i // 8 % 8}m{i:08d} \x1b[38;5;{i % 256}mlog\x1b[38;2;{i % 256};3;4m rgb "
                         f"\x1b[4mul\x1b[0m tail {i * 7919 % 65536:x}\r\n")
        else:
            lines.append(f"2024-01-01 INFO [worker-{i % 16}] request handled id={i * 7919:08x} in {i % 100}ms\r\n")
    data = "".join(lines).encode()
    for i in range(0, len(data), 65536):
        e.feed(data[i : i + 65536])
    st = e.snapshot()
    assert st.scrollback_lines == 10_000
    if dense:  # the 23 last lines are on screen above the cursor's empty row: history starts 10k rows before
        assert b"m00049977 " in st.data[:64] and b"00049976" not in st.data
