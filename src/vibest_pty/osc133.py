"""Sans-I/O parser for shell-integration marks in a PTY output stream, and the per-session shell tracker.

Bytes in, events out, no I/O: `Osc133Parser.feed(data)` finds, anywhere in the stream,
- OSC 133 marks (FinalTerm semantic prompts): `A` prompt start, `B` prompt end, `C` command start (our shell
  scripts add `cmdline_url=<percent-encoded command line>`), `D[;status]` command end;
- OSC 7 (`file://host/path`, the current directory);
- `CSI ?2004 h/l` (bracketed paste on/off, so `run` knows how the shell wants a command typed).

A sequence split across reads still counts: an unfinished one is carried into the next `feed`, bounded by
`MAX_SEQUENCE` bytes (a longer one is dropped and skipped to its terminator, so a hostile stream cannot grow
memory). Terminators follow the VT parser: BEL or ST (`ESC \\`) end the string, any other ESC ends it too
(the ESC then starts the next sequence), CAN/SUB abort it.

Spoofing: with a `nonce`, only marks carrying `aid=<nonce>` count (our injected scripts add it; `cat` of a file
that contains a mark does not know it). Without one (integration not injected: a program that emits OSC 133
itself) every mark counts. OSC 7 has no parameters to carry a nonce and is informational, so it always counts.

`ShellTracker` turns the events into the session's shell state (`prompt` / `running` / `unknown`), the last
command and `command` start/end events with stream offsets.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# A mark with a 16 KiB command line percent-encoded is at most ~48 KiB; 64 KiB leaves room and bounds memory.
MAX_SEQUENCE = 64 * 1024

_PASTE = b"\x1b[?2004"
_TERM = re.compile(rb"[\x07\x18\x1a\x1b]")
# The sequences we look for: a proper prefix of one may be cut off at the end of a read.
_PATTERNS = (b"\x1b]133;", b"\x1b]7;", b"\x1b[?2004h", b"\x1b[?2004l")
_LONGEST = max(len(p) for p in _PATTERNS)


@dataclass(frozen=True, slots=True)
class Mark:
    kind: str  # "A" | "B" | "C" | "D" (other letters, e.g. kitty's "P", are passed through)
    start: int  # stream offset of the ESC that opens the mark
    end: int  # stream offset just after its terminator
    exit_code: int | None = None  # D only, when given
    command: str | None = None  # C only, from cmdline_url
    aid: str | None = None


@dataclass(frozen=True, slots=True)
class Cwd:
    path: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PasteMode:
    enabled: bool
    end: int


Event = Mark | Cwd | PasteMode


class Osc133Parser:
    def __init__(self, nonce: str | None = None) -> None:
        self.nonce = nonce
        self.pos = 0  # stream offset just after the last byte fed
        self.rejected = 0  # marks dropped for a missing/wrong aid (spoofed or foreign)
        self._buf = b""  # an unfinished sequence (or a possible start of one) from the previous feed
        self._skip = False  # inside an oversized OSC: ignore bytes up to its terminator

    def feed(self, data: bytes) -> list[Event]:
        if not data:
            return []
        base = self.pos - len(self._buf)  # stream offset of buf[0]
        buf = self._buf + data if self._buf else data
        self.pos += len(data)
        self._buf = b""
        events: list[Event] = []
        i = 0
        if self._skip:
            t = _TERM.search(buf)
            if t is None:
                return events
            self._skip = False
            i = t.start() if buf[t.start()] == 0x1B else t.end()
        n = len(buf)
        # Where the next ESC ] and ESC [ ? 2004 are. A regex (or a multi-byte find) stops at every ESC, and
        # SGR-dense output has one every few bytes: then the rare second byte (']', '?'; a one-byte find is
        # memchr) is the anchor, unless that one is frequent too. Measured per 64 KiB: SGR-dense 281 us by
        # regex, 8 us anchored; `yes` 5 us; JSON (many ']') 2.4 ms anchored, so it keeps the regex.
        many_esc = buf.count(b"\x1b") > _ANCHOR_LIMIT
        find_osc = _find_osc if many_esc and buf.count(b"]") <= _ANCHOR_LIMIT else _search_osc
        find_paste = _find_paste if many_esc and buf.count(b"?") <= _ANCHOR_LIMIT else _search_paste
        osc = find_osc(buf, i)
        paste = find_paste(buf, i)
        while True:
            if osc < 0 and paste < 0:
                self._keep_tail(buf, i)
                return events
            if paste >= 0 and (osc < 0 or paste < osc):
                if paste + len(_PASTE) >= n:
                    self._buf = buf[paste:]  # the h/l byte is in the next read
                    return events
                c = buf[paste + len(_PASTE)]
                if c in (0x68, 0x6C):  # h / l
                    events.append(PasteMode(c == 0x68, base + paste + len(_PASTE) + 1))
                i = paste + len(_PASTE)
                paste = find_paste(buf, i)
                continue
            j = osc
            head = buf[j + 2 : j + 6]
            if head.startswith(b"133;"):
                me, is7 = j + 6, False
            elif head.startswith(b"7;"):
                me, is7 = j + 4, True
            else:
                if n - j - 2 < 4 and (b"133;".startswith(head) or b"7;".startswith(head)):
                    self._buf = buf[j:]  # "\x1b]13" at the end of the read
                    return events
                i = j + 2
                osc = find_osc(buf, i)
                continue
            t = _TERM.search(buf, me)
            if t is None or (buf[t.start()] == 0x1B and t.start() + 1 == n):
                # Unfinished (or ending in an ESC that may be the first half of ST): carry it, bounded.
                if n - j > MAX_SEQUENCE:
                    self._skip = True
                else:
                    self._buf = buf[j:]
                return events
            k = t.start()
            term = buf[k]
            nxt = k + 1
            if term == 0x1B:  # ESC \ is ST; another ESC ends the string and starts the next sequence
                nxt = k + 2 if buf[k + 1] == 0x5C else k
            if term not in (0x18, 0x1A):  # CAN / SUB abort the string: no mark
                body = buf[me:k]
                start, end = base + j, base + max(nxt, k)
                if is7:
                    cwd = _parse_osc7(body)
                    if cwd is not None:
                        events.append(Cwd(cwd, start, end))
                else:
                    mark = self._parse_mark(body, start, end)
                    if mark is not None:
                        events.append(mark)
            i = nxt
            osc = find_osc(buf, i)
            if 0 <= paste < i:
                paste = find_paste(buf, i)

    def _keep_tail(self, buf: bytes, i: int) -> None:
        # The read may end inside "\x1b]13": keep the longest suffix that is a proper prefix of a pattern.
        lo = max(i, len(buf) - _LONGEST + 1)
        k = buf.find(b"\x1b", lo)
        while k != -1:
            tail = buf[k:]
            if any(p.startswith(tail) for p in _PATTERNS):
                self._buf = tail
                return
            k = buf.find(b"\x1b", k + 1)

    def _parse_mark(self, body: bytes, start: int, end: int) -> Mark | None:
        fields = body.split(b";")
        kind = fields[0].decode("ascii", "replace")
        params = fields[1:]
        exit_code: int | None = None
        if kind == "D" and params and b"=" not in params[0]:
            try:
                exit_code = int(params[0])
            except ValueError:
                exit_code = None
            params = params[1:]
        aid: str | None = None
        command: str | None = None
        for p in params:
            key, sep, value = p.partition(b"=")
            if not sep:
                continue
            if key == b"aid":
                aid = value.decode("utf-8", "replace")
            elif key == b"cmdline_url":
                from urllib.parse import unquote  # lazily: ~0.7 MB of RSS for a daemon that never sees OSC 7

                command = unquote(value.decode("utf-8", "replace"), errors="replace")
        if self.nonce is not None and not _same_nonce(aid, self.nonce):
            self.rejected += 1
            return None
        return Mark(kind, start, end, exit_code, command, aid)


def _same_nonce(aid: str | None, nonce: str) -> bool:
    import hmac  # lazily: hashlib/hmac add ~1.5 MB to an idle daemon's RSS

    return aid is not None and hmac.compare_digest(aid.encode(), nonce.encode())


_ANCHOR_LIMIT = 256
_OSC_RE = re.compile(rb"\x1b\]")
_PASTE_RE = re.compile(rb"\x1b\[\?2004")


def _search_osc(buf: bytes, i: int) -> int:
    m = _OSC_RE.search(buf, i)
    return -1 if m is None else m.start()


def _search_paste(buf: bytes, i: int) -> int:
    m = _PASTE_RE.search(buf, i)
    return -1 if m is None else m.start()


def _find_osc(buf: bytes, i: int) -> int:
    """Index of the next ESC ] at or after i, or -1."""
    k = buf.find(b"]", i + 1)
    while k != -1 and buf[k - 1] != 0x1B:
        k = buf.find(b"]", k + 1)
    return k - 1 if k != -1 else -1


def _find_paste(buf: bytes, i: int) -> int:
    """Index of the next ESC [ ? 2004 at or after i, or -1."""
    k = buf.find(b"?", i + 2)
    while k != -1 and not (buf[k - 2 : k] == b"\x1b[" and buf.startswith(b"?2004", k)):
        k = buf.find(b"?", k + 1)
    return k - 2 if k != -1 else -1


def _parse_osc7(body: bytes) -> str | None:
    text = body.decode("utf-8", "replace")
    if text.startswith("/"):
        return text
    from urllib.parse import unquote, urlsplit

    try:
        url = urlsplit(text)
    except ValueError:
        return None
    if url.scheme not in ("file", "kitty-shell-cwd") or not url.path:
        return None
    return unquote(url.path, errors="replace")


ShellState = Literal["prompt", "running", "unknown"]


@dataclass(frozen=True, slots=True)
class CommandEvent:
    phase: Literal["start", "end"]
    seq: int
    offset: int  # start: where the command's output begins; end: where it ended (the D mark's first byte)
    command: str | None
    exit_code: int | None
    cwd: str | None


@dataclass(slots=True)
class LastCommand:
    seq: int
    command: str | None
    started_at: float
    output_start: int
    cwd: str | None
    exit_code: int | None = None
    finished_at: float | None = None
    output_end: int | None = None


class ShellTracker:
    """What the shell is doing, from its marks. `feed` returns the command events the bytes completed."""

    def __init__(self, nonce: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.parser = Osc133Parser(nonce)
        self.clock = clock
        self.state: ShellState = "unknown"
        self.ready = False  # at a prompt that has finished drawing (B seen, or A when the shell sends no B)
        self.prompt_offset: int | None = None  # end of the last A/B mark
        self.bracketed_paste = False
        self.cwd: str | None = None
        self.seq = 0
        self.last: LastCommand | None = None  # the running or last finished command
        self.marks_seen = False
        self._sends_b = False

    def feed(self, data: bytes) -> list[CommandEvent]:
        out: list[CommandEvent] = []
        for ev in self.parser.feed(data):
            if isinstance(ev, PasteMode):
                self.bracketed_paste = ev.enabled
            elif isinstance(ev, Cwd):
                self.cwd = ev.path
            else:
                self._mark(ev, out)
        return out

    def _mark(self, m: Mark, out: list[CommandEvent]) -> None:
        self.marks_seen = True
        if m.kind in ("A", "B"):
            self.state = "prompt"
            # Ready for input at B: between A and B the shell is still drawing the prompt and may not have
            # turned bracketed paste on yet (fish sends ?2004h there). A alone counts only for a program that
            # marks prompts but never sends B (foreign marks, no nonce).
            if m.kind == "B":
                self._sends_b = True
                self.ready = True
            elif self.parser.nonce is None and not self._sends_b:
                self.ready = True
            self.prompt_offset = m.end
        elif m.kind == "C":
            last = self.last
            if self.state == "running" and last is not None and last.finished_at is None:
                # bash runs a multi-line input line as several commands, each with its PS0 (C) but one
                # PROMPT_COMMAND (D) at the end: the parts belong to the command already started.
                if m.command is not None:
                    last.command = m.command if last.command is None else last.command + "\n" + m.command
                return
            self.seq += 1
            self.state = "running"
            self.ready = False
            self.last = LastCommand(self.seq, m.command, self.clock(), m.end, self.cwd)
            out.append(CommandEvent("start", self.seq, m.end, m.command, None, self.cwd))
        elif m.kind == "D":
            last = self.last
            if self.state != "running" or last is None or last.finished_at is not None:
                return  # an end without a start (a prompt's Ctrl-C in some shells): no command to end
            self.state = "prompt"
            last.exit_code = m.exit_code
            last.finished_at = self.clock()
            last.output_end = m.start
            out.append(CommandEvent("end", last.seq, m.start, last.command, m.exit_code, self.cwd))

    def info(self) -> dict[str, object]:
        """The SessionInfo fields: shell_state and the last command (None fields when there is none)."""
        last = self.last
        return {
            "shell_state": self.state,
            "command": last.command if last else None,
            "exit_code": last.exit_code if last else None,
            "started_at": last.started_at if last else None,
            "finished_at": last.finished_at if last else None,
            "cwd": self.cwd,
        }
