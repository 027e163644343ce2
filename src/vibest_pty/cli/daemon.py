"""Finding, starting and stopping the daemon, as tmux does its server: a command that needs one and finds
none starts it in the background (its own session, its log next to the socket) and waits for its hello."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import subprocess
import sys
import time

from ..client import Client, ConnectionClosed, UntrustedServer, connect
from .common import PROG, CliError

START_TIMEOUT = 15.0  # the daemon answers in well under a second; a loaded CI box needs a few
RACE_GRACE = 2.0  # after our daemon exited at startup, how long another one (that won the lock) may take to answer


def log_path(socket_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(socket_path)), "daemon.log")


def _not_running(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | ConnectionRefusedError) or exc.errno in (
        errno.ENOENT, errno.ECONNREFUSED)


def connection_error(exc: OSError, path: str) -> CliError:
    if isinstance(exc, UntrustedServer):
        return CliError(str(exc))
    if _not_running(exc):
        return CliError(f"daemon not running (nothing listens on {path}); start it with `{PROG} daemon start`")
    if isinstance(exc, PermissionError):
        return CliError(f"cannot connect to {path}: permission denied (the daemon belongs to another user?)")
    return CliError(f"cannot connect to {path}: {exc.strerror or exc}")


def spawn_daemon(socket_path: str) -> subprocess.Popen[bytes]:
    """Start `vibest-pty-daemon` for `socket_path` in the background: a new session (no controlling terminal,
    so closing this one does not hang it up), cwd /, output appended to daemon.log next to the socket."""
    directory = os.path.dirname(os.path.abspath(socket_path))
    os.makedirs(directory, mode=0o700, exist_ok=True)  # the daemon checks (and refuses) its permissions
    fd = os.open(log_path(socket_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "vibest_pty"], stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/",
            env={**os.environ, "RUST_PTY_SOCKET_PATH": socket_path}, start_new_session=True,
        )
    finally:
        os.close(fd)


def _log_tail(socket_path: str, lines: int = 5) -> str:
    try:
        with open(log_path(socket_path), errors="replace") as f:
            tail = f.read()[-4000:].splitlines()[-lines:]
    except OSError:
        return ""
    from .format import escape

    return "".join(f"\n  {escape(ln)}" for ln in tail)


async def start_daemon(socket_path: str, timeout: float = START_TIMEOUT) -> Client:
    """Start a daemon and return a client connected to it (or to the one that won a race to start)."""
    proc = spawn_daemon(socket_path)
    deadline = time.monotonic() + timeout
    delay = 0.01
    exited_at: float | None = None
    while True:
        try:
            return await connect(socket_path)
        except UntrustedServer:
            raise
        except (OSError, ConnectionClosed) as exc:
            code = proc.poll()
            now = time.monotonic()
            if code is not None:
                # It exited: it failed (and said why in its log), or it lost a race with a daemon started by
                # someone else at the same moment, which then answers within a moment.
                exited_at = exited_at or now
                if now - exited_at > RACE_GRACE or now > deadline:
                    raise CliError(f"the daemon exited with status {code} at startup; its log "
                                   f"({log_path(socket_path)}) ends with:{_log_tail(socket_path)}") from None
            elif now + delay > deadline:
                raise CliError(f"started the daemon (pid {proc.pid}) but it did not answer on {socket_path} "
                               f"within {timeout:g} s ({exc}); see {log_path(socket_path)}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def ensure_daemon(args: argparse.Namespace) -> Client:
    """A client of the running daemon; one is started first when none runs, unless --no-start."""
    try:
        return await connect(args.socket)
    except OSError as exc:
        if args.no_start or not _not_running(exc) or isinstance(exc, UntrustedServer):
            raise connection_error(exc, args.socket) from None
    return await start_daemon(args.socket)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (its parent, not us, has yet to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


async def cmd_daemon(args: argparse.Namespace) -> int:
    path = args.socket
    try:
        client: Client | None = await connect(path)
    except OSError as exc:
        if not _not_running(exc) or isinstance(exc, UntrustedServer):
            raise connection_error(exc, path) from None
        client = None
    if args.action == "start":
        if client is None:
            client = await start_daemon(path, args.timeout)
            print(f"started the daemon (pid {client.server_pid}) on {path}; log: {log_path(path)}")
        else:
            print(f"the daemon is already running (pid {client.server_pid}) on {path}")
        await client.close()
        return 0
    if client is None:
        print(f"the daemon is not running (nothing listens on {path})")
        return 1 if args.action == "status" else 0
    pid = client.server_pid
    if args.action == "status":
        st = await client.stats()
        await client.close()
        print(f"the daemon is running (pid {pid}, version {client.server_version}) on {path}: "
              f"{st.get('sessions', 0)} sessions ({st.get('running', 0)} running), "
              f"{st.get('connections', 0)} connections")
        return 0
    await client.close()
    # stop: SIGTERM is the daemon's graceful path (shutdown event to clients, sessions hung up, socket removed).
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it went away by itself meanwhile
    except PermissionError:
        raise CliError(f"cannot stop the daemon (pid {pid}): it belongs to another user") from None
    deadline = time.monotonic() + args.timeout
    while not (_gone(pid) and not os.path.exists(path)):
        if time.monotonic() > deadline:
            raise CliError(f"sent SIGTERM to the daemon (pid {pid}) but it is still running after "
                           f"{args.timeout:g} s")
        await asyncio.sleep(0.05)
    print(f"stopped the daemon (pid {pid})")
    return 0
