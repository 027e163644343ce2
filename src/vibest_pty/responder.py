"""The session's emulator answering terminal queries, so every query has exactly one answer (see `queries`).

A `Responder` wraps one libghostty-vt terminal handle: it sets the terminal's default colours and registers the
effect callbacks (`ffi.callback` objects kept on the Responder, which must outlive the terminal's use of them):

- WRITE_PTY: everything libghostty answers by itself: CPR (`CSI 6 n`, origin mode respected), DSR (`CSI 5 n`),
  DECRQM, DECRQSS, OSC 10/11/12/4 colour queries, kitty keyboard flags (`CSI ? u`), and the reports the callbacks
  below feed;
- DEVICE_ATTRIBUTES: DA1 `CSI ? 62 ; 22 c` (VT220, ANSI colour), DA2 `CSI > 1 ; 10 ; 0 c`, DA3;
- XTVERSION: `DCS > | vibest-pty <version> ST`;
- SIZE: `CSI 14/16/18 t` and mode 2048 reports from the session's size, cells of CELL_W x CELL_H pixels (the PTY's
  own pixel size is unknown: clients do not send it);
- COLOR_SCHEME: `CSI ? 997 ; 1|2 n`, dark when the background's luminance is under one half.

What libghostty does not answer is answered here, in stream order: DECXCPR (`CSI ? 6 n`: the CPR with a `?`) and
XTGETTCAP (`DCS + q` names: TN, Co/colors, RGB known; `DCS 0 + r name ST` for any other).

Callbacks run inside `ghostty_terminal_vt_write` and must not re-enter it: they only append to a list, and
`write()` returns the replies after the write. `write()` also applies two agreements with real terminals: DEL
(0x7F) is dropped (it would take a cell), and DECCOLM (`CSI ? 3 h/l`) is dropped from DEC private mode sequences
(the emulator's size only follows the session's, as with xterm's default allowColumnMode: false).
"""

from __future__ import annotations

import re
from typing import Any

from pyghostty._ffi import ffi as _ffi
from pyghostty._ffi import lib as _lib

from . import __version__
from .queries import DEFAULT_COLORS, Colors, agree

CELL_W, CELL_H = 8, 16  # pixels per cell reported by CSI 14/16 t (and passed to ghostty_terminal_resize)
TERM_NAME = "xterm-256color"
XTVERSION = f"vibest-pty {__version__}"

# XTGETTCAP: capability name -> value (None: a boolean capability).
_CAPS: dict[str, str | None] = {"TN": TERM_NAME, "name": TERM_NAME, "Co": "256", "colors": "256", "RGB": "8/8/8"}
_DECXCPR = re.compile(rb"\x1b\[\?6n")
_XTGETTCAP = re.compile(rb"\x1bP\+q([0-9A-Fa-f;]*)\x1b\\")
_OURS = re.compile(rb"\x1b(?:\[\?6n|P\+q[0-9A-Fa-f;]*\x1b\\)")
_CPR_REPLY = re.compile(rb"\x1b\[(\d+;\d+)R")


def xtgettcap_reply(names_hex: bytes) -> bytes:
    """One `DCS 1 + r name=value ST` (or `DCS 0 + r name ST` for one we do not know) per requested name."""
    out = bytearray()
    for h in names_hex.split(b";"):
        try:
            name = bytes.fromhex(h.decode()).decode()
        except ValueError:
            name = None
        if name is None or name not in _CAPS:
            out += b"\x1bP0+r" + h + b"\x1b\\"
            continue
        v = _CAPS[name]
        out += b"\x1bP1+r" + h
        if v is not None:
            out += b"=" + v.encode().hex().encode()
        out += b"\x1b\\"
    return bytes(out)


