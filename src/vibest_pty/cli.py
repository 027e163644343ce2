"""`vibest-pty`: the command-line client (ls, new, attach, kill, signal, send, snapshot, stats).

Every command is one short asyncio program over `vibest_pty.client`. `attach` owns the user's terminal while it
runs: raw mode, the session's snapshot painted first, then output and keystrokes relayed on the event loop (stdin
via add_reader, stdout non-blocking via add_writer). Whatever way it ends, the terminal is put back as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .client import Client, ConnectionClosed, PtyError, connect
from .config import default_socket_path

PROG = "vibest-pty"
DEFAULT_DETACH_KEY = "^\\"
INPUT_CHUNK = 64 * 1024  # `send --stdin` splits its input into requests of this size
OUTPUT_BACKLOG_MAX = 4 * 1024 * 1024  # unwritten terminal output beyond this is dropped for a fresh snapshot

EXAMPLES = """\
examples:
  vibest-pty ls                          list sessions (--json for scripts)
  vibest-pty new                         start your shell in a new session and attach to it
  vibest-pty new -d --name build -- make -j8
                                         start a detached session, print its id
  vibest-pty attach build                attach by name or id; detach with Ctrl-\\
  vibest-pty send build 'make test\\n'    type into a session (escapes: \\n \\r \\t \\e \\x03 \\\\)
  vibest-pty snapshot 3                  print the screen of session 3 as text
  vibest-pty signal 3 INT                send SIGINT to the foreground process of session 3
  vibest-pty kill 3                      hang up session 3 (removes it if it already exited)

The daemon must be running (`vibest-pty-daemon` or `./run`). The socket is --socket, else
$RUST_PTY_SOCKET_PATH, else $HOME/.vibest/pty/socket.
"""


class CliError(Exception):
    """A failure reported as one line on stderr; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------------------
# Argument parsing


def parse_key(spec: str) -> int | None:
    """A detach key as one byte: `^\\`, `^]`, `^A`, `ctrl-a`, `C-a`, a single character, or `none`."""
    s = spec.strip()
    low = s.lower()
    if low in ("none", "off", ""):
        return None
    for prefix in ("^", "ctrl-", "ctrl+", "c-"):
        if low.startswith(prefix) and len(s) == len(prefix) + 1:
            c = s[-1]
            if c == "?":
                return 0x7F
            code = ord(c.upper()) ^ 0x40
            if 0 <= code < 0x20:
                return code
            break
    if len(s) == 1 and ord(s) < 0x80:
        return ord(s)
    raise argparse.ArgumentTypeError(f"bad key {spec!r} (use ^X, ctrl-x, a single character or none)")


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "e": b"\x1b", "a": b"\x07", "b": b"\x08", "\\": b"\\"}


