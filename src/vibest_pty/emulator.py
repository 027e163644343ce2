"""The terminal emulator behind every session: the only module that touches libghostty-vt (via pyghostty).

Every cffi call lives here. The library is reached through pyghostty's raw `ffi`/`lib` (the C API is a
public alpha): the terminal is built with `ghostty_terminal_new` directly, not through `pyghostty.Terminal`,
so that the scrollback can be bounded in bytes (see `_scrollback_bytes`).

A snapshot is a VT byte string that, written into a fresh terminal of the same size, rebuilds the state:

1. colours changed by OSC 4/10/11/12, the title (OSC 2) and the working directory (OSC 7);
2. the primary screen: the last `scrollback_lines` history rows and the active rows, painted by the VT
   formatter with soft wraps unwrapped (the receiving terminal re-wraps them at the same width), then
   padded with newlines so that exactly the same rows end up in history;
3. when the alternate screen is active: the primary cursor and pen (read from a private clone of the
   terminal switched back to the primary screen), then `CSI ? 1049/1047/47 h`, then the alternate screen;
4. tab stops, scroll margins, the modes that differ from their defaults, the cursor (relative to the
   margins under DECOM), a re-print of the last cell when a wrap is pending, the pen (SGR), charsets,
   character protection, hyperlink, kitty keyboard flags;
5. the unfinished escape sequence or UTF-8 character the stream stopped in, so that the bytes the daemon
   streams after the snapshot finish it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pyghostty._ffi import ffi as _ffi
from pyghostty._ffi import lib as _lib
from pyghostty._ffi import union_fn as _union_fn

# ---------------------------------------------------------------------------------------------------------
# Public data


@dataclass(frozen=True, slots=True)
class ScreenState:
    """What a snapshot carries besides the offset (the session adds that)."""

    data: bytes
    cols: int
    rows: int
    cursor: tuple[int, int]
    cursor_visible: bool
    alt_screen: bool
    modes: dict[str, bool] = field(default_factory=dict)
    title: str = ""
    cwd: str | None = None
    scrollback_lines: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The Snapshot map of the protocol, less `offset` (the session adds it)."""
        return {
            "data": self.data, "cols": self.cols, "rows": self.rows, "cursor": list(self.cursor),
            "cursor_visible": self.cursor_visible, "alt_screen": self.alt_screen, "modes": self.modes,
            "title": self.title, "cwd": self.cwd, "scrollback_lines": self.scrollback_lines,
        }


# Names of the modes reported in ScreenState.modes: (name, number, is_ansi). DEC private unless is_ansi.
MODES: tuple[tuple[str, int, bool], ...] = (
    ("insert", 4, True),  # IRM
    ("linefeed_newline", 20, True),  # LNM
    ("application_cursor", 1, False),  # DECCKM
    ("reverse_video", 5, False),  # DECSCNM
    ("origin", 6, False),  # DECOM
    ("autowrap", 7, False),  # DECAWM
    ("mouse_x10", 9, False),
    ("cursor_blink", 12, False),
    ("cursor_visible", 25, False),  # DECTCEM
    ("reverse_wrap", 45, False),
    ("alt_screen_47", 47, False),
    ("application_keypad", 66, False),  # DECNKM / DECKPAM
    ("left_right_margins", 69, False),  # DECLRMM
    ("mouse_normal", 1000, False),
    ("mouse_button", 1002, False),
    ("mouse_any", 1003, False),
    ("focus", 1004, False),
    ("mouse_utf8", 1005, False),
    ("mouse_sgr", 1006, False),
    ("mouse_alternate_scroll", 1007, False),
    ("mouse_urxvt", 1015, False),
    ("mouse_sgr_pixels", 1016, False),
    ("alt_screen_1047", 1047, False),
    ("alt_screen_1049", 1049, False),
    ("bracketed_paste", 2004, False),
    ("synchronized_output", 2026, False),
    ("grapheme_cluster", 2027, False),
    ("color_scheme_report", 2031, False),
    ("in_band_resize", 2048, False),
)

_ALT_MODES = (1049, 1047, 47)  # preference order when re-entering the alternate screen
_SKIP_MODES = (*_ALT_MODES, 2027)  # handled apart from the other modes
_CONTINUATION_MAX_BYTES = 1 << 20  # longest unfinished sequence kept for the snapshot tail (e.g. OSC 52)
_MODE_RE = re.compile(rb"\x1b\[(\??)(\d+)([hl])")
_DECSTBM_RE = re.compile(rb"\x1b\[(\d+);(\d+)r")
_DECSLRM_RE = re.compile(rb"\x1b\[(\d+);(\d+)s")


