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

A snapshot fits its `max_bytes`: history is trimmed oldest-first, and when the screen alone is too big the content
is encoded with less (`ScreenState.degraded`: "palette", "plain", "rows"; see `snapshot`).

The cost follows the content: rows are formatted natively in a few calls per screen, and the one per-cell pass
(`bg_repair`, for rows holding only erased coloured cells) reads a row's cells in one call and skips rows of
default cells (tests/test_snapshot_cost.py counts the calls).
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

from . import vt

# ---------------------------------------------------------------------------------------------------------
# Public data


Degrade = Literal["palette", "plain", "rows"]  # how a snapshot that did not fit was encoded (see `snapshot`)
_STEPS: tuple[Degrade | None, ...] = (None, "palette", "plain")


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
    degraded: Degrade | None = None  # set when the exact encoding did not fit max_bytes (see `snapshot`)

    def to_wire(self) -> dict[str, Any]:
        """The Snapshot map of the protocol, less `offset` (the session adds it); `degraded` only when set."""
        out: dict[str, Any] = {
            "data": self.data, "cols": self.cols, "rows": self.rows, "cursor": list(self.cursor),
            "cursor_visible": self.cursor_visible, "alt_screen": self.alt_screen, "modes": self.modes,
            "title": self.title, "cwd": self.cwd, "scrollback_lines": self.scrollback_lines,
        }
        if self.degraded is not None:
            out["degraded"] = self.degraded
        return out


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
    fits; `scrollback_lines` says how many were served. When the screen alone does not fit (a dense truecolor
    1000x1000 screen is ~21.6 MiB with fg colours only, ~38 MiB with fg and bg, against a 16 MiB frame), the
    content is encoded with less in steps, each with history trimmed the same way, and `degraded` says which:
    "palette" (truecolour quantised to the 256-colour palette, one SGR per style change), "plain" (text only:
    no colours, attributes, hyperlinks or soft-wrap marks; cursor, pen, modes and margins kept), "rows" (plain,
    without history, and only the bottom rows of the screen that fit).
    """
    for degrade in _STEPS:
        if degrade == "palette" and _palette_estimate(t) > max_bytes:
            continue  # quantising a dense 1000x1000 screen takes 1.5-5 s here: not spent on one that cannot fit
        if (st := _fit_history(t, scrollback_lines, max_bytes, degrade)) is not None:
            return st
    return _bottom_rows(t, max_bytes)


_SAMPLE_ROWS = 32


def _palette_estimate(t: vt.Term) -> int:
    """The active screen's size in the "palette" encoding, from _SAMPLE_ROWS rows spread over it (1000x1000,
    tests/test_snapshot_fit.py: a scrambled truecolour bg: 18.0 MiB, so skipped; a lolcat-like fg gradient: 2.2)."""
    cols, rows = vt.size(t)
    sample = sorted({y * rows // _SAMPLE_ROWS for y in range(_SAMPLE_ROWS)})
    size = sum(len(vt.format_vt(t, vt.selection(t, 0, y, cols - 1, y, active=True), _PaletteSgr())) for y in sample)
    return size * rows // len(sample)


def _fit_history(t: vt.Term, scrollback_lines: int, max_bytes: int, degrade: Degrade | None) -> ScreenState | None:
    """The snapshot with as much of `scrollback_lines` history as fits in `max_bytes`; None when the screen alone
    does not fit."""
    rows = vt.size(t)[1]
    cap = scrollback_lines  # not clamped to the live history: under the alt screen it is the primary's that counts
    while True:
        try:  # formatting stops at max_bytes: an oversized attempt costs no more than that
            st = _snapshot(t, cap, max_bytes, degrade)
            break
        except vt.TooLarge as e:
            if cap == 0:
                return None
            # `e.rows` rows (history first, then the screen's) fitted: keep 90% of them, less the screen's rows.
            cap = max(0, min(cap - 1, int(e.rows * 0.9) - rows))
    while len(st.data) > max_bytes and st.scrollback_lines > 0:
        # History dominates a big snapshot: scale the rows by the excess, with 10% to spare, at least -1.
        keep = int(st.scrollback_lines * max_bytes / len(st.data) * 0.9)
        cap = max(0, min(keep, st.scrollback_lines - 1))
        del st  # before the next attempt: two such blocks at once would double the peak
        try:
            st = _snapshot(t, cap, max_bytes, degrade)
        except vt.TooLarge:
            return None
    return st if len(st.data) <= max_bytes else None


def _bottom_rows(t: vt.Term, max_bytes: int) -> ScreenState:
    """The last resort: plain text of only the bottom screen rows that fit, no history. A snapshot without the
    content rows measures the rest (colours, title, modes, the unfinished sequence up to 1 MiB); each row costs
    its plain text and CR LF. At least the bottom row is served, even when that does not fit."""
    rows = vt.size(t)[1]
    sizes = [len(line) + 2 for line in _View(t).plain_rows()]
    budget = max_bytes - len(_snapshot(t, 0, None, "rows", skip=rows - 1).data)  # with the bottom row
    skip = rows - 1
    while skip > 0 and sizes[skip - 1] <= budget:
        budget -= sizes[skip - 1]
        skip -= 1
    while True:
        st = _snapshot(t, 0, None, "rows", skip=skip)
        if len(st.data) <= max_bytes or skip >= rows - 1:
            return st
        skip += 1  # pragma: no cover - the sizes above are the rows' bytes; this is a guard against a miscount


def _snapshot(
    t: vt.Term, history_cap: int, limit: int | None = None, degrade: Degrade | None = None, skip: int = 0
) -> ScreenState:
    """One attempt at serving `history_cap` history rows; the content formatting raises vt.TooLarge (with `rows`
    set) past `limit` bytes. `degrade` as in `snapshot`; with "rows", the top `skip` rows of the screen are left
    blank (and the primary screen under an alternate one is left out)."""
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
        served, pen_reset = _primary_under_alt(t, out, alt_mode, history_cap, limit, degrade)
        out.append(f"\x1b[?{alt_mode}h\x1b[H".encode() + pen_reset)
        # Limited only without history: past it, history is trimmed by the excess (in `_fit_history`), not dropped.
        alt_limit = None if limit is None or history_cap else limit - sum(map(len, out))
        out += live.content(0, pad=False, limit=alt_limit, degrade=degrade, skip=skip)
    else:
        served = min(live.history, history_cap)
        out += live.content(served, pad=True, limit=limit, degrade=degrade, skip=skip)
    if degrade not in ("plain", "rows"):
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
        degraded=degrade,
    )


def _primary_under_alt(
    t: vt.Term,
    out: list[bytes],
    alt_mode: int,
    history_cap: int,
    limit: int | None = None,
    degrade: Degrade | None = None,
) -> tuple[int, bytes]:
    """Append the primary screen (history, rows, cursor, pen) as it will be when the alt screen is left.

    Returns the history rows served and the bytes that undo the primary's pen for the alt screen."""
    clone = vt.clone(t)
    try:
        # CAN ends whatever sequence the clone's parser is in; then leave the alt screen the way the
        # application would, so that 1049 restores the saved cursor.
        vt.write(clone, f"\x18\x1b[?{alt_mode}l".encode())
        v = _View(clone)
        served = 0
        if degrade != "rows":
            served = min(v.history, history_cap)
            out += v.content(served, pad=True, limit=limit, degrade=degrade)
        if degrade not in ("plain", "rows"):
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

    def content(
        self,
        history_rows: int,
        pad: bool,
        limit: int | None = None,
        degrade: Degrade | None = None,
        skip: int = 0,
    ) -> list[bytes]:
        """The last `history_rows` history rows and the active area but its top `skip` rows, in parts to be joined;
        `pad` adds the trailing blank rows; `degrade` as in `snapshot`. Past `limit` bytes: vt.TooLarge, its `rows`
        set to the rows that fitted."""
        start = self.history - history_rows + skip
        last = self.total - 1
        blank = self.blank_rows(start, last)
        while last > start and blank[last - start]:
            last -= 1
        out: list[bytes] = [f"\x1b[{skip + 1}H".encode()] if skip else []
        if degrade in ("plain", "rows"):
            # One line a row (no unwrap: soft wraps become hard ones), so lines are rows and nothing is misplaced;
            # plain text drops only the trailing blank rows, which `last` leaves out already.
            sel = vt.selection(self.t, 0, start, self.cols - 1, last)
            try:
                out.append(vt.format_plain(self.t, sel, trim=True, limit=limit, rewrite=_CrLf()))
            except vt.TooLarge as e:
                e.rows = e.lines
                raise
        else:
            # The formatter joins a row marked "continues a soft wrap" onto the row above even when that row is
            # not wrapped (scroll regions leave rows so), misplacing a cell: format such rows as separate lines.
            size = 0
            first = start
            for end in [*vt.orphan_continuations(self.t, start + 1, last), last + 1]:
                sel = vt.selection(self.t, 0, first, self.cols - 1, end - 1)
                try:
                    piece = vt.format_vt(
                        self.t, sel, _PaletteSgr() if degrade == "palette" else None,
                        unwrap=True, limit=None if limit is None else limit - size,
                    )
                except vt.TooLarge as e:
                    e.rows = first - start + vt.rows_of_lines(self.t, first, e.lines)
                    raise
                if size:
                    out.append(b"\r\n")
                out.append(piece)
                size += len(piece) + 2
                first = end
        if pad:
            out.append(b"\r\n" * (self.total - 1 - last))
        return out

    def plain_rows(self) -> list[bytes]:
        """The active rows as plain text, one per row (trailing blanks cut)."""
        sel = vt.selection(self.t, 0, self.history, self.cols - 1, self.total - 1)
        lines = vt.format_plain(self.t, sel, trim=True).split(b"\n")
        return lines + [b""] * (self.rows - len(lines))

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
# Degraded encodings (vt.Rewriter: the formatter's output streams through in chunks cut anywhere)