class Responder:
    """Answers the queries of one terminal handle (see the module doc). One thread, like the terminal."""

    def __init__(self, term: Any, cols: int, rows: int, colors: Colors | None = None) -> None:
        self._t = term
        self.cols, self.rows = cols, rows
        colors = colors or DEFAULT_COLORS
        self.colors = colors
        self._replies: list[bytes] = []
        self._version = _ffi.new("char[]", XTVERSION.encode())
        self._version_len = len(XTVERSION.encode())
        replies = self._replies

        def write_pty(_t: Any, _ud: Any, data: Any, n: int) -> None:
            replies.append(bytes(_ffi.buffer(data, n)))

        def device_attributes(_t: Any, _ud: Any, a: Any) -> bool:
            a.primary.conformance_level = 62
            a.primary.features[0] = 22
            a.primary.num_features = 1
            a.secondary.device_type = 1
            a.secondary.firmware_version = 10
            a.secondary.rom_cartridge = 0
            a.tertiary.unit_id = 0
            return True

        def xtversion(_t: Any, _ud: Any) -> Any:
            s = _ffi.new("GhosttyString*")
            s.ptr = _ffi.cast("const uint8_t*", self._version)
            s.len = self._version_len
            return s[0]

        def size(_t: Any, _ud: Any, s: Any) -> bool:
            s.rows, s.columns, s.cell_width, s.cell_height = self.rows, self.cols, CELL_W, CELL_H
            return True

        def color_scheme(_t: Any, _ud: Any, out: Any) -> bool:
            out[0] = _lib.GHOSTTY_COLOR_SCHEME_DARK if self.colors.dark else _lib.GHOSTTY_COLOR_SCHEME_LIGHT
            return True

        self._callbacks: list[Any] = []  # kept alive while the terminal may call them (see the module doc)
        for opt, sig, fn in (
            (_lib.GHOSTTY_TERMINAL_OPT_WRITE_PTY, "void(GhosttyTerminal, void*, const uint8_t*, size_t)", write_pty),
            (_lib.GHOSTTY_TERMINAL_OPT_DEVICE_ATTRIBUTES, "bool(GhosttyTerminal, void*, GhosttyDeviceAttributes*)", device_attributes),
            (_lib.GHOSTTY_TERMINAL_OPT_XTVERSION, "GhosttyString(GhosttyTerminal, void*)", xtversion),
            (_lib.GHOSTTY_TERMINAL_OPT_SIZE, "bool(GhosttyTerminal, void*, GhosttySizeReportSize*)", size),
            (_lib.GHOSTTY_TERMINAL_OPT_COLOR_SCHEME, "bool(GhosttyTerminal, void*, GhosttyColorScheme*)", color_scheme),
        ):
            cb = _ffi.callback(sig, fn)
            self._callbacks.append(cb)
            _set(term, opt, cb)
        self.set_colors(colors)

    def set_colors(self, colors: Colors) -> None:
        """The default colours (what a program's OSC overrides fall back to, and OSC 110/111/112 restore)."""
        self.colors = colors
        t = self._t
        for opt, rgb in (
            (_lib.GHOSTTY_TERMINAL_OPT_COLOR_FOREGROUND, colors.foreground),
            (_lib.GHOSTTY_TERMINAL_OPT_COLOR_BACKGROUND, colors.background),
            (_lib.GHOSTTY_TERMINAL_OPT_COLOR_CURSOR, colors.cursor or colors.foreground),
        ):
            c = _ffi.new("GhosttyColorRgb*")
            c.r, c.g, c.b = rgb
            _set(t, opt, c)
        if colors.palette:
            pal = _ffi.new("GhosttyColorRgb[256]")
            _check(_lib.ghostty_terminal_get(t, _lib.GHOSTTY_TERMINAL_DATA_COLOR_PALETTE_DEFAULT, pal), "palette")
            for i, (r, g, b) in colors.palette.items():
                pal[i].r, pal[i].g, pal[i].b = r, g, b
            _set(t, _lib.GHOSTTY_TERMINAL_OPT_COLOR_PALETTE, pal)

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows

    def write(self, data: bytes, scan: bool = True) -> bytes:
        """Feed `data` to the terminal; the replies its queries got, in order (b"" for none). `scan=False`: the
        caller knows `data` holds no DECXCPR or XTGETTCAP query (queries.Marked), which saves a pass over it."""
        data = agree(data)
        t = self._t
        if scan and b"\x1b" in data and (b"\x1b[?6n" in data or b"\x1bP+q" in data):
            pos = 0
            for m in _OURS.finditer(data):
                if m.start() > pos:
                    _write(t, data[pos : m.start()])
                pos = m.end()
                q = m.group(0)
                if _DECXCPR.fullmatch(q):
                    mark = len(self._replies)
                    _write(t, b"\x1b[6n")  # libghostty's CPR (origin mode respected), re-shaped as DECXCPR
                    cpr = b"".join(self._replies[mark:])
                    del self._replies[mark:]
                    if r := _CPR_REPLY.fullmatch(cpr):
                        self._replies.append(b"\x1b[?" + r.group(1) + b"R")
                elif x := _XTGETTCAP.fullmatch(q):
                    self._replies.append(xtgettcap_reply(x.group(1)))
            data = data[pos:]
        if data:
            _write(t, data)
        if not self._replies:
            return b""
        out = b"".join(self._replies)
        self._replies.clear()
        return out

    def close(self) -> None:
        """Unregister the callbacks (call before the terminal is freed if the Responder may be dropped first)."""
        if self._t is not None:
            for opt in (
                _lib.GHOSTTY_TERMINAL_OPT_WRITE_PTY,
                _lib.GHOSTTY_TERMINAL_OPT_DEVICE_ATTRIBUTES,
                _lib.GHOSTTY_TERMINAL_OPT_XTVERSION,
                _lib.GHOSTTY_TERMINAL_OPT_SIZE,
                _lib.GHOSTTY_TERMINAL_OPT_COLOR_SCHEME,
            ):
                _lib.ghostty_terminal_set(self._t, opt, _ffi.NULL)
            self._t = None


def _write(t: Any, data: bytes) -> None:
    _lib.ghostty_terminal_vt_write(t, data, len(data))


def _set(t: Any, opt: int, value: Any) -> None:
    _check(_lib.ghostty_terminal_set(t, opt, value), f"terminal_set {opt}")


def _check(res: int, what: str) -> None:
    if res != 0:
        raise RuntimeError(f"{what} failed: {res}")