class EmulatorError(RuntimeError):
    """A libghostty-vt call failed."""


def _check(res: int, what: str) -> None:
    if res != 0:
        raise EmulatorError(f"{what} failed: {res}")


BUDGET_START = 0.8  # x the row estimate: plain 80-col logs keep 10k rows at 0.8 (measured: ~7.6 MB budget)
BUDGET_MAX = 2.0  # x the row estimate: SGR-dense pages keep ~25% fewer rows per byte than plain ones
BUDGET_GROW = 1.25


def _scrollback_bytes(scrollback_lines: int, cols: int, rows: int, factor: float = BUDGET_MAX) -> int:
    """The byte budget for the page list that keeps `scrollback_lines` rows of history.

    The row estimate is 10 bytes per column plus 64 (pages of 8-byte cells with style/grapheme side tables), plus
    1 MiB for page granularity (pages are evicted whole). The budget starts at BUDGET_START x the estimate and
    grows (see Emulator.adapt_budget) when evictions leave fewer than `scrollback_lines` rows, up to BUDGET_MAX:
    measured at 80x24 with 10k lines after 60k lines of output, plain logs serve all 10k rows at 0.8x (a 2x
    budget filled 17.5 MB), SGR-dense output 8535 at 0.8x and all at 1.0x.
    """
    if scrollback_lines <= 0:
        return 0
    return int((scrollback_lines + rows) * (10 * cols + 64) * factor) + (1 << 20)


# ---------------------------------------------------------------------------------------------------------
# Low-level helpers over the C API. `term` is always a `GhosttyTerminal` handle (cdata pointer).


def _new_sized(ctype: str) -> Any:
    """`ffi.new` a struct that follows the size-field convention, nested sizes set too."""
    p = _ffi.new(ctype + "*")
    _set_sizes(p)
    return p


def _set_sizes(p: Any) -> None:
    t = _ffi.typeof(p).item
    for name, f in t.fields:
        if name == "size":
            p.size = _ffi.sizeof(t)
        elif f.type.kind == "struct":
            _set_sizes(_ffi.addressof(p[0], name))


def _get(term: Any, key: int, ctype: str) -> Any:
    out = _ffi.new(ctype + "*")
    _check(_lib.ghostty_terminal_get(term, key, out), f"terminal_get {key}")
    return out[0]


def _get_str(term: Any, key: int) -> bytes:
    s = _ffi.new("GhosttyString*")
    res = _lib.ghostty_terminal_get(term, key, s)
    if res == _lib.GHOSTTY_NO_VALUE or s.len == 0:
        return b""
    _check(res, f"terminal_get {key}")
    return bytes(_ffi.buffer(s.ptr, s.len))


def _mode(term: Any, n: int, ansi: bool) -> bool:
    c = _ffi.new("GhosttyTerminalModeConfig*")
    c.mode = (n & 0x7FFF) | (int(ansi) << 15)  # ghostty_mode_new's packing (static inline in C)
    if _lib.ghostty_terminal_get(term, _lib.GHOSTTY_TERMINAL_DATA_MODE, c) != 0:
        return False
    return bool(c.value)


def _grid_ref(term: Any, x: int, y: int, tag: int) -> Any:
    fn = _union_fn(
        "ghostty_terminal_grid_ref", "GhosttyResult(*)(GhosttyTerminal, GhosttyPointS, GhosttyGridRef*)"
    )
    pt = _ffi.new("GhosttyPointS*")
    pt.tag = tag
    pt.value.x, pt.value.y = x, y
    ref = _new_sized("GhosttyGridRef")
    _check(fn(term, pt[0], ref), f"grid_ref {x},{y}")
    return ref


def _selection(term: Any, x0: int, y0: int, x1: int, y1: int, tag: int) -> Any:
    sel = _new_sized("GhosttySelection")
    sel.start = _grid_ref(term, x0, y0, tag)[0]
    sel.end = _grid_ref(term, x1, y1, tag)[0]
    return sel


