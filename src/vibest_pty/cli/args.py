"""Command-line parsing: the parser, and the argument types that turn bad input into exit status 2."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import protocol
from ..config import default_socket_path
from .common import PROG, CliError

DEFAULT_DETACH_KEY = "^\\"

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
  vibest-pty prune                       remove the records of exited sessions
  vibest-pty run 3 -- make test          run a command at session 3's shell prompt, print its output and
                                         exit with its status (bash/zsh/fish shell integration)
  vibest-pty wait 3 --text 'listening'   wait until the screen shows a regex (--prompt, --idle MS, --exit)
  vibest-pty daemon status               is the daemon running? (start, stop)
  vibest-pty upgrade                     replace the daemon's code in place (sessions and clients stay);
                                         --command ARGV... runs another installation's daemon instead

A command that needs the daemon starts it in the background when none is running (`--no-start`: do not; the
daemon's log is daemon.log next to the socket). The socket is --socket, else $RUST_PTY_SOCKET_PATH, else
$HOME/.vibest/pty/socket. Exit status: 0 ok, 1 failure, 2 bad arguments.
"""


def _signal(text: str) -> int | str:
    """A signal name (INT, SIGTERM) or number, checked here so that a bad one is a usage error (exit 2)."""
    value: int | str = int(text) if text.isdigit() else text
    try:
        protocol.parse_signal(value)
    except protocol.ProtocolError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 86400], got {text!r}")
    return value


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
    common.add_argument("--no-start", action="store_true", default=argparse.SUPPRESS,
                        help="fail instead of starting the daemon when none is running")
    p = _Parser(
        prog=PROG, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Command-line client of vibest-pty-daemon: list, create, attach to and drive PTY sessions.",
    )
    from .. import __version__

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
    new.add_argument("--kill-after-detach", type=_timeout, metavar="S", dest="kill_after_detach_s",
                     help="kill the session S seconds after its last client left (an attach cancels it)")
    new.add_argument("--detach-key", type=parse_key, default=DEFAULT_DETACH_KEY, metavar="KEY",
                     help="key that detaches (default ^\\, i.e. Ctrl-\\; `none` disables it)")
    new.add_argument("cmd", nargs="*", metavar="-- CMD ARGS",
                     help="program to run (default: the daemon's $SHELL)")

    attach = add("attach", "attach this terminal to a session (detach with Ctrl-\\)", aliases=["a"])
    attach.add_argument("session", metavar="ID|NAME")
    attach.add_argument("--detach-key", type=parse_key, default=DEFAULT_DETACH_KEY, metavar="KEY",
                        help="key that detaches (default ^\\, i.e. Ctrl-\\; e.g. ^] ; `none` disables it)")
    for a in (new, attach):
        a.add_argument("--timeout", type=_timeout, default=30.0, metavar="S",
                       help="give up when the daemon has not answered within S seconds (default 30); the "
                            "detach key or Ctrl-C gives up sooner")

    kill = add("kill", "hang up a session (SIGHUP, then SIGKILL); an exited one is removed")
    kill.add_argument("session", metavar="ID|NAME")

    sig = add("signal", "send a signal to a session's foreground process group")
    sig.add_argument("session", metavar="ID|NAME")
    sig.add_argument("signal", metavar="SIG", type=_signal, help="name (INT, SIGTERM) or number")

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

    prune = add("prune", "remove the records of exited sessions (running ones are left alone)")
    prune.add_argument("--json", action="store_true", help="print the removed ids as a JSON array")

    up = add("upgrade", "replace the daemon's code in place (same pid; sessions and connections are kept)")
    up.add_argument("--command", dest="upgrade_command", nargs=argparse.REMAINDER, default=None, metavar="ARGV",
                    help="the new daemon's command line (e.g. /opt/app/v2/bin/python -m vibest_pty); default: "
                         "the daemon's own interpreter with -m vibest_pty and its arguments")

    run = add("run", "type a command at a session's shell prompt, print its output, exit with its status")
    run.add_argument("session", metavar="ID|NAME")
    run.add_argument("cmd", nargs="+", metavar="-- CMD ARGS",
                     help="the command line (one argument is taken as is; several are shell-quoted and joined)")
    run.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                     help="give up after S seconds (exit 124, the command keeps running); default 60")

    wait = add("wait", "wait until a session shows its prompt, goes idle, shows a regex, or exits")
    wait.add_argument("session", metavar="ID|NAME")
    cond = wait.add_mutually_exclusive_group(required=True)
    cond.add_argument("--prompt", action="store_true", help="the shell is at its prompt (shell integration)")
    cond.add_argument("--idle", type=int, metavar="MS", help="no output for MS milliseconds")
    cond.add_argument("--text", metavar="REGEX", help="the screen text matches REGEX")
    cond.add_argument("--exit", action="store_true", help="the session exits (exit status: its code)")
    wait.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                      help="give up after S seconds (exit 124); default: no limit")

    from ..web import add_arguments as add_web_arguments

    add_web_arguments(add("web", "serve the web terminal (xterm.js page + WebSocket relay) on loopback; docs/web.md"))

    dm = add("daemon", "start, stop or check the daemon (start: in the background, logging next to the socket)")
    dm.add_argument("action", choices=["start", "stop", "status"])
    dm.add_argument("--timeout", type=_timeout, default=15.0, metavar="S",
                    help="start/stop: how long to wait for the daemon to answer / to be gone (default 15)")
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
    args.no_start = getattr(args, "no_start", False)
    return args
