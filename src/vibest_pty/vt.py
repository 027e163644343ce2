"""The C-API layer: the only module that imports pyghostty's cffi `ffi`/`lib` (libghostty-vt, a public alpha).

Thin typed wrappers over the calls the emulator makes, in plain Python values: a terminal handle (`Term`, a
`GhosttyTerminal` cdata pointer) and a selection (`Selection`, a `GhosttySelection*`) are opaque to the callers.
The terminal is built with `ghostty_terminal_new` directly, not through `pyghostty.Terminal`, so that the
scrollback can be bounded in bytes (see emulator.py).

Every C function is reached through the module-level `_lib` (and `_grid_ref_c` for the one call that takes a union
by value), looked up at call time, so a test can count the calls (tests/test_snapshot_cost.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from pyghostty._ffi import ffi as _ffi
from pyghostty._ffi import lib as _lib
from pyghostty._ffi import union_fn as _union_fn

Term = Any  # a GhosttyTerminal handle (cdata pointer)
Selection = Any  # a GhosttySelection* (cdata)
Rgb = tuple[int, int, int]

# Terminal options and data keys, by the names the callers use.
NO_VALUE = _lib.GHOSTTY_NO_VALUE
CELL_WIDE_SPACER_TAIL = _lib.GHOSTTY_CELL_WIDE_SPACER_TAIL


class EmulatorError(RuntimeError):
    """A libghostty-vt call failed."""


def check(res: int, what: str) -> None:
    if res != 0:
        raise EmulatorError(f"{what} failed: {res}")


_grid_ref_c: Any = None  # ghostty_terminal_grid_ref takes a GhosttyPoint union by value: cffi needs union_fn


def _grid_ref_fn() -> Any:
    global _grid_ref_c
    if _grid_ref_c is None:
        _grid_ref_c = _union_fn(
            "ghostty_terminal_grid_ref", "GhosttyResult(*)(GhosttyTerminal, GhosttyPointS, GhosttyGridRef*)"
        )
    return _grid_ref_c


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


# ---------------------------------------------------------------------------------------------------------
# The terminal: life cycle, input, options


def terminal_new(cols: int, rows: int) -> Term:
    t = _ffi.new("GhosttyTerminal*")
    check(_lib.ghostty_terminal_new(_ffi.NULL, t, cols, rows), "terminal_new")
    return t[0]


def terminal_free(t: Term) -> None:
    _lib.ghostty_terminal_free(t)


def write(t: Term, data: bytes) -> None:
    """Parse output bytes (any chunking: a split UTF-8 character or escape sequence continues next time)."""
    _lib.ghostty_terminal_vt_write(t, data, len(data))


def resize(t: Term, cols: int, rows: int, cell_w: int, cell_h: int) -> None:
    check(_lib.ghostty_terminal_resize(t, cols, rows, cell_w, cell_h), "resize")


def _set_size_t(t: Term, opt: int, value: int) -> None:
    check(_lib.ghostty_terminal_set(t, opt, _ffi.new("size_t*", value)), f"terminal_set {opt}")


def set_scrollback_max_bytes(t: Term, n: int) -> None:
    _set_size_t(t, _lib.GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_BYTES, n)


def set_continuation_max_bytes(t: Term, n: int) -> None:
    """The longest unfinished sequence the parser keeps for `continuation` (e.g. an OSC 52 cut by a snapshot)."""
    _set_size_t(t, _lib.GHOSTTY_TERMINAL_OPT_CONTINUATION_MAX_BYTES, n)


def clone(t: Term) -> Term:
    """A private deep copy of `t` (both screens, history, modes) via the snapshot codec; the caller frees it."""
    ptr = _ffi.new("uint8_t**")
    n = _ffi.new("size_t*")
    check(_lib.ghostty_snapshot_encode_alloc(t, _ffi.NULL, ptr, n), "snapshot_encode")
    try:
        dec = _ffi.new("GhosttySnapshotDecoder*")
        check(_lib.ghostty_snapshot_decoder_new_buf(_ffi.NULL, dec, ptr[0], n[0]), "snapshot_decoder_new")
        try:
            out = _ffi.new("GhosttyTerminal*")
            check(_lib.ghostty_snapshot_decoder_decode(dec[0], out), "snapshot_decode")
            return out[0]
        finally:
            _lib.ghostty_snapshot_decoder_free(dec[0])
    finally:
        _lib.ghostty_free(_ffi.NULL, ptr[0], n[0])


# ---------------------------------------------------------------------------------------------------------
# Reading terminal state


def _get(t: Term, key: int, ctype: str) -> Any:
    out = _ffi.new(ctype + "*")
    check(_lib.ghostty_terminal_get(t, key, out), f"terminal_get {key}")
    return out[0]


def _get_str(t: Term, key: int) -> bytes:
    s = _ffi.new("GhosttyString*")
    res = _lib.ghostty_terminal_get(t, key, s)
    if res == NO_VALUE or s.len == 0:
        return b""
    check(res, f"terminal_get {key}")
    return bytes(_ffi.buffer(s.ptr, s.len))


def size(t: Term) -> tuple[int, int]:
    """(cols, rows)."""
    return int(_get(t, _lib.GHOSTTY_TERMINAL_DATA_COLS, "uint16_t")), int(
        _get(t, _lib.GHOSTTY_TERMINAL_DATA_ROWS, "uint16_t")
    )


def total_rows(t: Term) -> int:
    """History rows plus the active rows of the current screen."""
    return int(_get(t, _lib.GHOSTTY_TERMINAL_DATA_TOTAL_ROWS, "size_t"))


def cursor(t: Term) -> tuple[int, int, bool]:
    """(x, y, pending_wrap), y in the active area."""
    return (
        int(_get(t, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_X, "uint16_t")),
        int(_get(t, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_Y, "uint16_t")),
        bool(_get(t, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_PENDING_WRAP, "bool")),
    )


def cursor_visible(t: Term) -> bool:
    return bool(_get(t, _lib.GHOSTTY_TERMINAL_DATA_CURSOR_VISIBLE, "bool"))


def alt_active(t: Term) -> bool:
    scr = _get(t, _lib.GHOSTTY_TERMINAL_DATA_ACTIVE_SCREEN, "GhosttyTerminalScreen")
    return bool(int(scr) == _lib.GHOSTTY_TERMINAL_SCREEN_ALTERNATE)


def title(t: Term) -> bytes:
    """The title as set by OSC 0/2 (raw bytes: the caller strips controls)."""
    return _get_str(t, _lib.GHOSTTY_TERMINAL_DATA_TITLE)


def pwd(t: Term) -> bytes:
    """The working directory as reported by OSC 7 (a URL or a path, raw bytes)."""
    return _get_str(t, _lib.GHOSTTY_TERMINAL_DATA_PWD)


def mode(t: Term, n: int, ansi: bool) -> bool:
    c = _ffi.new("GhosttyTerminalModeConfig*")
    c.mode = (n & 0x7FFF) | (int(ansi) << 15)  # ghostty_mode_new's packing (static inline in C)
    if _lib.ghostty_terminal_get(t, _lib.GHOSTTY_TERMINAL_DATA_MODE, c) != 0:
        return False
    return bool(c.value)


def palette_changes(t: Term) -> list[tuple[int, Rgb]]:
    """The 256-colour palette entries that differ from the defaults (OSC 4), as (index, rgb)."""
    pal = _ffi.new("GhosttyColorRgb[256]")
    dflt = _ffi.new("GhosttyColorRgb[256]")
    if (
        _lib.ghostty_terminal_get(t, _lib.GHOSTTY_TERMINAL_DATA_COLOR_PALETTE, pal) != 0
        or _lib.ghostty_terminal_get(t, _lib.GHOSTTY_TERMINAL_DATA_COLOR_PALETTE_DEFAULT, dflt) != 0
        or bytes(_ffi.buffer(pal)) == bytes(_ffi.buffer(dflt))
    ):
        return []
    return [
        (i, (pal[i].r, pal[i].g, pal[i].b))
        for i in range(256)
        if (pal[i].r, pal[i].g, pal[i].b) != (dflt[i].r, dflt[i].g, dflt[i].b)
    ]


def dynamic_color_changes(t: Term) -> list[tuple[str, Rgb]]:
    """The OSC 10/11/12 colours (foreground, background, cursor) that differ from their defaults (or have none),
    as (OSC number, rgb)."""
    out = []
    for code, key, dkey in (
        ("10", _lib.GHOSTTY_TERMINAL_DATA_COLOR_FOREGROUND, _lib.GHOSTTY_TERMINAL_DATA_COLOR_FOREGROUND_DEFAULT),
        ("11", _lib.GHOSTTY_TERMINAL_DATA_COLOR_BACKGROUND, _lib.GHOSTTY_TERMINAL_DATA_COLOR_BACKGROUND_DEFAULT),
        ("12", _lib.GHOSTTY_TERMINAL_DATA_COLOR_CURSOR, _lib.GHOSTTY_TERMINAL_DATA_COLOR_CURSOR_DEFAULT),
    ):
        c = _ffi.new("GhosttyColorRgb*")
        d = _ffi.new("GhosttyColorRgb*")
        if _lib.ghostty_terminal_get(t, key, c) != 0:
            continue
        has_default = _lib.ghostty_terminal_get(t, dkey, d) == 0
        if not has_default or (c.r, c.g, c.b) != (d.r, d.g, d.b):
            out.append((code, (c.r, c.g, c.b)))
    return out


def continuation(t: Term) -> bytes:
    """The bytes of the escape sequence / UTF-8 character the parser is in the middle of."""
    n = _ffi.new("size_t*")
    res = _lib.ghostty_terminal_continuation_buf(t, _ffi.NULL, 0, n)
    if n[0] == 0:
        return b""
    if res not in (0, _lib.GHOSTTY_OUT_OF_SPACE):
        return b""
    buf = _ffi.new("uint8_t[]", n[0])
    if _lib.ghostty_terminal_continuation_buf(t, buf, n[0], n) != 0:
        return b""
    return bytes(_ffi.buffer(buf, n[0]))


# ---------------------------------------------------------------------------------------------------------
# Rows and cells


def _grid_ref(t: Term, x: int, y: int, tag: int) -> Any:
    pt = _ffi.new("GhosttyPointS*")
    pt.tag = tag
    pt.value.x, pt.value.y = x, y
    ref = _new_sized("GhosttyGridRef")
    check(_grid_ref_fn()(t, pt[0], ref), f"grid_ref {x},{y}")
    return ref


ROW_BLOCK = 256  # rows read per grid-ref lookup when they lie in one page


def orphan_continuations(t: Term, first: int, last: int) -> list[int]:
    """Screen rows in first..last flagged as a soft-wrap continuation whose previous row is not wrapped (scroll
    regions leave rows so). This walks every row of a 10k-line history on attach, so it makes 2 calls a row: a
    grid ref is looked up once per block of ROW_BLOCK rows when the block's last row is in the same page as its
    first (a page holds consecutive rows), the next rows then being the same page's following ones; and both
    flags are read with one get_multi."""
    grid_ref, row_of, row_get_multi = _grid_ref_fn(), _lib.ghostty_grid_ref_row, _lib.ghostty_row_get_multi
    pt = _ffi.new("GhosttyPointS*")
    pt.tag = _lib.GHOSTTY_POINT_TAG_SCREEN
    pt.value.x = 0
    ref = _new_sized("GhosttyGridRef")
    probe = _new_sized("GhosttyGridRef")
    row = _ffi.new("GhosttyRow*")
    keys = _ffi.new("GhosttyRowData[2]", [_lib.GHOSTTY_ROW_DATA_WRAP, _lib.GHOSTTY_ROW_DATA_WRAP_CONTINUATION])
    flags = _ffi.new("bool[2]")
    values = _ffi.new("void*[2]", [_ffi.addressof(flags, 0), _ffi.addressof(flags, 1)])
    out = []
    prev_wrap = False
    y = max(first - 1, 0)
    while y <= last:
        end = min(y + ROW_BLOCK, last + 1)  # rows y..end-1
        pt.value.y = y
        if grid_ref(t, pt[0], ref):
            raise EmulatorError(f"grid ref of row {y} failed")
        pt.value.y = end - 1
        if grid_ref(t, pt[0], probe):
            raise EmulatorError(f"grid ref of row {end - 1} failed")
        if probe.node != ref.node or probe.y != ref.y + (end - 1 - y):
            end = y + 1  # the block crosses a page: this row alone, the next block starts after it
        base = ref.y
        for i in range(end - y):
            ref.y = base + i
            if row_of(ref, row) or row_get_multi(row[0], 2, keys, values, _ffi.NULL):
                raise EmulatorError(f"row {y + i} failed")
            if not prev_wrap and flags[1] and y + i >= first:
                out.append(y + i)
            prev_wrap = bool(flags[0])
        y = end
    return out


def rows_of_lines(t: Term, first: int, lines: int) -> int:
    """How many screen rows from `first` the next `lines` logical lines take (a row ends a line unless it is
    soft-wrapped). For sizing a snapshot that passed its limit: 3 calls a row, on that path only."""
    grid_ref, row_of, row_get = _grid_ref_fn(), _lib.ghostty_grid_ref_row, _lib.ghostty_row_get
    pt = _ffi.new("GhosttyPointS*")
    pt.tag = _lib.GHOSTTY_POINT_TAG_SCREEN
    pt.value.x = 0
    ref = _new_sized("GhosttyGridRef")
    row = _ffi.new("GhosttyRow*")
    flag = _ffi.new("bool*")
    total = total_rows(t)
    y = first
    while lines > 0 and y < total:
        pt.value.y = y
        if grid_ref(t, pt[0], ref) or row_of(ref, row) or row_get(row[0], _lib.GHOSTTY_ROW_DATA_WRAP, flag):
            raise EmulatorError(f"row {y} failed")
        if not flag[0]:
            lines -= 1
        y += 1
    return y - first


def cell_is_spacer_tail(t: Term, x: int, y: int) -> bool:
    """Whether active cell x,y is the right half of a wide character."""
    cell = _ffi.new("GhosttyCell*")
    check(_lib.ghostty_grid_ref_cell(_grid_ref(t, x, y, _lib.GHOSTTY_POINT_TAG_ACTIVE), cell), "cell")
    wide = _ffi.new("GhosttyCellWide*")
    check(_lib.ghostty_cell_get(cell[0], _lib.GHOSTTY_CELL_DATA_WIDE, wide), "cell wide")
    return bool(int(wide[0]) == CELL_WIDE_SPACER_TAIL)


def _cell_background(cell: int, tag: Any, pal: Any, rgb: Any) -> str | None:
    """The SGR 48 parameters of a cell that holds only a background colour (erased under a coloured pen)."""
    check(_lib.ghostty_cell_get(cell, _lib.GHOSTTY_CELL_DATA_CONTENT_TAG, tag), "cell tag")
    if tag[0] == _lib.GHOSTTY_CELL_CONTENT_BG_COLOR_PALETTE:
        check(_lib.ghostty_cell_get(cell, _lib.GHOSTTY_CELL_DATA_COLOR_PALETTE, pal), "cell bg")
        return f"5;{pal[0]}"
    if tag[0] == _lib.GHOSTTY_CELL_CONTENT_BG_COLOR_RGB:
        check(_lib.ghostty_cell_get(cell, _lib.GHOSTTY_CELL_DATA_COLOR_RGB, rgb), "cell bg")
        return f"2;{rgb.r};{rgb.g};{rgb.b}"
    return None


RENDER_STATE_MIN_CELLS = 64 * 1024  # fewer cells to read than this: one call a cell (< ~20 ms), no render state


def active_background_runs(t: Term, rows: Iterable[int]) -> dict[int, list[tuple[int, int, str]]]:
    """For the given active rows: the runs of cells that hold only a background colour (erased under a coloured
    pen), as (x, length, SGR 48 parameters such as "5;1" or "2;r;g;b"); rows without any are left out.

    Many cells (a blank 1000x1000 screen): a render state's raw cell view gives a row's cells in one call, a row
    of default cells is skipped with one comparison, and the library is asked about each distinct cell value
    once: a few calls a row, not three a cell (tests/test_snapshot_cost.py). Few cells (the trailing rows of a
    full screen): one call a cell, because a render state copies the whole screen with its styles (110 MiB for a
    1000x1000 screen of truecolor cells)."""
    want = sorted(set(rows))
    if not want:
        return {}
    cols, _ = size(t)
    scratch = (_ffi.new("GhosttyCellContentTag*"), _ffi.new("uint8_t*"), _ffi.new("GhosttyColorRgb*"))
    known: dict[int, str | None] = {_default_cell(): None}  # raw cell value -> its background (None: not bg-only)
    out: dict[int, list[tuple[int, int, str]]] = {}
    for y, cells in (_rows_by_render_state if len(want) * cols >= RENDER_STATE_MIN_CELLS else _rows_by_cell)(
        t, want, cols
    ):
        runs: list[tuple[int, int, str]] = []
        x = 0
        for value, group in itertools.groupby(cells):
            n = sum(1 for _ in group)
            if value not in known:
                known[value] = _cell_background(value, *scratch)
            if (bg := known[value]) is not None:
                if runs and runs[-1][2] == bg and runs[-1][0] + runs[-1][1] == x:
                    runs[-1] = (runs[-1][0], runs[-1][1] + n, bg)
                else:
                    runs.append((x, n, bg))
            x += n
        if runs:
            out[y] = runs
    return out


def _rows_by_cell(t: Term, want: list[int], cols: int) -> Iterator[tuple[int, list[int]]]:
    """(y, raw cell values) of the wanted active rows: one grid ref a row, one call a cell."""
    grid_ref, ref_cell = _grid_ref_fn(), _lib.ghostty_grid_ref_cell
    pt = _ffi.new("GhosttyPointS*")
    pt.tag = _lib.GHOSTTY_POINT_TAG_ACTIVE
    pt.value.x = 0
    ref = _new_sized("GhosttyGridRef")
    cell = _ffi.new("GhosttyCell*")
    for y in want:
        pt.value.y = y
        check(grid_ref(t, pt[0], ref), f"grid_ref row {y}")
        values = []
        for x in range(cols):
            ref.x = x
            check(ref_cell(ref, cell), "cell")
            values.append(int(cell[0]))
        yield y, values


def _rows_by_render_state(t: Term, want: list[int], cols: int) -> Iterator[tuple[int, Any]]:
    """(y, raw cell values) of the wanted active rows, read a row at a time from a render state of the viewport
    (what the active area shows: these terminals never scroll back); rows of default cells are left out."""
    blank = _default_cell()
    wanted = set(want)
    state = _ffi.new("GhosttyRenderState*")
    check(_lib.ghostty_render_state_new(_ffi.NULL, state), "render_state_new")
    it = _ffi.new("GhosttyRenderStateRowIterator*")
    try:
        check(_lib.ghostty_render_state_update(state[0], t), "render_state_update")
        check(_lib.ghostty_render_state_row_iterator_new(_ffi.NULL, it), "row_iterator_new")
        check(_lib.ghostty_render_state_get(state[0], _lib.GHOSTTY_RENDER_STATE_DATA_ROW_ITERATOR, it), "rows")
        view = _ffi.new("GhosttyCellsView*")
        blank_row = b""
        y = -1
        while y < want[-1] and _lib.ghostty_render_state_row_iterator_next(it[0]):
            y += 1
            if y not in wanted:
                continue
            check(_lib.ghostty_render_state_row_get(it[0], _lib.GHOSTTY_RENDER_STATE_ROW_DATA_CELLS_RAW, view), "row")
            raw = bytes(_ffi.buffer(view.ptr, view.len * _ffi.sizeof("GhosttyCell")))
            if len(blank_row) != len(raw):
                blank_row = _ffi.buffer(_ffi.new("GhosttyCell[]", [blank] * view.len))[:]
            if raw != blank_row:
                yield y, memoryview(raw).cast("Q")
    finally:
        if it[0] != _ffi.NULL:
            _lib.ghostty_render_state_row_iterator_free(it[0])
        _lib.ghostty_render_state_free(state[0])


_default_cell_value: int | None = None


def _default_cell() -> int:
    """The raw value of a cell never written (a fresh terminal's first cell), read once."""
    global _default_cell_value
    if _default_cell_value is None:
        t = terminal_new(1, 1)
        try:
            cell = _ffi.new("GhosttyCell*")
            check(_lib.ghostty_grid_ref_cell(_grid_ref(t, 0, 0, _lib.GHOSTTY_POINT_TAG_ACTIVE), cell), "cell")
            _default_cell_value = int(cell[0])
        finally:
            terminal_free(t)
    return _default_cell_value


# ---------------------------------------------------------------------------------------------------------
# The formatter


def selection(t: Term, x0: int, y0: int, x1: int, y1: int, *, active: bool = False) -> Selection:
    """Cells x0,y0..x1,y1 of the screen (history + active rows), or of the active area with `active`."""
    tag = _lib.GHOSTTY_POINT_TAG_ACTIVE if active else _lib.GHOSTTY_POINT_TAG_SCREEN
    sel = _new_sized("GhosttySelection")
    sel.start = _grid_ref(t, x0, y0, tag)[0]
    sel.end = _grid_ref(t, x1, y1, tag)[0]
    return sel


class TooLarge(EmulatorError):
    """The formatter's output passed the `limit` it was given; `lines` lines were complete by then."""

    def __init__(self, lines: int) -> None:
        super().__init__(f"formatted output passed its limit after {lines} lines")
        self.lines = lines
        self.rows = 0  # the screen rows those lines take, when the caller knows where they started


class Rewriter(Protocol):
    """Rewrites the formatter's output as it streams (chunks are cut anywhere, so it keeps what it cannot finish
    yet); `end` returns what is left. Newlines must stay one for one (TooLarge counts them)."""

    def feed(self, chunk: bytes) -> bytes: ...
    def end(self) -> bytes: ...


def format_vt(
    t: Term,
    sel: Selection,
    rewrite: Rewriter | None = None,
    /,
    *,
    unwrap: bool = False,
    limit: int | None = None,
    **extras: bool,
) -> bytes:
    """VT-format `sel` of the current screen with the named extras on: GhosttyFormatterTerminalExtra fields, and
    `screen_<name>` for GhosttyFormatterScreenExtra fields. Past `limit` bytes (after `rewrite`) the formatter is
    stopped and TooLarge raised (so an over-long snapshot costs at most `limit`, not its whole size)."""
    return _format(t, sel, _lib.GHOSTTY_FORMATTER_FORMAT_VT, unwrap, False, extras, limit, rewrite)


def format_plain(
    t: Term,
    sel: Selection,
    *,
    unwrap: bool = False,
    trim: bool = False,
    limit: int | None = None,
    rewrite: Rewriter | None = None,
) -> bytes:
    """`sel` as plain text, rows one per line (soft-wrapped ones joined with `unwrap`; trailing blanks cut with
    `trim`); `limit` and `rewrite` as in format_vt."""
    return _format(t, sel, _lib.GHOSTTY_FORMATTER_FORMAT_PLAIN, unwrap, trim, {}, limit, rewrite)


def _format(
    t: Term,
    sel: Selection,
    emit: int,
    unwrap: bool,
    trim: bool,
    extras: dict[str, bool],
    limit: int | None = None,
    rewrite: Rewriter | None = None,
) -> bytes:
    """Run the formatter through a writer callback into one bytearray: the library hands over 4 KiB at a time,
    so a big screen is held once on our side, never also in a C buffer growing by doubling (format_alloc: ~3x the
    output at its peak, 140 MiB for a 43 MiB dense 1000x1000 screen with history)."""
    opts = _new_sized("GhosttyFormatterTerminalOptions")
    opts.emit = emit
    opts.unwrap = unwrap
    opts.trim = trim
    for k, v in extras.items():
        if k.startswith("screen_"):
            setattr(opts.extra.screen, k[7:], v)
        else:
            setattr(opts.extra, k, v)
    opts.selection = sel
    fmt = _ffi.new("GhosttyFormatter*")
    check(_lib.ghostty_formatter_terminal_new(_ffi.NULL, fmt, t, opts[0]), "formatter_terminal_new")
    try:
        sink = _Sink(limit, rewrite)
        writer = _ffi.new("GhosttyWriter*")
        writer.write = _writer_callback()
        handle = _ffi.new_handle(sink)  # kept in a local: the struct field alone does not keep it alive
        writer.userdata = handle
        res = _lib.ghostty_formatter_format(fmt[0], writer[0])
        if rewrite is not None and not sink.over:
            sink.put(rewrite.end())
        if sink.over:
            raise TooLarge(sink.out.count(b"\n"))
        check(res, "formatter_format")
        return bytes(sink.out)
    finally:
        _lib.ghostty_formatter_free(fmt[0])


class _Sink:
    __slots__ = ("limit", "out", "over", "rewrite")

    def __init__(self, limit: int | None, rewrite: Rewriter | None = None) -> None:
        self.out = bytearray()
        self.limit = (1 << 62) if limit is None else limit
        self.over = False
        self.rewrite = rewrite

    def add(self, data: Any) -> bool:
        """Append `data` (rewritten first if the sink has a rewriter); False (and `over` set) past the limit."""
        return self.put(data if self.rewrite is None else self.rewrite.feed(bytes(data)))

    def put(self, data: Any) -> bool:
        if len(self.out) + len(data) > self.limit:
            self.over = True
            return False
        self.out.extend(data)
        return True


_writer_cb: Any = None


def _writer_callback() -> Any:
    """The one GhosttyWriterFn: appends to the _Sink its userdata handle names; False (stop) past its limit."""
    global _writer_cb
    if _writer_cb is None:

        def write(userdata: Any, data: Any, n: int) -> bool:
            sink: _Sink = _ffi.from_handle(userdata)
            return sink.add(_ffi.buffer(data, n))

        _writer_cb = _ffi.callback("bool(void*, const uint8_t*, size_t)", write)
    return _writer_cb


# ---------------------------------------------------------------------------------------------------------
# The C heap of the emulator process

MMAP_THRESHOLD = 1 << 20  # blocks from this size are mmapped, so their memory goes back to the system when freed
TRIM_THRESHOLD = 4 << 20  # free memory at the top of the heap past this is given back


def limit_heap_retention() -> bool:
    """Make glibc give big freed blocks back at once (for an emulator process: call once at start).

    By default the mmap threshold follows the largest block freed (up to 32 MiB), so after one big snapshot the
    next ones come from the heap, whose free memory stays resident: a dense 1000x1000 session's process kept
    ~50 MiB of freed snapshot buffers beyond its scrollback. Fixed thresholds turn that off. Returns False
    where mallopt is missing (not glibc)."""
    import cffi  # type: ignore[import-untyped]

    ffi = cffi.FFI()
    ffi.cdef("int mallopt(int param, int value);")
    try:
        libc = ffi.dlopen(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------------------
# Effects: how a terminal answers queries (responder.py)

DeviceAttributes = tuple[int, tuple[int, ...], int, int, int, int]
"""(DA1 conformance level, DA1 features, DA2 device type, DA2 firmware version, DA2 ROM cartridge, DA3 unit id)."""

_EFFECT_OPTS = (
    "WRITE_PTY",
    "DEVICE_ATTRIBUTES",
    "XTVERSION",
    "SIZE",
    "COLOR_SCHEME",
)


def set_effects(
    t: Term,
    *,
    write_pty: Callable[[bytes], None],
    device_attributes: DeviceAttributes,
    xtversion: bytes,
    size: Callable[[], tuple[int, int, int, int]],
    dark: Callable[[], bool],
) -> list[Any]:
    """Register the effect callbacks: `write_pty` gets what the terminal answers by itself, `size` gives (rows,
    cols, cell width, cell height) and `dark` the colour scheme. The callbacks run inside `write` and must not
    re-enter it. Returns the cffi callback objects: keep them alive while the terminal may call them, and call
    `clear_effects` before dropping them."""
    version = _ffi.new("char[]", xtversion)
    level, features, dev_type, firmware, cartridge, unit = device_attributes

    def write_pty_cb(_t: Any, _ud: Any, data: Any, n: int) -> None:
        write_pty(bytes(_ffi.buffer(data, n)))

    def device_attributes_cb(_t: Any, _ud: Any, a: Any) -> bool:
        a.primary.conformance_level = level
        for i, f in enumerate(features):
            a.primary.features[i] = f
        a.primary.num_features = len(features)
        a.secondary.device_type = dev_type
        a.secondary.firmware_version = firmware
        a.secondary.rom_cartridge = cartridge
        a.tertiary.unit_id = unit
        return True

    def xtversion_cb(_t: Any, _ud: Any) -> Any:
        s = _ffi.new("GhosttyString*")
        s.ptr = _ffi.cast("const uint8_t*", version)
        s.len = len(xtversion)
        return s[0]

    def size_cb(_t: Any, _ud: Any, s: Any) -> bool:
        s.rows, s.columns, s.cell_width, s.cell_height = size()
        return True

    def color_scheme_cb(_t: Any, _ud: Any, out: Any) -> bool:
        out[0] = _lib.GHOSTTY_COLOR_SCHEME_DARK if dark() else _lib.GHOSTTY_COLOR_SCHEME_LIGHT
        return True

    keep: list[Any] = [version]
    for name, sig, fn in (
        ("WRITE_PTY", "void(GhosttyTerminal, void*, const uint8_t*, size_t)", write_pty_cb),
        ("DEVICE_ATTRIBUTES", "bool(GhosttyTerminal, void*, GhosttyDeviceAttributes*)", device_attributes_cb),
        ("XTVERSION", "GhosttyString(GhosttyTerminal, void*)", xtversion_cb),
        ("SIZE", "bool(GhosttyTerminal, void*, GhosttySizeReportSize*)", size_cb),
        ("COLOR_SCHEME", "bool(GhosttyTerminal, void*, GhosttyColorScheme*)", color_scheme_cb),
    ):
        cb = _ffi.callback(sig, fn)
        keep.append(cb)
        _set(t, getattr(_lib, f"GHOSTTY_TERMINAL_OPT_{name}"), cb)
    return keep


def clear_effects(t: Term) -> None:
    for name in _EFFECT_OPTS:
        _lib.ghostty_terminal_set(t, getattr(_lib, f"GHOSTTY_TERMINAL_OPT_{name}"), _ffi.NULL)


def set_default_colors(
    t: Term, foreground: Rgb, background: Rgb, cursor: Rgb, palette: dict[int, Rgb] | None = None
) -> None:
    """The default colours (what a program's OSC overrides fall back to, and OSC 110/111/112 restore); `palette`
    changes the given entries of the default 256-colour palette."""
    for opt, rgb in (
        (_lib.GHOSTTY_TERMINAL_OPT_COLOR_FOREGROUND, foreground),
        (_lib.GHOSTTY_TERMINAL_OPT_COLOR_BACKGROUND, background),
        (_lib.GHOSTTY_TERMINAL_OPT_COLOR_CURSOR, cursor),
    ):
        c = _ffi.new("GhosttyColorRgb*")
        c.r, c.g, c.b = rgb
        _set(t, opt, c)
    if palette:
        pal = _ffi.new("GhosttyColorRgb[256]")
        check(_lib.ghostty_terminal_get(t, _lib.GHOSTTY_TERMINAL_DATA_COLOR_PALETTE_DEFAULT, pal), "palette")
        for i, (r, g, b) in palette.items():
            pal[i].r, pal[i].g, pal[i].b = r, g, b
        _set(t, _lib.GHOSTTY_TERMINAL_OPT_COLOR_PALETTE, pal)


def _set(t: Term, opt: int, value: Any) -> None:
    check(_lib.ghostty_terminal_set(t, opt, value), f"terminal_set {opt}")