def _format(
    term: Any, sel: Any, *, unwrap: bool = False, emit: int | None = None, trim: bool = False, **extras: bool
) -> bytes:
    """VT-format `sel` (a GhosttySelection*) of the active screen with the named extras on.

    Extras are GhosttyFormatterTerminalExtra fields; `screen_<name>` sets GhosttyFormatterScreenExtra fields.
    """
    opts = _new_sized("GhosttyFormatterTerminalOptions")
    opts.emit = _lib.GHOSTTY_FORMATTER_FORMAT_VT if emit is None else emit
    opts.unwrap = unwrap
    opts.trim = trim
    for k, v in extras.items():
        if k.startswith("screen_"):
            setattr(opts.extra.screen, k[7:], v)
        else:
            setattr(opts.extra, k, v)
    opts.selection = sel
    fmt = _ffi.new("GhosttyFormatter*")
    _check(_lib.ghostty_formatter_terminal_new(_ffi.NULL, fmt, term, opts[0]), "formatter_terminal_new")
    try:
        ptr = _ffi.new("uint8_t**")
        n = _ffi.new("size_t*")
        _check(_lib.ghostty_formatter_format_alloc(fmt[0], _ffi.NULL, ptr, n), "formatter_format_alloc")
        if n[0] == 0 or ptr[0] == _ffi.NULL:
            return b""
        try:
            return bytes(_ffi.buffer(ptr[0], n[0]))
        finally:
            _lib.ghostty_free(_ffi.NULL, ptr[0], n[0])
    finally:
        _lib.ghostty_formatter_free(fmt[0])


def _extras(term: Any, probe: Any, *, before: bool = False, **extras: bool) -> bytes:
    """Just the extras' bytes: format a one-cell probe selection with and without them and cut the cell off.

    The formatter writes tab stops and modes (`before=True`) ahead of the content, everything else after.
    """
    cell = _format(term, probe)
    full = _format(term, probe, **extras)
    if not cell:
        return full
    if before and full.endswith(cell):
        return full[: len(full) - len(cell)]
    if not before and full.startswith(cell):
        return full[len(cell) :]
    raise EmulatorError("cannot separate formatter extras from content")  # pragma: no cover


def _continuation(term: Any) -> bytes:
    """The bytes of the escape sequence / UTF-8 character the parser is in the middle of."""
    n = _ffi.new("size_t*")
    res = _lib.ghostty_terminal_continuation_buf(term, _ffi.NULL, 0, n)
    if n[0] == 0:
        return b""
    if res not in (0, _lib.GHOSTTY_OUT_OF_SPACE):
        return b""
    buf = _ffi.new("uint8_t[]", n[0])
    if _lib.ghostty_terminal_continuation_buf(term, buf, n[0], n) != 0:
        return b""
    return bytes(_ffi.buffer(buf, n[0]))


def _clone(term: Any) -> Any:
    """A private deep copy of `term` (both screens, history, modes) via the snapshot codec; caller frees."""
    ptr = _ffi.new("uint8_t**")
    n = _ffi.new("size_t*")
    _check(_lib.ghostty_snapshot_encode_alloc(term, _ffi.NULL, ptr, n), "snapshot_encode")
    try:
        dec = _ffi.new("GhosttySnapshotDecoder*")
        _check(_lib.ghostty_snapshot_decoder_new_buf(_ffi.NULL, dec, ptr[0], n[0]), "snapshot_decoder_new")
        try:
            out = _ffi.new("GhosttyTerminal*")
            _check(_lib.ghostty_snapshot_decoder_decode(dec[0], out), "snapshot_decode")
            return out[0]
        finally:
            _lib.ghostty_snapshot_decoder_free(dec[0])
    finally:
        _lib.ghostty_free(_ffi.NULL, ptr[0], n[0])


def _osc_color(code: str, c: Any) -> bytes:
    return f"\x1b]{code};rgb:{c.r:02x}/{c.g:02x}/{c.b:02x}\x1b\\".encode()


