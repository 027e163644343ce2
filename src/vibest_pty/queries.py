"""Terminal queries in a session's output: found here, kept from clients, answered by the session's emulator.

Sans-I/O: `QueryFilter.feed(chunk)` takes output bytes as the PTY gives them and returns the same bytes cut into
segments, in order: `bytes` segments are ordinary output (for the clients and the emulator alike) and `Query`
segments are the queries (for the emulator only, which answers them; see `responder`). So no client terminal ever
sees a query it could answer too, and a query has exactly one answer whoever is attached (tmux's model).

Recognised (everything else passes through untouched):

| kind | sequence |
| --- | --- |
| `da1`, `da2`, `da3` | `CSI c` / `CSI 0 c`, `CSI > c`, `CSI = c` |
| `cpr`, `decxcpr` | `CSI 6 n`, `CSI ? 6 n` |
| `dsr` | `CSI 5 n` |
| `color_scheme` | `CSI ? 996 n` |
| `decrqm` | `CSI ? Pm $ p`, `CSI Pm $ p` |
| `xtversion` | `CSI > q`, `CSI > 0 q` |
| `kitty_keyboard` | `CSI ? u` |
| `size` | `CSI 14 t`, `CSI 16 t`, `CSI 18 t` |
| `osc_color` | `OSC 10/11/12 ; ? ST` (also chained `;?;?`), `OSC 4 ; n ; ? ST` (also several `n;?`), BEL or ST |
| `decrqss` | `DCS $ q Pt ST` |
| `xtgettcap` | `DCS + q hex;hex ST` |

A query may arrive split across reads: bytes at the end of a chunk that may still become a query (an `ESC`, a CSI
without its final byte, the start of one of the OSC/DCS queries above) are held, and only those, until the next chunk
decides them; at most MAX_HOLD bytes (a longer candidate is ordinary output). Nothing else is ever held, so ordinary
output is never delayed. Every sequence starts with ESC and ESC starts a new sequence in any parser state, so looking
for queries at each ESC sees them as the emulator's parser does. 8-bit C1 introducers are not recognised (they are
UTF-8 continuation bytes in the streams we serve). Known limits: a query with a C0 control inside it (which a VT
parser executes in place) and an OSC that mixes colour queries with colour sets are passed through.

Cost: a chunk without ESC (and nothing held) is returned as is after one `memchr`; otherwise one regular-expression
scan in C over the chunk for candidates (see _CANDIDATE; 64 KiB of the bench's SGR workload: ~0.2 ms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_HOLD = 4096  # longest undecided candidate held back (an OSC 4 query of 256 colours is ~1.5 KiB)

_QUERY = re.compile(
    rb"\x1b(?:"
    rb"\[(?:(?P<da1>0?c)|(?P<da2>>0?c)|(?P<da3>=0?c)|(?P<cpr>6n)|(?P<decxcpr>\?6n)|(?P<dsr>5n)"
    rb"|(?P<color_scheme>\?996n)|(?P<decrqm>\??\d{1,5}\$p)|(?P<xtversion>>0?q)|(?P<kitty_keyboard>\?u)"
    rb"|(?P<size>1[468]t))"
    rb"|\](?P<osc_color>(?:1[0-2](?:;\?)+|4(?:;\d{1,3};\?)+)(?:\x07|\x1b\\))"
    rb"|P(?:(?P<decrqss>\$q[^\x1b\x18\x1a]*)|(?P<xtgettcap>\+q[0-9A-Fa-f;]*))\x1b\\"
    rb")"
)
# Where a query may start: a CSI whose final byte is one a query ends with, or an OSC/DCS. Possessive runs and one
# alternation keep this scan cheap on ESC-dense output (64 KiB of SGR-dense text: ~0.2 ms, against ~1 ms for
# trying _QUERY at every ESC); _QUERY then decides at each candidate.
_CANDIDATE = re.compile(rb"\x1b(?:\[[\x30-\x3f]*+[\x20-\x2f]*+[cnpqut]|[\]P])")
# What may still become a query: must reach the end of the buffer. A partial holds at most one more ESC, its last
# byte (the start of an ST).
_PARTIAL = re.compile(
    rb"\x1b(?:"
    rb"\[[\x30-\x3f]*[\x20-\x2f]*"
    rb"|\](?:1|1[0-2](?:;\?)*;?|4(?:;\d{1,3};\?)*(?:;\d{0,3}|;\d{1,3};)?)?\x1b?"
    rb"|P(?:\$(?:q[^\x1b\x18\x1a]*)?|\+(?:q[0-9A-Fa-f;]*)?)?\x1b?"
    rb")?\Z"
)


@dataclass(frozen=True, slots=True)
class Query:
    """One query sequence, exactly as the program wrote it."""

    kind: str
    raw: bytes


Segment = bytes | Query
ANSWERED_BY_US = frozenset({"decxcpr", "xtgettcap"})  # the rest libghostty-vt answers (see responder)


class Marked(bytes):
    """Output for the emulator that holds a query of ANSWERED_BY_US: only such output is scanned for them (a scan
    of ESC-dense output costs ~1 ms/MB; the filter already knows where they are)."""

    __slots__ = ()


def for_emulator(segs: list[Segment]) -> bytes:
    """The emulator's bytes for `segs` (everything, queries included), Marked when it must be scanned."""
    data = b"".join(s.raw if isinstance(s, Query) else s for s in segs)
    if any(isinstance(s, Query) and s.kind in ANSWERED_BY_US for s in segs):
        return Marked(data)
    return data


