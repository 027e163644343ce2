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

from . import __version__, vt
from .emulator import CELL_H, CELL_W
from .queries import DEFAULT_COLORS, Colors, agree

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

    def __init__(self, term: vt.Term, cols: int, rows: int, colors: Colors | None = None) -> None:
        self._t = term
        self.cols, self.rows = cols, rows
        colors = colors or DEFAULT_COLORS
        self.colors = colors
        self._replies: list[bytes] = []
        # DA1 `CSI ? 62 ; 22 c` (VT220, ANSI colour), DA2 `CSI > 1 ; 10 ; 0 c`, DA3 unit id 0.
        self._callbacks = vt.set_effects(  # kept alive while the terminal may call them (see the module doc)
            term,
            write_pty=self._replies.append,
            device_attributes=(62, (22,), 1, 10, 0, 0),
            xtversion=XTVERSION.encode(),
            size=lambda: (self.rows, self.cols, CELL_W, CELL_H),
            dark=lambda: self.colors.dark,
        )
        self.set_colors(colors)

    def set_colors(self, colors: Colors) -> None:
        """The default colours (what a program's OSC overrides fall back to, and OSC 110/111/112 restore)."""
        self.colors = colors
        vt.set_default_colors(
            self._t, colors.foreground, colors.background, colors.cursor or colors.foreground, colors.palette
        )

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
            vt.clear_effects(self._t)
            self._t = None


def _write(t: vt.Term, data: bytes) -> None:
    vt.write(t, data)