def _colors(term: Any) -> bytes:
    """OSC 4 for palette entries that differ from the default, OSC 10/11/12 for changed dynamic colours."""
    out = bytearray()
    pal = _ffi.new("GhosttyColorRgb[256]")
    dflt = _ffi.new("GhosttyColorRgb[256]")
    if (
        _lib.ghostty_terminal_get(term, _lib.GHOSTTY_TERMINAL_DATA_COLOR_PALETTE, pal) == 0
        and _lib.ghostty_terminal_get(term, _lib.GHOSTTY_TERMINAL_DATA_COLOR_PALETTE_DEFAULT, dflt) == 0
        and bytes(_ffi.buffer(pal)) != bytes(_ffi.buffer(dflt))
    ):
        for i in range(256):
            if (pal[i].r, pal[i].g, pal[i].b) != (dflt[i].r, dflt[i].g, dflt[i].b):
                out += _osc_color(f"4;{i}", pal[i])
    for code, key, dkey in (
        (
            "10",
            _lib.GHOSTTY_TERMINAL_DATA_COLOR_FOREGROUND,
            _lib.GHOSTTY_TERMINAL_DATA_COLOR_FOREGROUND_DEFAULT,
        ),
        (
            "11",
            _lib.GHOSTTY_TERMINAL_DATA_COLOR_BACKGROUND,
            _lib.GHOSTTY_TERMINAL_DATA_COLOR_BACKGROUND_DEFAULT,
        ),
        ("12", _lib.GHOSTTY_TERMINAL_DATA_COLOR_CURSOR, _lib.GHOSTTY_TERMINAL_DATA_COLOR_CURSOR_DEFAULT),
    ):
        c = _ffi.new("GhosttyColorRgb*")
        d = _ffi.new("GhosttyColorRgb*")
        if _lib.ghostty_terminal_get(term, key, c) != 0:
            continue
        has_default = _lib.ghostty_terminal_get(term, dkey, d) == 0
        if not has_default or (c.r, c.g, c.b) != (d.r, d.g, d.b):
            out += _osc_color(code, c)
    return bytes(out)