class _CrLf:
    """Plain text's LF as CR LF, so that each line starts at the left margin of the receiving terminal."""

    def feed(self, chunk: bytes) -> bytes:
        return chunk.replace(b"\n", b"\r\n")

    def end(self) -> bytes:
        return b""


_SGR_RUN = re.compile(rb"(?:\x1b\[[0-9;:]*m)+")
_ESC_OPEN = re.compile(rb"\x1b(?:\[[0-9;:]*)?")  # a sequence the chunk cut
_SGR_PARAMS = re.compile(rb"\x1b\[([0-9;:]*)m")
_CUBE = (0, 95, 135, 175, 215, 255)  # the xterm 6x6x6 colour cube's levels (palette entries 16..231)


_LEVEL = bytes(0 if v < 48 else 1 if v < 115 else (v - 35) // 40 for v in range(256))  # nearest _CUBE index


def palette_index(r: int, g: int, b: int) -> int:
    """The xterm-256 entry (16..255: the colour cube or the grey ramp) nearest to r,g,b. The default palette's
    values: entries a program changed with OSC 4 are restored with the snapshot and used as they are."""
    ri, gi, bi = _LEVEL[r], _LEVEL[g], _LEVEL[b]
    cr, cg, cb = _CUBE[ri], _CUBE[gi], _CUBE[bi]
    k = ((r + g + b) // 3 - 3) // 10
    k = 0 if k < 0 else 23 if k > 23 else k
    grey = 8 + 10 * k
    d_cube = (r - cr) ** 2 + (g - cg) ** 2 + (b - cb) ** 2
    d_grey = (r - grey) ** 2 + (g - grey) ** 2 + (b - grey) ** 2
    return 232 + k if d_grey < d_cube else 16 + 36 * ri + 6 * gi + bi


@functools.lru_cache(maxsize=4096)  # runs repeat in gradients (lolcat): ~1 us a hit against ~5 to quantise
def _quantised_run(run: bytes) -> tuple[bool, bytes]:
    """A run of SGR sequences as one, truecolour as `38/48/58;5;n` (the formatter writes `;`); whether it is a
    whole style (starts with a reset)."""
    seqs = _SGR_PARAMS.findall(run)
    params: list[bytes] = []
    for seq in seqs:
        if seq in (b"", b"0"):
            params = [b"0"]
            continue
        p = seq.split(b";")
        i = 0
        while i < len(p):
            if p[i] in (b"38", b"48", b"58") and i + 4 < len(p) and p[i + 1] == b"2":
                try:
                    n = palette_index(*(min(255, int(v or 0)) for v in p[i + 2 : i + 5]))
                except ValueError:  # pragma: no cover - the formatter writes decimal components
                    n = 0
                params += (p[i], b"5", b"%d" % n)
                i += 5
            elif p[i] in (b"38", b"48", b"58") and i + 2 < len(p) and p[i + 1] == b"5":
                params += p[i : i + 3]
                i += 3
            else:
                params.append(p[i])
                i += 1
    return seqs[0] in (b"", b"0"), b"\x1b[" + b";".join(params) + b"m"


class _PaletteSgr:
    """Truecolour as the 256-colour palette, and each run of SGR sequences as one: the formatter writes a full
    style per styled cell (`ESC[0m ESC[38;2;r;g;bm ESC[48;2;r;g;bm`, ~40 bytes); this makes it
    `ESC[0;38;5;n;48;5;nm` (~20), and nothing when the run starting with a reset repeats the last one (the pen
    is the same: text, CR LF and other sequences between do not change it)."""

    def __init__(self) -> None:
        self.tail = b""
        self.last: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        data = self.tail + chunk
        end = len(data)  # keep the run of SGRs the chunk ends in: it may go on in the next chunk
        while (i := data.rfind(b"\x1b", 0, end)) >= 0 and (
            _SGR_PARAMS.fullmatch(data, i, end) or (end == len(data) and _ESC_OPEN.fullmatch(data, i, end))
        ):
            end = i
        self.tail = data[end:]
        return _SGR_RUN.sub(self._run, data[:end])

    def end(self) -> bytes:
        data, self.tail = self.tail, b""
        out = _SGR_RUN.sub(self._run, data)
        self.last = None
        return out

    def _run(self, m: re.Match[bytes]) -> bytes:
        whole, seq = _quantised_run(m.group(0))
        if not whole:  # applies on top of the pen, which stays unknown
            self.last = None
            return seq
        if seq == self.last:
            return b""
        self.last = seq
        return seq


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
