"""The plain commands: one request or a few, a line or a table out. Session names and ids go through
`common.by_ref`; everything printed that came from a session goes through `format.escape`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from ..client import Client, PtyError, RunResult, WaitResult
from .common import by_ref, eprint
from .format import escape, escape_text, format_stats, format_table, snapshot_text

INPUT_CHUNK = 64 * 1024  # `send --stdin` splits its input into requests of this size


async def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    sessions = await client.list()
    if args.json:
        # json.dumps escapes every control character (ensure_ascii), so this is as safe as the table.
        print(json.dumps(sessions, indent=2, sort_keys=True))
    elif sessions:
        sys.stdout.write(format_table(sessions))
    else:
        eprint("no sessions")
    return 0


TIMEOUT_EXIT = 124  # as timeout(1)


async def cmd_run(client: Client, args: argparse.Namespace) -> int:
    command = args.cmd[0] if len(args.cmd) == 1 else shlex.join(args.cmd)
    timeout_ms = None if args.timeout is None else int(args.timeout * 1000)

    async def op(sid: int) -> RunResult:
        return await client.run_command(sid, command, timeout_ms=timeout_ms)

    try:
        ok = await by_ref(client, args.session, op)
    except PtyError as exc:
        if exc.code != "timeout":
            raise
        partial = str(exc.reply.get("output") or "")
        if partial:
            sys.stdout.write(escape_text(partial) + "\n")
        eprint(f"run: timed out; the command is still running in session {args.session}")
        return TIMEOUT_EXIT
    out = str(ok.get("output") or "")
    if out:
        sys.stdout.write(escape_text(out) + "\n")
    code = ok.get("exit_code")
    return code & 0xFF if isinstance(code, int) else 1


async def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    timeout_ms = None if args.timeout is None else int(args.timeout * 1000)
    extra: dict[str, Any] = {}
    if args.prompt:
        kind = "prompt"
    elif args.exit:
        kind = "exit"
    elif args.idle is not None:
        kind, extra = "idle", {"idle_ms": max(1, args.idle)}
    else:
        kind, extra = "text", {"pattern": args.text}

    async def op(sid: int) -> WaitResult:
        return await client.wait_for(sid, kind, timeout_ms=timeout_ms, **extra)

    try:
        ok = await by_ref(client, args.session, op)
    except PtyError as exc:
        if exc.code != "timeout":
            raise
        eprint(f"wait: not before the timeout ({args.timeout}s)")
        return TIMEOUT_EXIT
    if kind == "text":
        print(escape_text(str(ok.get("match", ""))))
    if kind == "exit":
        code = ok.get("code")
        return code & 0xFF if isinstance(code, int) else 1
    return 0


async def cmd_kill(client: Client, args: argparse.Namespace) -> int:
    await by_ref(client, args.session, client.kill)
    return 0


async def cmd_signal(client: Client, args: argparse.Namespace) -> int:
    async def op(sid: int) -> None:
        await client.signal(sid, args.signal)

    await by_ref(client, args.session, op)
    return 0


async def cmd_send(client: Client, args: argparse.Namespace) -> int:
    from .args import unescape

    data = sys.stdin.buffer.read() if args.stdin else unescape(args.text)

    async def op(sid: int) -> None:
        # The first chunk (possibly empty: it still checks that the session exists) names the session.
        for i in range(0, max(len(data), 1), INPUT_CHUNK):
            chunk = data[i : i + INPUT_CHUNK]
            if chunk or not data:
                await client.input(sid, chunk)

    await by_ref(client, args.session, op)
    return 0


async def cmd_snapshot(client: Client, args: argparse.Namespace) -> int:
    snap = await by_ref(client, args.session, client.get_snapshot)
    if args.format == "ansi":
        sys.stdout.flush()
        sys.stdout.buffer.write(bytes(snap.get("data") or b""))
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(snapshot_text(snap, args.scrollback))
    return 0


async def cmd_stats(client: Client, args: argparse.Namespace) -> int:
    st = dict(await client.stats())
    st.pop("type", None)
    st.pop("id", None)
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_stats(st))
    return 0


async def cmd_upgrade(client: Client, args: argparse.Namespace) -> int:
    """The daemon's in-place upgrade (docs/upgrade.md): old -> new version and the pause its clients saw."""
    fields: dict[str, Any] = {}
    if args.upgrade_command is not None:
        if not args.upgrade_command:
            eprint("upgrade: --command needs the new daemon's command line")
            return 2
        fields["command"] = list(args.upgrade_command)
    r = await client.request("upgrade", **fields)
    print(f"upgraded the daemon in place: {escape(r.get('previous_version'))} -> {escape(r.get('version'))} "
          f"(pid {escape(r.get('pid'))}, pause {float(r.get('pause_ms') or 0):.1f} ms)")
    return 0


async def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    removed = await client.prune()
    if args.json:
        print(json.dumps(removed))
    elif removed:
        print(escape_text(f"removed {len(removed)} exited session{'s' if len(removed) != 1 else ''}: "
                          + " ".join(str(i) for i in removed)))
    else:
        eprint("no exited sessions")
    return 0