class _View:
    """Read-only facts about one terminal handle, used while building a snapshot."""

    def __init__(self, term: Any) -> None:
        self.t = term
        self.cols = int(_get(term, _lib.GHOSTTY_TERMINAL_DATA_COLS, "uint16_t"))
        self.rows = int(_get(term, _lib.GHOSTTY_TERMINAL_DATA_ROWS, "uint16_t"))
        self.total = int(_get(term, _lib.GHOSTTY_TERMINAL_DATA_TOTAL_ROWS, "size_t"))
        self.history = self.total - self.rows
        self.cx = int(_get(term, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_X, "uint16_t"))
        self.cy = int(_get(term, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_Y, "uint16_t"))
        self.pending_wrap = bool(_get(term, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_PENDING_WRAP, "bool"))
        self.alt = (
            int(_get(term, _lib.GHOSTTY_TERMINAL_DATA_ACTIVE_SCREEN, "GhosttyTerminalScreen"))
            == _lib.GHOSTTY_TERMINAL_SCREEN_ALTERNATE
        )
        self.probe = _selection(term, 0, 0, 0, 0, _lib.GHOSTTY_POINT_TAG_ACTIVE)

    def blank_rows(self, first: int, last: int) -> list[bool]:
        """For rows first..last: True where the row has no text (one plain-text formatting pass: rows come out
        one per line, trailing blank ones trimmed; a per-row formatter call costs seconds on a 1000-row screen)."""
        sel = _selection(self.t, 0, first, self.cols - 1, last, _lib.GHOSTTY_POINT_TAG_SCREEN)
        lines = _format(self.t, sel, emit=_lib.GHOSTTY_FORMATTER_FORMAT_PLAIN, trim=True).split(b"\n")
        n = last - first + 1
        if lines == [b""]:
            lines = []
        if len(lines) > n:
            raise EmulatorError(f"plain formatting gave {len(lines)} lines for {n} rows")
        return [not line for line in lines] + [True] * (n - len(lines))

    def content(self, history_rows: int, pad: bool) -> bytes:
        """The last `history_rows` history rows and the active area; `pad` adds the trailing blank rows."""
        start = self.history - history_rows
        last = self.total - 1
        blank = self.blank_rows(start, last)
        while last > start and blank[last - start]:
            last -= 1
        # The formatter joins a row marked "continues a soft wrap" onto the row above even when that row is not
        # wrapped (scroll regions leave rows so), misplacing a cell: format such rows as separate lines.
        pieces = []
        first = start
        for y in self.orphan_continuations(start + 1, last):
            sel = _selection(self.t, 0, first, self.cols - 1, y - 1, _lib.GHOSTTY_POINT_TAG_SCREEN)
            pieces.append(_format(self.t, sel, unwrap=True))
            first = y
        sel = _selection(self.t, 0, first, self.cols - 1, last, _lib.GHOSTTY_POINT_TAG_SCREEN)
        pieces.append(_format(self.t, sel, unwrap=True))
        out = b"\r\n".join(pieces)
        if pad:
            out += b"\r\n" * (self.total - 1 - last)
        return out

    def orphan_continuations(self, first: int, last: int) -> list[int]:
        """Rows in first..last flagged as a soft-wrap continuation whose previous row is not wrapped.
        One grid ref and row handle are reused: this walks every row of a 10k-line history on attach."""
        grid_ref = _union_fn(
            "ghostty_terminal_grid_ref", "GhosttyResult(*)(GhosttyTerminal, GhosttyPointS, GhosttyGridRef*)"
        )
        row_of, row_get = _lib.ghostty_grid_ref_row, _lib.ghostty_row_get
        wrap, cont = _lib.GHOSTTY_ROW_DATA_WRAP, _lib.GHOSTTY_ROW_DATA_WRAP_CONTINUATION
        pt = _ffi.new("GhosttyPointS*")
        pt.tag = _lib.GHOSTTY_POINT_TAG_SCREEN
        pt.value.x = 0
        ref = _new_sized("GhosttyGridRef")
        row = _ffi.new("GhosttyRow*")
        flag = _ffi.new("bool*")
        t = self.t
        out = []
        prev_wrap = False
        for y in range(max(first - 1, 0), last + 1):
            pt.value.y = y
            if grid_ref(t, pt[0], ref) or row_of(ref, row):
                raise EmulatorError(f"grid ref of row {y} failed")
            if not prev_wrap and y >= first:
                row_get(row[0], cont, flag)
                if flag[0]:
                    out.append(y)
            row_get(row[0], wrap, flag)
            prev_wrap = bool(flag[0])
        return out

    def bg_repair(self) -> bytes:
        """Repaint active rows that hold only background-coloured erased cells (EL/ED/ECH under a coloured
        pen): the formatter skips rows without text. Each run becomes CUP + SGR 48 + ECH, which makes the
        same bg-only cells. Call right after the content, before margins and modes are restored."""
        out = bytearray()
        cell = _ffi.new("GhosttyCell*")
        tag = _ffi.new("GhosttyCellContentTag*")
        pal = _ffi.new("uint8_t*")
        rgb = _ffi.new("GhosttyColorRgb*")
        grid_ref = _union_fn(
            "ghostty_terminal_grid_ref", "GhosttyResult(*)(GhosttyTerminal, GhosttyPointS, GhosttyGridRef*)"
        )
        pt = _ffi.new("GhosttyPointS*")
        pt.tag = _lib.GHOSTTY_POINT_TAG_ACTIVE
        ref = _new_sized("GhosttyGridRef")
        blank = self.blank_rows(self.history, self.total - 1)
        for y in range(self.rows):
            if not blank[y]:
                continue
            runs: list[tuple[int, int, str]] = []
            pt.value.y = y
            for x in range(self.cols):
                pt.value.x = x
                _check(grid_ref(self.t, pt[0], ref), "grid_ref")
                _check(_lib.ghostty_grid_ref_cell(ref, cell), "cell")
                _check(_lib.ghostty_cell_get(cell[0], _lib.GHOSTTY_CELL_DATA_CONTENT_TAG, tag), "cell tag")
                if tag[0] == _lib.GHOSTTY_CELL_CONTENT_BG_COLOR_PALETTE:
                    _check(
                        _lib.ghostty_cell_get(cell[0], _lib.GHOSTTY_CELL_DATA_COLOR_PALETTE, pal), "cell bg"
                    )
                    sgr = f"48;5;{pal[0]}"
                elif tag[0] == _lib.GHOSTTY_CELL_CONTENT_BG_COLOR_RGB:
                    _check(_lib.ghostty_cell_get(cell[0], _lib.GHOSTTY_CELL_DATA_COLOR_RGB, rgb), "cell bg")
                    sgr = f"48;2;{rgb.r};{rgb.g};{rgb.b}"
                else:
                    continue
                if runs and runs[-1][2] == sgr and runs[-1][0] + runs[-1][1] == x:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1, sgr)
                else:
                    runs.append((x, 1, sgr))
            for x, n, sgr in runs:
                out += f"\x1b[{y + 1};{x + 1}H\x1b[0;{sgr}m\x1b[{n}X".encode()
        if out:
            out += b"\x1b[0m"
        return bytes(out)

    def cell_vt(self, x: int, y: int) -> bytes:
        return _format(self.t, _selection(self.t, x, y, x, y, _lib.GHOSTTY_POINT_TAG_ACTIVE))

    def cell_wide(self, x: int, y: int) -> int:
        cell = _ffi.new("GhosttyCell*")
        _check(
            _lib.ghostty_grid_ref_cell(_grid_ref(self.t, x, y, _lib.GHOSTTY_POINT_TAG_ACTIVE), cell), "cell"
        )
        wide = _ffi.new("GhosttyCellWide*")
        _check(_lib.ghostty_cell_get(cell[0], _lib.GHOSTTY_CELL_DATA_WIDE, wide), "cell wide")
        return int(wide[0])

    def cursor_tail(self, top: int = 0, left: int = 0) -> bytes:
        """CUP (relative to `top`/`left` margins), the pending-wrap re-print, then the pen and its friends."""
        out = bytearray(f"\x1b[{self.cy - top + 1};{self.cx - left + 1}H".encode())
        if self.pending_wrap and self.cx == self.cols - 1:
            # Writing the last cell again leaves the cursor there with the wrap pending, as it was.
            x = self.cx
            if x > 0 and self.cell_wide(x, self.cy) == _lib.GHOSTTY_CELL_WIDE_SPACER_TAIL:
                x -= 1
            cell = self.cell_vt(x, self.cy)
            if cell:
                out += f"\x1b[{self.cy - top + 1};{x - left + 1}H".encode() + cell
        out += self.pen()
        return bytes(out)

    def pen(self) -> bytes:
        return _extras(
            self.t,
            self.probe,
            screen_style=True,
            screen_charsets=True,
            screen_protection=True,
            screen_hyperlink=True,
            screen_kitty_keyboard=True,
        )

    def pen_reset(self) -> bytes:
        """Undo what `pen` set (for painting the alternate screen after the primary's pen was restored)."""
        out = bytearray(b"\x1b[0m")
        if _extras(self.t, self.probe, screen_protection=True):
            out += b'\x1b[0"q'
        if _extras(self.t, self.probe, screen_hyperlink=True):
            out += b"\x1b]8;;\x1b\\"
        if cs := _extras(self.t, self.probe, screen_charsets=True):
            for m in re.finditer(rb"\x1b([()*+]).", cs):
                out += b"\x1b" + m.group(1) + b"B"
            out += b"\x0f"
        return bytes(out)