def unescape(text: str) -> bytes:
    """`send`'s TEXT as bytes: `\\n \\r \\t \\e \\a \\b \\\\`, `\\xHH` (a raw byte), `\\uHHHH`, octal `\\NNN`.

    Done by hand rather than with the unicode_escape codec, which would mangle non-ASCII text."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(text):
        out += text[pos : m.start()].encode()
        e = m.group(1)
        if e[0] == "x":
            out.append(int(e[1:], 16))
        elif e[0] == "u":
            out += chr(int(e[1:], 16)).encode()
        elif e[0] in "01234567":
            out.append(int(e, 8) & 0xFF)
        elif e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e]
        else:
            raise CliError(f"unknown escape \\{e} in TEXT (known: \\n \\r \\t \\e \\a \\b \\\\ \\xHH \\uHHHH \\NNN)", 2)
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit 2, like every other error here (argparse would print the whole usage)."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: the option may come before or after the command without one default hiding the other.
    common.add_argument(
        "--socket", metavar="PATH", default=argparse.SUPPRESS,
        help="daemon socket (default: $RUST_PTY_SOCKET_PATH or $HOME/.vibest/pty/socket)",
    )
    p = _Parser(
        prog=PROG, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Command-line client of vibest-pty-daemon: list, create, attach to and drive PTY sessions.",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common], aliases=list(aliases))

    ls = add("ls", "list sessions", aliases=["list"])
    ls.add_argument("--json", action="store_true", help="print the sessions as a JSON array (SessionInfo)")

    new = add("new", "create a session sized to this terminal and attach to it (-d: print its id)")
    new.add_argument("-n", "--name", help="a label shown by ls and usable instead of the id")
    new.add_argument("-c", "--cwd", help="working directory (default: the current one)")
    new.add_argument("-e", "--env", metavar="K=V", action="append", type=_assignment, default=[],
                     help="environment variable for the program (repeatable)")
    new.add_argument("-t", "--tag", metavar="K=V", action="append", type=_assignment, default=[],
                     help="free tag stored with the session (repeatable)")
    new.add_argument("-d", "--detached", action="store_true", help="do not attach: print the new id and return")
    new.add_argument("--detach-key", type=parse_key, default=DEFAULT_DETACH_KEY, metavar="KEY",
                     help="key that detaches (default ^\\, i.e. Ctrl-\\; `none` disables it)")
    new.add_argument("cmd", nargs="*", metavar="-- CMD ARGS",
                     help="program to run (default: the daemon's $SHELL)")

    attach = add("attach", "attach this terminal to a session (detach with Ctrl-\\)", aliases=["a"])
    attach.add_argument("session", metavar="ID|NAME")
    attach.add_argument("--detach-key", type=parse_key, default=DEFAULT_DETACH_KEY, metavar="KEY",
                        help="key that detaches (default ^\\, i.e. Ctrl-\\; e.g. ^] ; `none` disables it)")

    kill = add("kill", "hang up a session (SIGHUP, then SIGKILL); an exited one is removed")
    kill.add_argument("session", metavar="ID|NAME")

    sig = add("signal", "send a signal to a session's foreground process group")
    sig.add_argument("session", metavar="ID|NAME")
    sig.add_argument("signal", metavar="SIG", help="name (INT, SIGTERM) or number")

    send = add("send", "type TEXT (with escapes such as \\n, \\x03) or stdin into a session")
    send.add_argument("session", metavar="ID|NAME")
    send.add_argument("text", nargs="?", metavar="TEXT")
    send.add_argument("--stdin", action="store_true", help="send standard input as is instead of TEXT")

    snap = add("snapshot", "print a session's screen")
    snap.add_argument("session", metavar="ID|NAME")
    snap.add_argument("--format", choices=["text", "ansi"], default="text",
                      help="text: the screen as plain text (default); ansi: the raw VT snapshot")
    snap.add_argument("--scrollback", action="store_true", help="text: the history above the screen too")

    st = add("stats", "daemon statistics")
    st.add_argument("--json", action="store_true", help="print the raw stats as JSON")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        parser.exit(2)
    if args.command == "send" and (args.text is None) == (not args.stdin):
        parser.error("send: give TEXT or --stdin (one of them)")
    args.socket = getattr(args, "socket", None) or default_socket_path()
    return args


# ---------------------------------------------------------------------------------------------------------
# Output formatting


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def format_state(info: dict[str, Any]) -> str:
    if info.get("running"):
        return "running"
    if info.get("exit_signal") is not None:
        return f"exited {_signame(int(info['exit_signal']))}"
    code = info.get("exit_code")
    return "exited" if code is None else f"exited {code}"


def _shorten(text: str, width: int, left: bool = False) -> str:
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if left else text[: width - 1] + "…"


def _tilde(path: str, home: str) -> str:
    if home and home != "/" and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home) :]
    return path


def format_table(sessions: Sequence[dict[str, Any]], now: float | None = None, home: str | None = None) -> str:
    """The `ls` table: one row per session, columns padded to their widest cell."""
    now = time.time() if now is None else now
    home = os.path.expanduser("~") if home is None else home
    header = ["ID", "NAME", "PID", "COMMAND", "CWD", "SIZE", "CLIENTS", "STATE", "AGE"]
    rows = [header]
    for s in sorted(sessions, key=lambda s: int(s.get("id", 0))):
        rows.append([
            str(s.get("id", "")),
            _shorten(str(s.get("name") or ""), 20),
            str(s.get("pid", "")),
            _shorten(shlex.join(s.get("command") or []), 40),
            _shorten(_tilde(str(s.get("cwd") or ""), home), 40, left=True),
            f"{s.get('cols', '?')}x{s.get('rows', '?')}",
            str(s.get("clients", 0)),
            format_state(s),
            format_age(now - float(s.get("created_at") or now)),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_stats(st: dict[str, Any]) -> str:
    lines = [
        f"uptime       {format_age(float(st.get('uptime', 0)))}",
        f"connections  {st.get('connections', 0)}",
        f"sessions     {st.get('sessions', 0)} ({st.get('running', 0)} running)",
        f"bytes in     {_bytes(st.get('bytes_in', 0))}",
        f"bytes out    {_bytes(st.get('bytes_out', 0))}",
        f"rss          {_bytes(st.get('rss', 0))}",
    ]
    queues = st.get("queues") or []
    if queues:
        lines.append("queues (session connection events bytes level):")
        lines += [
            f"  {q.get('session')} {q.get('connection')} {q.get('events')} {_bytes(q.get('bytes', 0))} {q.get('level')}"
            for q in queues
        ]
    return "\n".join(lines) + "\n"


def snapshot_text(snap: dict[str, Any], scrollback: bool = False) -> str:
    """The screen (and with `scrollback` the history above it) as text, rendered by the same emulator the
    daemon uses: the snapshot's data written into a fresh terminal of its size."""
    from .emulator import Emulator

    cols, rows = int(snap.get("cols") or 80), int(snap.get("rows") or 24)
    with Emulator(cols, rows, max(int(snap.get("scrollback_lines") or 0), 1)) as emu:
        emu.feed(bytes(snap.get("data") or b""))
        text = emu.text(scrollback)
    text = "\n".join(ln.rstrip() for ln in text.split("\n")).rstrip("\n")
    return text + "\n" if text else ""