class QueryFilter:
    """Cuts one session's output stream into ordinary output and queries (see the module doc)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    @property
    def held(self) -> int:
        """Bytes held back (the start of a possible query)."""
        return len(self._held)

    def feed(self, data: bytes) -> list[Segment]:
        held = self._held
        if not held and b"\x1b" not in data:
            return [data] if data else []
        buf = held + data if held else data
        out: list[Segment] = []
        pos = 0
        match = _QUERY.match
        for c in _CANDIDATE.finditer(buf):
            start = c.start()
            if start < pos or (m := match(buf, start)) is None:
                continue
            if start > pos:
                out.append(buf[pos:start])
            out.append(Query(m.lastgroup or "", m.group()))
            pos = m.end()
        hold = _hold_start(buf, pos)
        self._held = buf[hold:]
        if hold > pos:
            out.append(buf[pos:hold])
        return out

    def flush(self) -> list[Segment]:
        """What is held, as ordinary output (the stream ended: it will never be a query)."""
        held, self._held = self._held, b""
        return [held] if held else []


def _hold_start(buf: bytes, pos: int) -> int:
    """Where the undecided tail of `buf[pos:]` starts (len(buf) when there is none)."""
    end = len(buf)
    j = buf.rfind(b"\x1b", pos)
    if j < 0:
        return end
    if j == end - 1:  # a lone ESC, or the ESC of an ST that may end a query begun at the ESC before it
        k = buf.rfind(b"\x1b", pos, j)
        if k >= 0 and end - k <= MAX_HOLD and _PARTIAL.match(buf, k):
            return k
        return j
    if end - j <= MAX_HOLD and _PARTIAL.match(buf, j):
        return j
    return end


def split_queries(data: bytes) -> list[Segment]:
    """One-shot form of QueryFilter (the whole input at once; nothing is held)."""
    f = QueryFilter()
    return f.feed(data) + f.flush()


# -- colours: what a session answers OSC 10/11/12/4 with (the `colors` create/attach option) ------------------

RGB = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Colors:
    """A session's colours, as OSC 10/11/12/4 report them (programs such as vim pick light/dark from them)."""

    foreground: RGB = (0xD0, 0xD0, 0xD0)
    background: RGB = (0x00, 0x00, 0x00)
    cursor: RGB | None = None  # None: the foreground
    palette: dict[int, RGB] = field(default_factory=dict)  # overrides of the 256-colour palette

    @property
    def dark(self) -> bool:
        r, g, b = self.background
        return 0.2126 * r + 0.7152 * g + 0.0722 * b < 128


