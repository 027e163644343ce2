"""What every command shares: the program name, the one-line error type, and how a session is named."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..client import Client, PtyError, SessionInfo
from ..protocol import SESSION_NOT_FOUND
from .format import escape

PROG = "vibest-pty"
T = TypeVar("T")


class CliError(Exception):
    """A failure reported as one line on stderr; `code` is the exit status (2: bad arguments)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


async def resolve_id(client: Client, ref: str) -> int:
    """The id named by `ref`: a number is taken as an id without asking for the list (which may be huge or
    failing); a name, or a number no session has as id, is looked up in `list`."""
    if ref.isdigit() and int(ref) <= 2**32 - 1:
        return int(ref)
    return int((await resolve(client, ref))["id"])


async def resolve(client: Client, ref: str) -> SessionInfo:
    """The SessionInfo named by an id or a name; a name shared by several sessions must pick one running one."""
    sessions = await client.list_sessions()
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
        raise CliError(f"{len(named)} sessions are named {escape(repr(ref))} (ids {ids}): use an id")
    if named:
        return named[0]
    raise CliError(f"no session {escape(repr(ref))} (see `{PROG} ls`)")


async def by_ref(client: Client, ref: str, op: Callable[[int], Awaitable[T]]) -> T:
    """Run `op(id)` for the session `ref` names. A number is tried as an id first; when no session has it,
    a session *named* so is looked up (and the original error kept when there is none)."""
    sid = await resolve_id(client, ref)
    try:
        return await op(sid)
    except PtyError as exc:
        if exc.code != SESSION_NOT_FOUND or not ref.isdigit():
            raise
        try:
            named = await resolve(client, ref)
        except (CliError, PtyError):
            raise exc from None
        if named["id"] == sid:
            raise
        return await op(named["id"])


def fileno(stream: Any) -> int:
    """The stream's fd, or -1 when it has none (a test's StringIO, pytest's stdin)."""
    try:
        return int(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return -1


def eprint(message: str) -> None:
    print(message, file=sys.stderr)
