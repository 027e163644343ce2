"""The commands that take over the terminal: `new` (create, then attach from the first byte) and `attach`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..client import Client
from .attach import Attachment, terminal_size
from .common import CliError, fileno, resolve_id


def require_tty() -> None:
    if not (os.isatty(fileno(sys.stdin)) and os.isatty(fileno(sys.stdout))):
        raise CliError("attaching needs a terminal on stdin and stdout (use `new -d` or `send` from scripts)")


async def cmd_new(client: Client, args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not args.detached:
        require_tty()
    cols, rows = terminal_size(fileno(sys.stdout))
    cwd = os.path.abspath(args.cwd) if args.cwd else os.getcwd()
    options: dict[str, Any] = {
        "cwd": cwd, "cols": cols, "rows": rows, "env": dict(args.env), "tags": dict(args.tag),
        "name": args.name, "shell": cmd[0] if cmd else None, "args": cmd[1:] if cmd else None,
        "kill_after_detach_s": args.kill_after_detach_s,
    }
    if args.detached:
        info = await client.create(**options)
        print(info["id"])
        return 0
    return await Attachment(client, args.detach_key, timeout=args.timeout).run(create=options)


async def cmd_attach(client: Client, args: argparse.Namespace) -> int:
    require_tty()
    sid = await resolve_id(client, args.session)
    return await Attachment(client, args.detach_key, timeout=args.timeout).run(sid=sid)
