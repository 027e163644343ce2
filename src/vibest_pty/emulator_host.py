"""The emulator side of the feed protocol (see feed.py): runs the commands of many sessions' emulators, fairly.

Each session has its own command queue; `step()` serves the sessions with work round-robin, one unit each (the
feeds queued for a session, merged up to PARSE_BATCH, or one job), so a 1000x1000 snapshot or a parse-heavy flood
in one session delays another session by one unit at most, never by that session's whole queue. Runs wherever
the emulators live (a pool process, emulator_process.py); it does no I/O itself: events go to `emit`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .feed import Command

if TYPE_CHECKING:
    from .queries import Colors

log = logging.getLogger("vibest_pty.emulator_host")

PARSE_BATCH = 1024 * 1024

Event = tuple[Any, ...]  # ("parsed", sid, n, title, cwd) | ("result", sid, jid, value, error) | ("reply", sid, data)


class Terminal(Protocol):
    """What the host needs from an emulator (emulator.Emulator, or a fake in the tests)."""

    @property
    def title(self) -> str: ...
    @property
    def cwd(self) -> str | None: ...

    def feed(self, data: bytes, scan: bool = True) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def set_colors(self, colors: Any) -> None: ...
    def snapshot_wire(self, max_bytes: int) -> dict[str, Any]: ...
    def text(self, which: str) -> str: ...
    def take_replies(self) -> bytes: ...
    def close(self) -> None: ...


def colors_to_wire(colors: Colors | None) -> Any:
    """queries.Colors as plain lists (it crosses the pool's socket as msgpack)."""
    if colors is None:
        return None
    return [list(colors.foreground), list(colors.background), None if colors.cursor is None else list(colors.cursor),
            [[i, list(c)] for i, c in sorted(colors.palette.items())]]


def colors_from_wire(value: Any) -> Colors | None:
    from .queries import Colors

    if value is None:
        return None
    fg, bg, cur, pal = value
    return Colors(tuple(fg), tuple(bg), None if cur is None else tuple(cur), {int(i): tuple(c) for i, c in pal})


class SessionTerminal:
    """A session's emulator as the host drives it: with queries="daemon", fed through a Responder (which answers
    the terminal queries through libghostty's callbacks, see responder.py); else fed the bytes as real terminals
    would take them (queries.agree)."""

    def __init__(self, cols: int, rows: int, scrollback_lines: int, respond: bool = False, colors: Any = None) -> None:
        from .emulator import Emulator  # not at the top: the daemon imports this module (colors_to_wire) too

        self.emu = Emulator(cols, rows, scrollback_lines)
        self.responder: Any = None
        if respond:
            from .responder import Responder

            self.responder = Responder(self.emu._t, cols, rows, colors_from_wire(colors))
        self._replies = b""

    @property
    def title(self) -> str:
        return self.emu.title

    @property
    def cwd(self) -> str | None:
        return self.emu.cwd

    def feed(self, data: bytes, scan: bool = True) -> None:
        if self.responder is not None:
            if replies := self.responder.write(data, scan):  # after vt_write returned: the callbacks only queue
                self._replies += replies
            self.emu.adapt_budget()
        else:
            from .queries import agree

            self.emu.feed(agree(data))

    def resize(self, cols: int, rows: int) -> None:
        self.emu.resize(cols, rows)
        if self.responder is not None:
            self.responder.resize(cols, rows)

    def set_colors(self, colors: Any) -> None:
        if self.responder is not None and (c := colors_from_wire(colors)) is not None:
            self.responder.set_colors(c)

    def snapshot_wire(self, max_bytes: int) -> dict[str, Any]:
        return self.emu.snapshot_wire(max_bytes)

    def text(self, which: str) -> str:
        return self.emu.text(which)

    def take_replies(self) -> bytes:
        out, self._replies = self._replies + self.emu.take_replies(), b""
        return out

    def close(self) -> None:
        if self.responder is not None:
            self.responder.close()
        self.emu.close()


def warm_up() -> None:
    """Set up an emulator process: load the emulator (pyghostty's cffi set-up parses C declarations: ~0.3 s), bound
    what the C heap keeps of freed blocks, and run one snapshot (cffi builds its types on first use: ~0.2 s), so
    that the first attach does not pay for it."""
    from . import vt
    from .emulator import Emulator

    vt.limit_heap_retention()  # big snapshot buffers go back to the system when freed (see vt)
    with Emulator(8, 2, 1) as emu:
        emu.feed(b"x\x1b[1mx\r\n")
        emu.snapshot()


class EmulatorHost:
    def __init__(
        self,
        emit: Callable[[Event], None],
        factory: Callable[..., Terminal] = SessionTerminal,
    ) -> None:
        self._emit = emit
        self._factory = factory
        self._emus: dict[int, Terminal] = {}
        self._queues: dict[int, deque[Command]] = {}
        self._ready: deque[int] = deque()  # sessions with queued commands, in service order

    def put(self, sid: int, cmds: list[Command]) -> None:
        q = self._queues.get(sid)
        if q is None:
            q = self._queues[sid] = deque()
        if not q:
            self._ready.append(sid)
        q.extend(cmds)

    def has_work(self) -> bool:
        return bool(self._ready)

    def step(self) -> None:
        """Serve one unit of the next session in rotation."""
        if not self._ready:
            return
        sid = self._ready.popleft()
        q = self._queues[sid]
        try:
            self._unit(sid, q)
        except Exception:  # a broken emulator must not take the others with it
            log.exception("session %d: emulator command failed", sid)
        if q:
            self._ready.append(sid)
        elif sid not in self._emus:
            del self._queues[sid]

    def run_all(self) -> None:
        while self._ready:
            self.step()

    def _unit(self, sid: int, q: deque[Command]) -> None:
        cmd = q.popleft()
        op = cmd[0]
        emu = self._emus.get(sid)
        if op == "feed":
            parts = [cmd[1]]
            size = len(cmd[1])
            scan = bool(cmd[2]) if len(cmd) > 2 else True
            while q and q[0][0] == "feed" and size < PARSE_BATCH:
                more = q.popleft()
                parts.append(more[1])
                size += len(more[1])
                scan = scan or (bool(more[2]) if len(more) > 2 else True)
            if emu is None:
                return
            emu.feed(parts[0] if len(parts) == 1 else b"".join(parts), scan)
            if replies := emu.take_replies():  # before "parsed": the feed mutes replies to re-fed output by offset
                self._emit(("reply", sid, replies))
            self._emit(("parsed", sid, size, emu.title, emu.cwd))
        elif op == "open":
            if emu is not None:
                emu.close()
            self._emus[sid] = self._factory(*cmd[1:])
        elif op == "close":
            if emu is not None:
                emu.close()
                del self._emus[sid]
        else:
            jid = cmd[1]
            try:
                if emu is None:
                    raise RuntimeError(f"session {sid} has no emulator")
                value: Any
                if op == "resize":
                    emu.resize(cmd[2], cmd[3])
                    value = None
                elif op == "colors":
                    emu.set_colors(cmd[2])
                    value = None
                elif op == "snapshot":
                    value = emu.snapshot_wire(cmd[2])
                    if "degraded" in value:  # the emulator process's stderr is the daemon's log
                        log.warning("session %d: the screen does not fit a %d-byte snapshot exactly: served %s "
                                    "(%d bytes, %d history rows)", sid, cmd[2], value["degraded"],
                                    len(value["data"]), value["scrollback_lines"])
                elif op == "text":
                    value = emu.text(cmd[2])
                else:
                    raise RuntimeError(f"unknown emulator command {op!r}")
            except Exception as exc:
                log.exception("session %d: %s failed", sid, op)
                self._emit(("result", sid, jid, None, str(exc) or type(exc).__name__))
                return
            self._emit(("result", sid, jid, value, None))

    @property
    def sessions(self) -> int:
        return len(self._emus)