# ---------------------------------------------------------------------------------------------------------
# Plain commands


async def resolve(client: Client, ref: str) -> dict[str, Any]:
    """The SessionInfo named by an id or a name; a name shared by several sessions must pick one running one."""
    sessions = await client.list()
    if ref.isdigit():
        for s in sessions:
            if s["id"] == int(ref):
                return s
    named = [s for s in sessions if s.get("name") == ref]
    if len(named) > 1:
        running = [s for s in named if s.get("running")]
        if len(running) == 1:
            return running[0]
        ids = ", ".join(str(s["id"]) for s in named)
        raise CliError(f"{len(named)} sessions are named {ref!r} (ids {ids}): use an id")
    if named:
        return named[0]
    raise CliError(f"no session {ref!r} (see `{PROG} ls`)")


async def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = await client.list()
    if args.json:
        print(json.dumps(sessions, indent=2, sort_keys=True))
    elif sessions:
        sys.stdout.write(format_table(sessions))
    else:
        print("no sessions", file=sys.stderr)
    return 0


def _fileno(stream: Any) -> int:
    """The stream's fd, or -1 when it has none (a test's StringIO, pytest's stdin)."""
    try:
        return int(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return -1


def terminal_size(fd: int, default: tuple[int, int] = (80, 24)) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return default
    if size.columns <= 0 or size.lines <= 0:
        return default
    return size.columns, size.lines


async def cmd_new(client: Client, args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not args.detached:
        _require_tty()
    cols, rows = terminal_size(_fileno(sys.stdout))
    cwd = os.path.abspath(args.cwd) if args.cwd else os.getcwd()
    options: dict[str, Any] = {
        "cwd": cwd, "cols": cols, "rows": rows, "env": dict(args.env), "tags": dict(args.tag),
        "name": args.name, "shell": cmd[0] if cmd else None, "args": cmd[1:] if cmd else None,
    }
    if args.detached:
        info = await client.create(**options)
        print(info["id"])
        return 0
    att = Attachment(client, args.detach_key)
    return await att.run(create=options)


async def cmd_attach(client: Client, args: argparse.Namespace) -> int:
    _require_tty()
    info = await resolve(client, args.session)
    return await Attachment(client, args.detach_key).run(info=info)


async def cmd_kill(client: Client, args: argparse.Namespace) -> int:
    info = await resolve(client, args.session)
    await client.kill(info["id"])
    return 0


async def cmd_signal(client: Client, args: argparse.Namespace) -> int:
    info = await resolve(client, args.session)
    sig: int | str = int(args.signal) if args.signal.isdigit() else args.signal
    await client.signal(info["id"], sig)
    return 0


async def cmd_send(client: Client, args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.stdin else unescape(args.text)
    info = await resolve(client, args.session)
    if not data:
        return 0
    for i in range(0, len(data), INPUT_CHUNK):
        await client.input(info["id"], data[i : i + INPUT_CHUNK])
    return 0


async def cmd_snapshot(client: Client, args: argparse.Namespace) -> int:
    info = await resolve(client, args.session)
    snap = await client.snapshot(info["id"])
    if args.format == "ansi":
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(snap.get("data") or b""))
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(snapshot_text(snap, args.scrollback))
    return 0


async def cmd_stats(client: Client, args: argparse.Namespace) -> int:
    st = await client.stats()
    st.pop("type", None)
    st.pop("id", None)
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_stats(st))
    return 0


def _require_tty() -> None:
    if not (os.isatty(_fileno(sys.stdin)) and os.isatty(_fileno(sys.stdout))):
        raise CliError("attaching needs a terminal on stdin and stdout (use `new -d` or `send` from scripts)")


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Any]] = {
    "ls": cmd_ls, "list": cmd_ls, "new": cmd_new, "attach": cmd_attach, "a": cmd_attach, "kill": cmd_kill,
    "signal": cmd_signal, "send": cmd_send, "snapshot": cmd_snapshot, "stats": cmd_stats,
}


