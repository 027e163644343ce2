"""Snapshot composition: the state of a terminal as a VT byte string plus the parsed facts (`ScreenState`).

Reads the terminal only through the C-API layer (`vt`). A snapshot is a VT byte string that, written into a fresh
terminal of the same size, rebuilds the state:

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

The cost follows the content: rows are formatted natively in a few calls per screen, and the one per-cell pass
(`bg_repair`, for rows holding only erased coloured cells) reads a row's cells in one call and skips rows of
default cells (tests/test_snapshot_cost.py counts the calls).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from . import vt

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
_MODE_RE = re.compile(rb"\x1b\[(\??)(\d+)([hl])")
_DECSTBM_RE = re.compile(rb"\x1b\[(\d+);(\d+)r")
_DECSLRM_RE = re.compile(rb"\x1b\[(\d+);(\d+)s")


def modes(t: vt.Term) -> dict[str, bool]:
    """Every mode in MODES by name, plus `alt_screen` (whether the alternate screen is active)."""
    out = {name: vt.mode(t, n, ansi) for name, n, ansi in MODES}
    out["alt_screen"] = vt.alt_active(t)
    return out


def snapshot(t: vt.Term, scrollback_lines: int, max_bytes: int = 1 << 62) -> ScreenState:
    """The state of `t` as VT bytes for a fresh terminal of the same size, plus the parsed facts, serving at most
    `scrollback_lines` history rows; the terminal's state is not modified (`bg_repair`'s render state may clear
    its dirty-row flags, which nothing here reads).

    When `data` would pass `max_bytes`, history is served from fewer rows (the oldest are dropped) until it
    fits; `scrollback_lines` says how many were served.
    """
    rows = vt.size(t)[1]
    cap = scrollback_lines  # not clamped to the live history: under the alt screen it is the primary's that counts
    while True:
        try:  # formatting stops at max_bytes while history is served: an oversized attempt costs no more than that
            st = _snapshot(t, cap, max_bytes if cap > 0 else None)
            break
        except vt.TooLarge as e:
            # `e.rows` rows (history first, then the screen's) fitted: keep 90% of them, less the screen's rows.
            cap = max(0, min(cap - 1, int(e.rows * 0.9) - rows))
    while len(st.data) > max_bytes and st.scrollback_lines > 0:
        # History dominates a big snapshot: scale the rows by the excess, with 10% to spare, at least -1.
        keep = int(st.scrollback_lines * max_bytes / len(st.data) * 0.9)
        cap = max(0, min(keep, st.scrollback_lines - 1))
        del st  # before the next attempt: two such blocks at once would double the peak
        st = _snapshot(t, cap)
    return st


def _snapshot(t: vt.Term, history_cap: int, limit: int | None = None) -> ScreenState:
    """One attempt at serving `history_cap` history rows; the content formatting raises vt.TooLarge (with `rows`
    set) past `limit` bytes."""
    live = _View(t)
    mode_map = modes(t)
    title_b = vt.title(t)
    pwd_b = vt.pwd(t)
    # The parts are joined once at the end: a dense 1000x1000 screen's content is tens of MiB, and every copy of
    # it (bytearray growth, `bytes(out)`) was one more such block at the peak of the emulator process's RSS.
    out: list[bytes] = [_colors(t)]
    if title_b:
        out.append(b"\x1b]2;" + title_text(title_b).encode() + b"\x1b\\")
    if pwd_b:
        out.append(b"\x1b]7;" + _strip_controls(pwd_b) + b"\x1b\\")

    served = 0
    if mode_map["grapheme_cluster"]:  # changes character widths, so it must precede the content
        out.append(b"\x1b[?2027h")
    if live.alt:
        alt_mode = next((n for n in _ALT_MODES if vt.mode(t, n, False)), 1049)
        served, pen_reset = _primary_under_alt(t, out, alt_mode, history_cap, limit)
        out.append(f"\x1b[?{alt_mode}h\x1b[H".encode() + pen_reset)
        out += live.content(0, pad=False)
    else:
        served = min(live.history, history_cap)
        out += live.content(served, pad=True, limit=limit)
    out.append(live.bg_repair())

    # Terminal-level state: tab stops, margins, modes, then the cursor and the pen.
    out.append(live.extras(before=True, tabstops=True))
    out.append(live.extras(keyboard=True))
    # Modes before margins: DECSLRM (CSI l;r s) is only understood once mode 69 is set.
    mode_seq = live.extras(before=True, modes=True)
    out.extend(
        _portable_mode(m.group(0))
        for m in _MODE_RE.finditer(mode_seq)
        if not (m.group(1) and int(m.group(2)) in _SKIP_MODES)
    )
    margins = live.extras(scrolling_region=True)
    out.append(margins)
    top = left = 0
    if mode_map["origin"]:
        if m := _DECSTBM_RE.search(margins):
            top = int(m.group(1)) - 1
        if m := _DECSLRM_RE.search(margins):
            left = int(m.group(1)) - 1
    out.append(live.cursor_tail(top, left))
    out.append(vt.continuation(t))
    data = b"".join(out)
    del out
    return ScreenState(
        data=data,
        cols=live.cols,
        rows=live.rows,
        cursor=(live.cx, live.cy),
        cursor_visible=vt.cursor_visible(t),
        alt_screen=live.alt,
        modes=mode_map,
        title=title_text(title_b),
        cwd=pwd_path(pwd_b),
        scrollback_lines=served,
    )


def _primary_under_alt(
    t: vt.Term, out: list[bytes], alt_mode: int, history_cap: int, limit: int | None = None
) -> tuple[int, bytes]:
    """Append the primary screen (history, rows, cursor, pen) as it will be when the alt screen is left.

    Returns the history rows served and the bytes that undo the primary's pen for the alt screen."""
    clone = vt.clone(t)
    try:
        # CAN ends whatever sequence the clone's parser is in; then leave the alt screen the way the
        # application would, so that 1049 restores the saved cursor.
        vt.write(clone, f"\x18\x1b[?{alt_mode}l".encode())
        v = _View(clone)
        served = min(v.history, history_cap)
        out += v.content(served, pad=True, limit=limit)
        out.append(v.bg_repair())
        out.append(v.cursor_tail())
        return served, v.pen_reset()
    finally:
        vt.terminal_free(clone)