DEFAULT_COLORS = Colors()
_HEX = re.compile(r"#([0-9a-fA-F]{6})|#([0-9a-fA-F]{3})|rgb:([0-9a-fA-F]{1,4})/([0-9a-fA-F]{1,4})/([0-9a-fA-F]{1,4})")


def parse_color(value: object) -> RGB:
    """`#rrggbb`, `#rgb` or X11 `rgb:r/g/b` (1-4 hex digits each) to 8-bit RGB; ValueError otherwise."""
    m = _HEX.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"colour must be '#rrggbb', '#rgb' or 'rgb:r/g/b', not {value!r}")
    if m.group(1):
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if m.group(2):
        h = m.group(2)
        return int(h[0] * 2, 16), int(h[1] * 2, 16), int(h[2] * 2, 16)
    r, g, b = (int(p, 16) * 255 // (16 ** len(p) - 1) for p in m.group(3, 4, 5))
    return r, g, b


def parse_colors(value: object, base: Colors = DEFAULT_COLORS) -> Colors:
    """The `colors` option {foreground, background, cursor, palette: [colour, ...] or {index: colour}}; missing
    keys keep `base`. ValueError names what is wrong."""
    if not isinstance(value, dict):
        raise ValueError("colors must be a map")
    unknown = set(value) - {"foreground", "background", "cursor", "palette"}
    if unknown:
        raise ValueError(f"colors: unknown keys {sorted(map(str, unknown))}")
    fg = parse_color(value["foreground"]) if "foreground" in value else base.foreground
    bg = parse_color(value["background"]) if "background" in value else base.background
    cur = parse_color(value["cursor"]) if value.get("cursor") is not None else base.cursor
    palette = dict(base.palette)
    pal = value.get("palette")
    if pal is not None:
        items: list[tuple[Any, Any]]
        if isinstance(pal, list):
            items = list(enumerate(pal))
        elif isinstance(pal, dict):
            items = list(pal.items())
        else:
            raise ValueError("colors.palette must be a list or a map of index to colour")
        for k, v in items:
            i = int(k) if isinstance(k, (int, str)) and str(k).isdigit() else -1
            if not 0 <= i < 256:
                raise ValueError(f"colors.palette: bad index {k!r}")
            palette[i] = parse_color(v)
    return Colors(fg, bg, cur, palette)


# -- emulator agreement with real terminals -----------------------------------------------------------------

_DECSET = re.compile(rb"\x1b\[\?([\d;]*)([hl])")
_DECCOLM = re.compile(rb"\x1b\[\?(?:[\d;]*;)?0*3(?:;|[hl])")


def _drop_deccolm(m: re.Match[bytes]) -> bytes:
    params = [p for p in m.group(1).split(b";") if p.lstrip(b"0") != b"3"]
    return b"\x1b[?" + b";".join(params) + m.group(2) if params else b""


def agree(data: bytes) -> bytes:
    """The bytes the emulator should see for `data`. DEL (0x7F) is dropped: libghostty-vt 0.1.3 gives it a cell,
    tmux and real terminals ignore it. DECCOLM (`CSI ? 3 h/l`) is dropped from DEC private mode sequences: the
    emulator's size only follows the session's (xterm's default allowColumnMode: false ignores it too)."""
    if b"\x7f" in data:  # memchr: ~0.02 ms/MB
        data = data.replace(b"\x7f", b"")
    if b"\x1b" in data and b"\x1b[?" in data and _DECCOLM.search(data):  # no ESC (memchr): no second pass
        data = _DECSET.sub(lambda m: _drop_deccolm(m) if _DECCOLM.match(m.group(0)) else m.group(0), data)
    return data