# ---------------------------------------------------------------------------------------------------------


class Emulator:
    """A headless terminal of cols x rows keeping `scrollback_lines` lines of history.

    Not thread-safe: call every method from one thread (the emulator worker, through EmulatorHost). cffi releases
    the GIL during native calls, so two threads touching one Emulator would race inside libghostty-vt.
    """

    def __init__(self, cols: int, rows: int, scrollback_lines: int) -> None:
        if cols <= 0 or rows <= 0 or cols > 0xFFFF or rows > 0xFFFF:
            raise ValueError(f"bad terminal size {cols}x{rows}")
        self.cols = cols
        self.rows = rows
        self.scrollback_lines = max(0, scrollback_lines)
        t = _ffi.new("GhosttyTerminal*")
        _check(_lib.ghostty_terminal_new(_ffi.NULL, t, cols, rows), "terminal_new")
        self._t: Any = t[0]
        self._replies = bytearray()
        self._budget = BUDGET_START
        self._history_seen = 0
        try:
            self._set_size_t(_lib.GHOSTTY_TERMINAL_OPT_CONTINUATION_MAX_BYTES, _CONTINUATION_MAX_BYTES)
            self._apply_scrollback_limit()
        except Exception:
            _lib.ghostty_terminal_free(self._t)
            raise

    def _set_size_t(self, opt: int, value: int) -> None:
        _check(_lib.ghostty_terminal_set(self._t, opt, _ffi.new("size_t*", value)), f"terminal_set {opt}")

    def _apply_scrollback_limit(self) -> None:
        self._set_size_t(
            _lib.GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_BYTES,
            _scrollback_bytes(self.scrollback_lines, self.cols, self.rows, self._budget),
        )

    def adapt_budget(self) -> None:
        """Grow the byte budget when evictions leave fewer history rows than `scrollback_lines` (dense styles,
        graphemes, hyperlinks cost more per row than the estimate): the history shrank while short."""
        if self._budget >= BUDGET_MAX or not self.scrollback_lines:
            return
        history = int(_get(self._t, _lib.GHOSTTY_TERMINAL_DATA_TOTAL_ROWS, "size_t")) - self.rows
        if history < self._history_seen and history < self.scrollback_lines:
            self._budget = min(BUDGET_MAX, self._budget * BUDGET_GROW)
            self._apply_scrollback_limit()
        self._history_seen = history

    @property
    def closed(self) -> bool:
        return self._t is None

    def _live(self) -> Any:
        if self._t is None:
            raise EmulatorError("emulator is closed")
        return self._t

    def feed(self, data: bytes) -> None:
        """Process output bytes (any chunking, splits mid-UTF-8 or mid-escape are fine)."""
        if data:
            _lib.ghostty_terminal_vt_write(self._live(), data, len(data))
            self.adapt_budget()

    def resize(self, cols: int, rows: int) -> None:
        """Resize; the primary screen reflows. The scrollback byte budget follows the width."""
        if cols <= 0 or rows <= 0 or cols > 0xFFFF or rows > 0xFFFF:
            raise ValueError(f"bad terminal size {cols}x{rows}")
        t = self._live()
        if cols > self.cols or rows > self.rows:  # grow the budget before the reflow needs it
            self.cols, self.rows = max(cols, self.cols), max(rows, self.rows)
            self._apply_scrollback_limit()
        _check(_lib.ghostty_terminal_resize(t, cols, rows, 8, 16), "resize")
        self.cols, self.rows = cols, rows
        self._apply_scrollback_limit()

    @property
    def title(self) -> str:
        return _title_text(_get_str(self._live(), _lib.GHOSTTY_TERMINAL_DATA_TITLE))

    @property
    def cwd(self) -> str | None:
        """The directory reported by OSC 7 (a path, not a URL), or None."""
        return _pwd_path(_get_str(self._live(), _lib.GHOSTTY_TERMINAL_DATA_PWD))

    def text(self, which: str | bool = False) -> str:
        """Plain text, soft-wrapped lines joined and trailing blanks trimmed, of `which`: "screen" (the active
        rows), "scrollback" (the served history: the last `scrollback_lines` rows) or "all" (both). A bool is the
        older form: True is "all", False "screen"."""
        if isinstance(which, bool):
            which = "all" if which else "screen"
        t = self._live()
        view = _View(t)
        first = view.history - min(view.history, self.scrollback_lines) if which != "screen" else view.history
        last = view.history - 1 if which == "scrollback" else view.total - 1
        if last < first:
            return ""
        sel = _selection(t, 0, first, view.cols - 1, last, _lib.GHOSTTY_POINT_TAG_SCREEN)
        out = _format(t, sel, emit=_lib.GHOSTTY_FORMATTER_FORMAT_PLAIN, unwrap=True, trim=True)
        return out.decode("utf-8", "replace")

    def modes(self) -> dict[str, bool]:
        """Every mode in MODES by name, plus `alt_screen` (whether the alternate screen is active)."""
        t = self._live()
        out = {name: _mode(t, n, ansi) for name, n, ansi in MODES}
        out["alt_screen"] = self._alt_active()
        return out

    def _alt_active(self) -> bool:
        scr = _get(self._live(), _lib.GHOSTTY_TERMINAL_DATA_ACTIVE_SCREEN, "GhosttyTerminalScreen")
        return bool(int(scr) == _lib.GHOSTTY_TERMINAL_SCREEN_ALTERNATE)

    def take_replies(self) -> bytes:
        """Bytes the terminal answered on its own since the last call (query replies) for the PTY; the queries
        module wires libghostty's WRITE_PTY callback into `_replies`."""
        out, self._replies = bytes(self._replies), bytearray()
        return out

    def snapshot_wire(self, max_bytes: int = 1 << 62) -> dict[str, Any]:
        return self.snapshot(max_bytes).to_wire()

    def snapshot(self, max_bytes: int = 1 << 62) -> ScreenState:
        """The state as VT bytes for a fresh terminal of the same size, plus the parsed facts.

        Cost grows with the history served (about 20-30 ms for 10k lines at 80 columns, more with the
        alternate screen active, which clones the terminal); the live terminal is not modified. When `data`
        would pass `max_bytes`, history is served from fewer rows (the oldest are dropped) until it fits;
        `scrollback_lines` says how many were served.
        """
        cap = self.scrollback_lines
        st = self._snapshot(cap)
        while len(st.data) > max_bytes and st.scrollback_lines > 0:
            # History dominates a big snapshot: scale the rows by the excess, with 10% to spare, at least -1.
            keep = int(st.scrollback_lines * max_bytes / len(st.data) * 0.9)
            cap = max(0, min(keep, st.scrollback_lines - 1))
            st = self._snapshot(cap)
        return st

    def _snapshot(self, history_cap: int) -> ScreenState:
        t = self._live()
        live = _View(t)
        modes = self.modes()
        title_b = _get_str(t, _lib.GHOSTTY_TERMINAL_DATA_TITLE)
        pwd_b = _get_str(t, _lib.GHOSTTY_TERMINAL_DATA_PWD)
        out = bytearray(_colors(t))
        if title_b:
            out += b"\x1b]2;" + _title_text(title_b).encode() + b"\x1b\\"
        if pwd_b:
            out += b"\x1b]7;" + _strip_controls(pwd_b) + b"\x1b\\"

        served = 0
        if modes["grapheme_cluster"]:  # changes character widths, so it must precede the content
            out += b"\x1b[?2027h"
        if live.alt:
            alt_mode = next((n for n in _ALT_MODES if _mode(t, n, False)), 1049)
            served, pen_reset = self._primary_under_alt(out, alt_mode, history_cap)
            out += f"\x1b[?{alt_mode}h\x1b[H".encode() + pen_reset
            out += live.content(0, pad=False)
        else:
            served = min(live.history, history_cap)
            out += live.content(served, pad=True)
        out += live.bg_repair()

        # Terminal-level state: tab stops, margins, modes, then the cursor and the pen.
        out += _extras(t, live.probe, before=True, tabstops=True)
        out += _extras(t, live.probe, keyboard=True)
        # Modes before margins: DECSLRM (CSI l;r s) is only understood once mode 69 is set.
        mode_seq = _extras(t, live.probe, before=True, modes=True)
        out += b"".join(
            _portable_mode(m.group(0))
            for m in _MODE_RE.finditer(mode_seq)
            if not (m.group(1) and int(m.group(2)) in _SKIP_MODES)
        )
        margins = _extras(t, live.probe, scrolling_region=True)
        out += margins
        top = left = 0
        if modes["origin"]:
            if m := _DECSTBM_RE.search(margins):
                top = int(m.group(1)) - 1
            if m := _DECSLRM_RE.search(margins):
                left = int(m.group(1)) - 1
        out += live.cursor_tail(top, left)
        out += _continuation(t)
        return ScreenState(
            data=bytes(out),
            cols=live.cols,
            rows=live.rows,
            cursor=(live.cx, live.cy),
            cursor_visible=bool(_get(t, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_VISIBLE, "bool")),
            alt_screen=live.alt,
            modes=modes,
            title=_title_text(title_b),
            cwd=_pwd_path(pwd_b),
            scrollback_lines=served,
        )

    def _primary_under_alt(self, out: bytearray, alt_mode: int, history_cap: int) -> tuple[int, bytes]:
        """Append the primary screen (history, rows, cursor, pen) as it will be when the alt screen is left.

        Returns the history rows served and the bytes that undo the primary's pen for the alt screen."""
        clone = _clone(self._live())
        try:
            # CAN ends whatever sequence the clone's parser is in; then leave the alt screen the way the
            # application would, so that 1049 restores the saved cursor.
            seq = f"\x18\x1b[?{alt_mode}l".encode()
            _lib.ghostty_terminal_vt_write(clone, seq, len(seq))
            v = _View(clone)
            served = min(v.history, history_cap)
            out += v.content(served, pad=True)
            out += v.bg_repair()
            out += v.cursor_tail()
            return served, v.pen_reset()
        finally:
            _lib.ghostty_terminal_free(clone)

    def close(self) -> None:
        """Free native memory now. Further calls raise EmulatorError."""
        if self._t is not None:
            _lib.ghostty_terminal_free(self._t)
            self._t = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _portable_mode(seq: bytes) -> bytes:
    """Application keypad as DECKPAM/DECKPNM (ESC = / ESC >): terminals such as tmux ignore CSI ? 66 h/l."""
    if seq == b"\x1b[?66h":
        return b"\x1b="
    if seq == b"\x1b[?66l":
        return b"\x1b>"
    return seq


def _strip_controls(b: bytes) -> bytes:
    return bytes(c for c in b if c >= 0x20 and c != 0x7F)


def _pwd_path(url: bytes) -> str | None:
    """The path of an OSC 7 `file://host/path` URL (percent-decoded); a bare path is taken as is. A path with
    control characters (`%1b]52;...` decodes to a real ESC: an escape sequence, not a directory) is not taken."""
    path = _pwd_url_path(url)
    return None if path is None or _C0_C1.search(path) else path


_C0_C1 = re.compile("[\x00-\x1f\x7f-\x9f]")


def _title_text(b: bytes) -> str:
    """A title as text without C0, DEL or C1 (U+0080..U+009F) controls (libghostty keeps C1 in titles)."""
    return _C0_C1.sub("", b.decode("utf-8", "replace"))


def _pwd_url_path(url: bytes) -> str | None:
    if not url:
        return None
    s = url.decode("utf-8", "replace")
    if s.startswith("file://"):
        p = urllib.parse.urlsplit(s)
        return urllib.parse.unquote(p.path) or None
    if s.startswith("/"):
        return s
    return None