# ---------------------------------------------------------------------------------------------------------
# attach


_PRIVATE_MODE = re.compile(rb"\x1b\[\?([0-9;]*)([hl])|\x1bc")
_ALT_SCREEN_MODES = (1049, 1047, 47)

# Put back what a full-screen program may have changed, none of which moves the cursor: scroll margins (DECSTBM
# homes the cursor, hence DECSC/DECRC around it), pen and charsets, cursor keys and keypad, every mouse mode,
# focus events, bracketed paste, synchronized output, insert and newline modes, reverse video, autowrap, the
# cursor (visible, default shape), kitty keyboard flags and modifyOtherKeys; then pop the title pushed on entry.
RESTORE_MODES = (
    b"\x1b7\x1b[r\x1b8\x1b[0m\x1b(B\x0f\x1b[?1l\x1b>"
    b"\x1b[?9l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1004l\x1b[?1005l\x1b[?1006l\x1b[?1007l\x1b[?1015l\x1b[?1016l"
    b"\x1b[?2004l\x1b[?2026l\x1b[4l\x1b[20l\x1b[?5l\x1b[?7h\x1b[?25h\x1b[0 q\x1b[=0;1u\x1b[>4m"
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

    def __init__(self, client: Client, detach_key: int | None, in_fd: int = 0, out_fd: int = 1) -> None:
        self.client = client
        self.detach_key = detach_key
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.sid: int | None = None
        self.size: tuple[int, int] = (0, 0)
        self.modes = ModeTracker()
        self.next_offset = 0
        self._loop = asyncio.get_running_loop()
        self._ready = False
        self._early: list[dict[str, Any]] = []
        self._outcome: asyncio.Future[tuple[str, int]] = self._loop.create_future()
        self._repainting = False
        self._writer = TermWriter(self._loop, out_fd, lambda exc: self._finish("hangup", 0))

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def run(self, *, info: dict[str, Any] | None = None, create: dict[str, Any] | None = None) -> int:
        """Attach to `info`'s session, or create one from `create` options subscribed from its first byte."""
        for t in ("output", "exit", "resync", "shutdown", "close", "error", "backpressure_warning"):
            self.client.on(t, self._on_event)
        saved_attrs = termios.tcgetattr(self.in_fd)
        saved_flags = fcntl.fcntl(self.out_fd, fcntl.F_GETFL)
        self.size = terminal_size(self.out_fd)
        try:
            tty.setraw(self.in_fd, termios.TCSADRAIN)
            fcntl.fcntl(self.out_fd, fcntl.F_SETFL, saved_flags | os.O_NONBLOCK)
            self._writer.write(PUSH_TITLE)
            if create is not None:
                created = await self.client.create(**{**create, "attach": True,
                                                      "cols": self.size[0], "rows": self.size[1]})
                self.sid = created["id"]
                self._paint(None)
            else:
                assert info is not None
                self.sid = int(info["id"])
                if info.get("running") and (info.get("cols"), info.get("rows")) != self.size:
                    # Before the snapshot, so that it is taken (reflowed) at our size.
                    with contextlib.suppress(PtyError):
                        await self.client.resize(self.sid, *self.size)
                reply = await self.client.attach(self.sid)
                self._paint(reply.get("snapshot"), reply.get("offset", 0))
            self._ready = True
            for ev in self._early:
                self._on_event(ev)
            self._early.clear()
            self._loop.add_reader(self.in_fd, self._on_stdin)
            self._loop.add_signal_handler(signal.SIGWINCH, self._on_winch)
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._finish, "hangup", 0)
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

    def _message(self, why: str, code: int) -> str:
        sid = self.sid
        if why == "detach":
            return f"[detached from session {sid}]"
        if why == "exit":
            if code > 128:
                return f"[session {sid} exited on signal {_signame(code - 128)}]"
            return f"[session {sid} exited with code {code}]"
        if why == "shutdown":
            return f"[the daemon is shutting down; left session {sid}]"
        if why == "removed":
            return f"[session {sid} is gone]"
        return f"[lost the connection to the daemon; left session {sid}]"

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

    def _paint(self, snapshot: dict[str, Any] | None, offset: int = 0) -> None:
        """Start over from a clean screen: the snapshot's picture, or nothing for a session we saw start."""
        out = bytearray(self.modes.restore_sequence())
        out += b"\x1b[H\x1b[2J"
        self.modes.reset()
        if snapshot is not None:
            data = bytes(snapshot.get("data") or b"")
            self.modes.feed(data)
            out += data
            if (snapshot.get("modes") or {}).get("application_keypad"):
                # The snapshot sets it as DECNKM (CSI ? 66 h), which tmux and others ignore; DECKPAM they know.
                out += b"\x1b="
            offset = int(snapshot.get("offset", offset))
        self.next_offset = offset
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
            self._output(ev)
        elif t == "exit":
            sig = ev.get("signal")
            self._finish("exit", 128 + int(sig) if sig else int(ev.get("code") or 0))
        elif t == "resync":
            self._paint(ev["snapshot"])
        elif t == "shutdown":
            self._finish("shutdown", 1)
        elif t == "close":
            self._finish("closed", 1)
        elif t == "error" and ev.get("code") == "session_not_found":
            self._finish("removed", 1)

    def _output(self, ev: dict[str, Any]) -> None:
        data: bytes = ev["data"]
        offset: int = ev["offset"]
        end = offset + len(data)
        if end <= self.next_offset:
            return  # already in the snapshot we painted
        if offset < self.next_offset:
            data = data[self.next_offset - offset :]
        self.next_offset = end
        if self._repainting:
            return
        self.modes.feed(data)
        self._writer.write(data)
        if self._writer.pending > OUTPUT_BACKLOG_MAX:
            # The terminal is far behind: drop the backlog and repaint from a fresh snapshot.
            self._writer.discard()
            self._writer.write(b"\x18")
            self._repainting = True
            self._loop.create_task(self._repaint())

    async def _repaint(self) -> None:
        try:
            assert self.sid is not None
            snap = await self.client.snapshot(self.sid)
        except PtyError:
            self._repainting = False
            return
        self._repainting = False
        self._paint(snap)


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


# ---------------------------------------------------------------------------------------------------------


def _connection_error(exc: OSError, path: str) -> CliError:
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError) or exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return CliError(f"daemon not running (nothing listens on {path}); start it with `vibest-pty-daemon` or `./run`")
    if isinstance(exc, PermissionError):
        return CliError(f"cannot connect to {path}: permission denied (the daemon belongs to another user?)")
    return CliError(f"cannot connect to {path}: {exc.strerror or exc}")


async def run(args: argparse.Namespace) -> int:
    try:
        client = await connect(args.socket, hello=True)
    except OSError as exc:
        raise _connection_error(exc, args.socket) from None
    try:
        result: int = await COMMANDS[args.command](client, args)
        return result
    finally:
        await client.close()


_ERROR_TEXT = {
    "session_not_found": "no such session",
    "session_exited": "the session has exited",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except ConnectionClosed as exc:
        print(f"{PROG}: lost the connection to the daemon ({exc.message})", file=sys.stderr)
        return 1
    except PtyError as exc:
        text = _ERROR_TEXT.get(exc.code, exc.message or exc.code)
        if exc.code in _ERROR_TEXT and exc.message:
            text = f"{text} ({exc.message})"
        print(f"{PROG}: {args.command}: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
