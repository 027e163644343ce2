"""`vibest-pty`: the command-line client (ls, new, attach, kill, signal, send, snapshot, stats, prune, daemon).

Every command is one short asyncio program over `vibest_pty.client`. The modules: `args` (parsing; bad
arguments exit 2), `format` (tables, and `escape` for every string that came from a session), `attach` (the
terminal side of attach), `commands` and `interactive` (the commands), `daemon` (finding, starting, stopping it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..client import Client, ConnectionClosed, PtyError
from ..protocol import INVALID_ARGUMENT
from .args import DEFAULT_DETACH_KEY, build_parser, parse_args, parse_key, unescape
from .attach import Attachment, ModeTracker, TermWriter, find_key, key_encodings, terminal_size
from .commands import (
    cmd_kill,
    cmd_ls,
    cmd_prune,
    cmd_run,
    cmd_send,
    cmd_signal,
    cmd_snapshot,
    cmd_stats,
    cmd_upgrade,
    cmd_wait,
)
from .common import PROG, CliError, eprint, resolve, resolve_id
from .daemon import cmd_daemon, ensure_daemon
from .format import escape, format_age, format_state, format_stats, format_table, snapshot_text
from .interactive import cmd_attach, cmd_new

__all__ = [
    "COMMANDS", "DEFAULT_DETACH_KEY", "PROG", "Attachment", "CliError", "ModeTracker", "TermWriter",
    "build_parser", "escape", "find_key", "format_age", "format_state", "format_stats", "format_table",
    "key_encodings", "main", "parse_args", "parse_key", "resolve", "resolve_id", "run", "snapshot_text",
    "terminal_size", "unescape",
]

COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Any]] = {
    "ls": cmd_ls, "list": cmd_ls, "new": cmd_new, "attach": cmd_attach, "a": cmd_attach, "kill": cmd_kill,
    "signal": cmd_signal, "send": cmd_send, "snapshot": cmd_snapshot, "stats": cmd_stats, "prune": cmd_prune,
    "run": cmd_run, "wait": cmd_wait, "upgrade": cmd_upgrade,
}


async def run(args: argparse.Namespace) -> int:
    if args.command == "daemon":
        return await cmd_daemon(args)
    client = await ensure_daemon(args)
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
    if args.command == "web":  # a server with its own loop and signal handling (vibest_pty.web)
        from ..web import run as run_web

        return run_web(args)
    try:
        return asyncio.run(run(args))
    except CliError as exc:
        eprint(f"{PROG}: {escape(exc)}")
        return exc.code
    except ConnectionClosed as exc:
        eprint(f"{PROG}: lost the connection to the daemon ({escape(exc.message)})")
        return 1
    except PtyError as exc:
        # The daemon's messages quote what they were given (a cwd, a name): escaped like all session text.
        text = _ERROR_TEXT.get(exc.code, exc.message or exc.code)
        if exc.code in _ERROR_TEXT and exc.message:
            text = f"{text} ({exc.message})"
        eprint(f"{PROG}: {args.command}: {escape(text)}")
        return 2 if exc.code == INVALID_ARGUMENT else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