def _osc_color(code: str, rgb: vt.Rgb) -> bytes:
    r, g, b = rgb
    return f"\x1b]{code};rgb:{r:02x}/{g:02x}/{b:02x}\x1b\\".encode()


def _colors(t: vt.Term) -> bytes:
    """OSC 4 for palette entries that differ from the default, OSC 10/11/12 for changed dynamic colours."""
    out = bytearray()
    for i, rgb in vt.palette_changes(t):
        out += _osc_color(f"4;{i}", rgb)
    for code, rgb in vt.dynamic_color_changes(t):
        out += _osc_color(code, rgb)
    return bytes(out)


class _View:
    """Read-only facts about one terminal handle, used while building a snapshot."""

    def __init__(self, t: vt.Term) -> None:
        self.t = t
        self.cols, self.rows = vt.size(t)
        self.total = vt.total_rows(t)
        self.history = self.total - self.rows
        self.cx, self.cy, self.pending_wrap = vt.cursor(t)
        self.alt = vt.alt_active(t)
        self.probe = vt.selection(t, 0, 0, 0, 0, active=True)

    def extras(self, *, before: bool = False, **extras: bool) -> bytes:
        """Just the formatter extras' bytes: format the one-cell probe selection with and without them and cut
        the cell off. The formatter writes tab stops and modes (`before=True`) ahead of the content, everything
        else after."""
        cell = vt.format_vt(self.t, self.probe)
        full = vt.format_vt(self.t, self.probe, **extras)
        if not cell:
            return full
        if before and full.endswith(cell):
            return full[: len(full) - len(cell)]
        if not before and full.startswith(cell):
            return full[len(cell) :]
        raise vt.EmulatorError("cannot separate formatter extras from content")  # pragma: no cover

    def blank_rows(self, first: int, last: int) -> list[bool]:
        """For rows first..last: True where the row has no text (one plain-text formatting pass: rows come out
        one per line, trailing blank ones trimmed; a per-row formatter call costs seconds on a 1000-row screen)."""
        sel = vt.selection(self.t, 0, first, self.cols - 1, last)
        lines = vt.format_plain(self.t, sel, trim=True).split(b"\n")
        n = last - first + 1
        if lines == [b""]:
            lines = []
        if len(lines) > n:
            raise vt.EmulatorError(f"plain formatting gave {len(lines)} lines for {n} rows")
        return [not line for line in lines] + [True] * (n - len(lines))

    def content(self, history_rows: int, pad: bool, limit: int | None = None) -> list[bytes]:
        """The last `history_rows` history rows and the active area, in parts to be joined; `pad` adds the
        trailing blank rows. Past `limit` bytes: vt.TooLarge, its `rows` set to the rows that fitted."""
        start = self.history - history_rows
        last = self.total - 1
        blank = self.blank_rows(start, last)
        while last > start and blank[last - start]:
            last -= 1
        # The formatter joins a row marked "continues a soft wrap" onto the row above even when that row is not
        # wrapped (scroll regions leave rows so), misplacing a cell: format such rows as separate lines.
        out: list[bytes] = []
        size = 0
        first = start
        for end in [*vt.orphan_continuations(self.t, start + 1, last), last + 1]:
            sel = vt.selection(self.t, 0, first, self.cols - 1, end - 1)
            try:
                piece = vt.format_vt(self.t, sel, unwrap=True, limit=None if limit is None else limit - size)
            except vt.TooLarge as e:
                e.rows = first - start + vt.rows_of_lines(self.t, first, e.lines)
                raise
            if out:
                out.append(b"\r\n")
            out.append(piece)
            size += len(piece) + 2
            first = end
        if pad:
            out.append(b"\r\n" * (self.total - 1 - last))
        return out

    def bg_repair(self) -> bytes:
        """Repaint active rows that hold only background-coloured erased cells (EL/ED/ECH under a coloured
        pen): the formatter skips rows without text. Each run becomes CUP + SGR 48 + ECH, which makes the
        same bg-only cells. Call right after the content, before margins and modes are restored."""
        blank = self.blank_rows(self.history, self.total - 1)
        out = bytearray()
        for y, runs in vt.active_background_runs(self.t, (y for y in range(self.rows) if blank[y])).items():
            for x, n, sgr in runs:
                out += f"\x1b[{y + 1};{x + 1}H\x1b[0;48;{sgr}m\x1b[{n}X".encode()
        if out:
            out += b"\x1b[0m"
        return bytes(out)

    def cell_vt(self, x: int, y: int) -> bytes:
        return vt.format_vt(self.t, vt.selection(self.t, x, y, x, y, active=True))

    def cursor_tail(self, top: int = 0, left: int = 0) -> bytes:
        """CUP (relative to `top`/`left` margins), the pending-wrap re-print, then the pen and its friends."""
        out = bytearray(f"\x1b[{self.cy - top + 1};{self.cx - left + 1}H".encode())
        if self.pending_wrap and self.cx == self.cols - 1:
            # Writing the last cell again leaves the cursor there with the wrap pending, as it was.
            x = self.cx
            if x > 0 and vt.cell_is_spacer_tail(self.t, x, self.cy):
                x -= 1
            cell = self.cell_vt(x, self.cy)
            if cell:
                out += f"\x1b[{self.cy - top + 1};{x - left + 1}H".encode() + cell
        out += self.pen()
        return bytes(out)

    def pen(self) -> bytes:
        return self.extras(
            screen_style=True,
            screen_charsets=True,
            screen_protection=True,
            screen_hyperlink=True,
            screen_kitty_keyboard=True,
        )

    def pen_reset(self) -> bytes:
        """Undo what `pen` set (for painting the alternate screen after the primary's pen was restored)."""
        out = bytearray(b"\x1b[0m")
        if self.extras(screen_protection=True):
            out += b'\x1b[0"q'
        if self.extras(screen_hyperlink=True):
            out += b"\x1b]8;;\x1b\\"
        if cs := self.extras(screen_charsets=True):
            for m in re.finditer(rb"\x1b([()*+]).", cs):
                out += b"\x1b" + m.group(1) + b"B"
            out += b"\x0f"
        return bytes(out)


# ---------------------------------------------------------------------------------------------------------
# Title and working directory as text


def _portable_mode(seq: bytes) -> bytes:
    """Application keypad as DECKPAM/DECKPNM (ESC = / ESC >): terminals such as tmux ignore CSI ? 66 h/l."""
    if seq == b"\x1b[?66h":
        return b"\x1b="
    if seq == b"\x1b[?66l":
        return b"\x1b>"
    return seq


def _strip_controls(b: bytes) -> bytes:
    return bytes(c for c in b if c >= 0x20 and c != 0x7F)


_C0_C1 = re.compile("[\x00-\x1f\x7f-\x9f]")


def title_text(b: bytes) -> str:
    """A title as text without C0, DEL or C1 (U+0080..U+009F) controls (libghostty keeps C1 in titles)."""
    return _C0_C1.sub("", b.decode("utf-8", "replace"))


def pwd_path(url: bytes) -> str | None:
    """The path of an OSC 7 `file://host/path` URL (percent-decoded); a bare path is taken as is. A path with
    control characters (`%1b]52;...` decodes to a real ESC: an escape sequence, not a directory) is not taken."""
    path = _pwd_url_path(url)
    return None if path is None or _C0_C1.search(path) else path


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
