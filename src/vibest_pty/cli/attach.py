"""`attach`'s terminal side: raw mode, the session's snapshot painted first, then output and keystrokes relayed
on the event loop (stdin via add_reader, stdout non-blocking via add_writer). Whatever way it ends, the terminal
is put back as it was."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import termios
import time
import tty
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from ..client import Client, ConnectionClosed, PtyError
from .format import escape, signame

OUTPUT_BACKLOG_MAX = 4 * 1024 * 1024  # unwritten terminal output beyond this is dropped for a fresh snapshot
# How long attach waits for the daemon's reply (a snapshot of a big screen under load takes seconds, never this).
ATTACH_TIMEOUT = 30.0
INPUT_WHILE_WAITING_MAX = 64 * 1024  # keys typed while waiting, sent once attached; more are dropped

T = TypeVar("T")


def terminal_size(fd: int, default: tuple[int, int] = (80, 24)) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return default
    if size.columns <= 0 or size.lines <= 0:
        return default
    return size.columns, size.lines


_PRIVATE_MODE = re.compile(rb"\x1b\[\?([0-9;]*)([hl])|\x1bc")
_ALT_SCREEN_MODES = (1049, 1047, 47)

# Put back what a full-screen program may have changed, none of which moves the cursor: scroll margins (DECSTBM
# homes the cursor, hence DECSC/DECRC around it), pen and charsets, cursor keys and keypad, every mouse mode,
# focus events, bracketed paste, synchronized output, insert and newline modes, reverse video, autowrap, the
# cursor (visible, default shape), kitty keyboard flags and modifyOtherKeys; then pop the title pushed on entry.
# Also left/right margins (DECSLRM needs ?69 set, then ?69 off; it homes the cursor, hence inside DECSC/DECRC, and
# right after DECSC: where ?69 is unknown, CSI s is SCOSC, which tmux keeps in DECSC's slot: it saves the same spot),
# reverse wrap (?45), colour-scheme reports (?2031), in-band resize reports (?2048, which would type CSI 48;..t
# into the user's shell on every resize) and the colours (OSC 104/110/111/112). Alternate scroll (?1007) is on by
# default in many terminals, so it is reset only when the session changed it (ModeTracker).
RESTORE_MODES = (
    b"\x1b7\x1b[?69h\x1b[s\x1b[?69l\x1b[r\x1b8\x1b[0m\x1b(B\x0f\x1b[?1l\x1b>"
    b"\x1b[?9l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1004l\x1b[?1005l\x1b[?1006l\x1b[?1015l\x1b[?1016l"
    b"\x1b[?2004l\x1b[?2026l\x1b[4l\x1b[20l\x1b[?5l\x1b[?7h\x1b[?25h\x1b[0 q\x1b[=0;1u\x1b[>4m"
    b"\x1b[?45l\x1b[?2031l\x1b[?2048l\x1b]104\x1b\\\x1b]110\x1b\\\x1b]111\x1b\\\x1b]112\x1b\\"
)
PUSH_TITLE = b"\x1b[22;0t"
POP_TITLE = b"\x1b[23;0t"


class ModeTracker:
    """Follows the modes the session's output sets on the user's terminal that cannot be reset blindly:
    the alternate screen (leaving it when not in it restores a stale cursor) and DECOM (resetting it homes the
    cursor). Sequences split across chunks are carried over."""

    def __init__(self) -> None:
        self.alt: int | None = None  # the alternate-screen mode in effect (1049, 1047 or 47)
        self.origin = False
        self.alternate_scroll = False  # the session set or reset ?1007
        self._tail = b""

    def reset(self) -> None:
        self.alt = None
        self.origin = False
        self._tail = b""

    def feed(self, data: bytes) -> None:
        data = self._tail + data
        self._tail = b""
        for m in _PRIVATE_MODE.finditer(data):
            if m.group(0) == b"\x1bc":  # RIS
                self.alt, self.origin = None, False
                continue
            on = m.group(2) == b"h"
            for p in m.group(1).split(b";"):
                if not p.isdigit():
                    continue
                n = int(p)
                if n in _ALT_SCREEN_MODES:
                    self.alt = n if on else None
                elif n == 6:
                    self.origin = on
                elif n == 1007:
                    self.alternate_scroll = True
        i = data.rfind(b"\x1b")
        if i >= 0 and len(data) - i < 32:
            rest = data[i + 1 :]
            if not rest or (rest[:1] == b"[" and not any(0x40 <= b <= 0x7E for b in rest[1:])):
                self._tail = data[i:]

    def restore_sequence(self) -> bytes:
        out = b""
        if self.alt is not None:
            out += f"\x1b[?{self.alt}l".encode()
        if self.origin:
            out += b"\x1b[?6l"
        if self.alternate_scroll:
            out += b"\x1b[?1007l"
        return out + RESTORE_MODES


class TermWriter:
    """Non-blocking writes to the terminal: what the tty does not take now waits for add_writer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, on_error: Callable[[OSError], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._buf = bytearray()
        self._on_error = on_error
        self._idle = asyncio.Event()
        self._idle.set()
        self.broken = False

    @property
    def pending(self) -> int:
        return len(self._buf)

    def write(self, data: bytes) -> None:
        if self.broken or not data:
            return
        if self._buf:
            self._buf += data
            return
        n = self._write(data)
        if n < len(data) and not self.broken:
            self._buf += data[n:]
            self._idle.clear()
            self._loop.add_writer(self._fd, self._on_writable)

    def _write(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self.broken = True
            self.discard()
            self._on_error(exc)
            return 0

    def _on_writable(self) -> None:
        n = self._write(self._buf[:262144])
        del self._buf[:n]
        if not self._buf:
            self.discard()

    def discard(self) -> None:
        """Drop what was not written yet (the terminal stalled, or a repaint makes it moot)."""
        self._buf.clear()
        self._loop.remove_writer(self._fd)
        self._idle.set()

    def close(self) -> None:
        self.discard()
        self.broken = True

    async def drain(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._buf


class Attachment:
    """One attach: takes over the terminal, relays both ways until detach / exit / daemon gone, restores it."""

    def __init__(self, client: Client, detach_key: int | None, in_fd: int = 0, out_fd: int = 1,
                 timeout: float = ATTACH_TIMEOUT) -> None:
        self.client = client
        self.timeout = timeout
        self._typed = bytearray()  # keys typed while waiting for the attach reply
        self.detach_key = detach_key
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.sid: int | None = None
        self.name = ""
        self.reason = ""  # why the connection closed, when it did
        self.size: tuple[int, int] = (0, 0)
        self.modes = ModeTracker()
        self._loop = asyncio.get_running_loop()
        self._ready = False
        self._early: list[dict[str, Any]] = []
        self._outcome: asyncio.Future[tuple[str, int]] = self._loop.create_future()
        self._repainting = False
        self._writer = TermWriter(self._loop, out_fd, lambda exc: self._finish("hangup", 0))

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def run(self, *, sid: int | None = None, create: dict[str, Any] | None = None) -> int:
        """Attach to session `sid`, or create one from `create` options subscribed from its first byte."""
        for t in ("output", "exit", "resync", "shutdown", "close", "error", "backpressure_warning"):
            self.client.on(t, self._on_event)
        saved_attrs = termios.tcgetattr(self.in_fd)
        saved_flags = fcntl.fcntl(self.out_fd, fcntl.F_GETFL)
        self.size = terminal_size(self.out_fd)
        try:
            tty.setraw(self.in_fd, termios.TCSADRAIN)
            fcntl.fcntl(self.out_fd, fcntl.F_SETFL, saved_flags | os.O_NONBLOCK)
            self._writer.write(PUSH_TITLE)
            # Keys and signals are live while we wait for the daemon (a big snapshot can take a while): the
            # detach key or Ctrl-C gives up, anything else is typed into the session once it is attached.
            self._loop.add_reader(self.in_fd, self._on_stdin)
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._finish, "hangup", 0)
            if await self._attach(sid, create):
                self._ready = True
                for ev in self._early:
                    self._on_event(ev)
                self._early.clear()
                if self._typed and self.sid is not None:
                    with contextlib.suppress(ConnectionClosed):
                        self.client.send_input(self.sid, bytes(self._typed))
                self._typed.clear()
                self._loop.add_signal_handler(signal.SIGWINCH, self._on_winch)
                self._on_winch()  # the size may have changed while attaching
            why, code = await self._outcome
        finally:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.in_fd)
            for sig in (signal.SIGWINCH, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
            if not await self._writer.drain(2.0):
                self._writer.discard()
                self._writer.write(b"\x18")  # CAN: abandon the escape sequence the dropped bytes were in
            self._writer.close()
            fcntl.fcntl(self.out_fd, fcntl.F_SETFL, saved_flags)
            _write_all(self.out_fd, self.modes.restore_sequence() + POP_TITLE)
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, saved_attrs)
        if why != "hangup" or code:
            _write_all(self.out_fd, f"\r\n{self._message(why, code)}\r\n".encode())
        with contextlib.suppress(PtyError):
            if why == "detach":
                await asyncio.wait_for(self.client.detach(self.sid or 0), 2.0)
        return code

    async def _attach(self, sid: int | None, create: dict[str, Any] | None) -> bool:
        """Create or attach and paint; False when the user gave up or the daemon did not answer in time."""
        if create is not None:
            created = await self._wait(self.client.create(**{**create, "attach": True,
                                                             "cols": self.size[0], "rows": self.size[1]}))
            if created is None:
                return False
            self.sid = created["id"]
            self.name = str(created.get("name") or "")
            self._paint(None)
            return True
        assert sid is not None
        self.sid = sid
        # Before the snapshot, so that it is taken (reflowed) at our size. No id: on an exited session the
        # error is an event, and the kernel sends no SIGWINCH for an unchanged size.
        with contextlib.suppress(ConnectionClosed):
            self.client.send({"type": "resize", "session": sid, "cols": self.size[0], "rows": self.size[1]})
        reply = await self._wait(self.client.attach(sid))
        if reply is None:
            return False
        self.name = str(reply.get("session", {}).get("name") or "")
        self._paint(reply.get("snapshot"))
        return True

    async def _wait(self, request: Coroutine[Any, Any, T]) -> T | None:
        """The request's reply, or None when the attachment ended first (detach key, Ctrl-C, a signal, the
        connection) or the daemon took longer than `timeout` seconds."""
        task = asyncio.ensure_future(request)
        waited: set[asyncio.Future[Any]] = {task, self._outcome}
        done, _ = await asyncio.wait(waited, timeout=self.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()  # a PtyError propagates: the caller reports it after the terminal is back
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        self._finish("timeout", 1)  # no-op when the user already gave up
        return None

    def _message(self, why: str, code: int) -> str:
        """The line printed after leaving; the session's name and the daemon's reasons come escaped."""
        sid = f"session {self.sid}" + (f" ({escape(self.name)})" if self.name else "")
        if why == "detach":
            return f"[detached from {sid}]"
        if why == "exit":
            if code > 128:
                return f"[{sid} exited on signal {signame(code - 128)}]"
            return f"[{sid} exited with code {code}]"
        if why == "shutdown":
            return f"[the daemon is shutting down; left {sid}]"
        if why == "gave_up":
            return f"[gave up waiting for the daemon to attach {sid}]"
        if why == "timeout":
            return (f"[the daemon did not answer within {self.timeout:g} s; gave up attaching {sid}"
                    " (see `vibest-pty stats`)]")
        if why == "removed":
            return f"[{sid} is gone]"
        reason = f": {escape(self.reason)}" if self.reason else ""
        return f"[lost the connection to the daemon{reason}; left {sid}]"

    def _finish(self, why: str, code: int) -> None:
        if not self._outcome.done():
            self._outcome.set_result((why, code))

    # -- terminal -> session ------------------------------------------------------------------------------------

    def _on_stdin(self) -> None:
        try:
            data = os.read(self.in_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._finish("hangup", 0)
            return
        if not self._ready:
            # Still waiting for the daemon: the detach key or Ctrl-C (a byte in raw mode) gives up.
            cut = [i for i in (find_key(data, self.detach_key), data.find(b"\x03")) if i >= 0]
            if cut:
                self._finish("gave_up", 1)
            elif len(self._typed) < INPUT_WHILE_WAITING_MAX:
                self._typed += data
            return
        i = find_key(data, self.detach_key)
        detach = i >= 0
        if detach:
            data = data[:i]
        if data and self.sid is not None:
            try:
                self.client.send_input(self.sid, data)
            except ConnectionClosed:
                self._finish("closed", 1)
                return
        if detach:
            self._finish("detach", 0)

    def _on_winch(self) -> None:
        size = terminal_size(self.out_fd, self.size)
        if size == self.size or self.sid is None:
            return
        self.size = size
        with contextlib.suppress(ConnectionClosed):
            # No id: errors (the session just exited) come back as events and are ignored.
            self.client.send({"type": "resize", "session": self.sid, "cols": size[0], "rows": size[1]})

    # -- session -> terminal ------------------------------------------------------------------------------------

    def _paint(self, snapshot: Mapping[str, Any] | None) -> None:
        """Start over from a clean screen: the snapshot's picture, or nothing for a session we saw start.
        (The client trims the output that follows to the snapshot's offset.)"""
        out = bytearray(self.modes.restore_sequence())
        out += b"\x1b[H\x1b[2J"
        self.modes.reset()
        if snapshot is not None:
            data = bytes(snapshot.get("data") or b"")
            self.modes.feed(data)
            out += data
        self._writer.write(bytes(out))

    def _on_event(self, ev: dict[str, Any]) -> None:
        if self._outcome.done():
            return  # leaving: what is still buffered drains, nothing new is added (a flood would never end)
        if not self._ready:
            self._early.append(ev)
            return
        t = ev.get("type")
        if ev.get("session") not in (None, self.sid):
            return
        if t == "output":
            self._output(ev["data"])
        elif t == "exit":
            sig = ev.get("signal")
            self._finish("exit", 128 + int(sig) if sig else int(ev.get("code") or 0))
        elif t == "resync":
            self._repainting = False
            self._paint(ev["snapshot"])
        elif t == "shutdown":
            self._finish("shutdown", 1)
        elif t == "close":
            self.reason = str(ev.get("reason") or "")
            self._finish("closed", 1)
        elif t == "error" and ev.get("code") == "session_not_found":
            self._finish("removed", 1)

    def _output(self, data: bytes) -> None:
        if self._repainting:
            return  # a fresh snapshot is on its way; it covers this
        self.modes.feed(data)
        self._writer.write(data)
        if self._writer.pending > OUTPUT_BACKLOG_MAX:
            # The terminal is far behind: drop the backlog and repaint from a fresh snapshot (a `resync` event).
            self._writer.discard()
            self._writer.write(b"\x18")
            self._repainting = True
            self._loop.create_task(self._repaint())

    async def _repaint(self) -> None:
        assert self.sid is not None
        try:
            await self.client.resync(self.sid)
        except PtyError:
            self._repainting = False


def key_encodings(key: int) -> list[bytes]:
    """How a terminal may send `key`: the byte itself, and for a control key, the kitty keyboard protocol and
    xterm modifyOtherKeys forms, in case the program in the session turned those on."""
    out = [bytes([key])]
    if key < 0x20:
        cp = ord(chr(key ^ 0x40).lower())
        out += [f"\x1b[{cp};5u".encode(), f"\x1b[{cp};5:1u".encode(), f"\x1b[27;5;{cp}~".encode()]
    return out


def find_key(data: bytes, key: int | None) -> int:
    """Where the first encoding of `key` starts in `data`, or -1."""
    if key is None:
        return -1
    found = [i for enc in key_encodings(key) if (i := data.find(enc)) >= 0]
    return min(found, default=-1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + 2.0
    while view:
        try:
            n = os.write(fd, view)
        except (BlockingIOError, InterruptedError):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
            continue
        except OSError:
            return
        view = view[n:]
