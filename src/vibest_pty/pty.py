"""PTY allocation and child spawning without fork.

posix_spawn keeps spawn cost flat as the daemon's heap grows (a fork copies page tables: ~50 ms at 1 GiB).
With setsid=True the child opens the slave path as fd 0 after becoming a session leader, which makes the slave
its controlling terminal on Linux.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Every catchable signal back to SIG_DFL in the child: the daemon ignores SIGHUP and Python ignores SIGPIPE.
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


@dataclass(slots=True)
class Child:
    pid: int
    master_fd: int


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, cols: int, rows: int
) -> Child:
    """Start argv[0] (looked up in PATH when it has no '/') on a new PTY; raises OSError with the reason."""
    master, slave = os.openpty()  # both O_CLOEXEC: nothing of ours leaks into the child
    try:
        set_winsize(master, cols, rows)
        pts = os.ttyname(slave)  # the child opens it by path: the first open after setsid makes it its tty
        file_actions = [
            (os.POSIX_SPAWN_OPEN, 0, pts, os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1),
            (os.POSIX_SPAWN_DUP2, 0, 2),
        ]
        envb = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        # posix_spawn has no cwd argument in Python, so chdir around it. The daemon's other thread (the emulator
        # worker) never uses relative paths, so the process-wide change is safe.
        old = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
            spawner = os.posix_spawnp if "/" not in argv[0] else os.posix_spawn
            pid = spawner(
                argv[0],
                list(argv),
                envb,  # bytes keys/values: an env var need not be UTF-8
                file_actions=file_actions,
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
                setsigmask=(),
            )
        finally:
            os.fchdir(old)
            os.close(old)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return Child(pid, master)


def foreground_pgrp(master_fd: int) -> int | None:
    try:
        pg = os.tcgetpgrp(master_fd)
    except OSError:
        return None
    return pg if pg > 0 else None


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal number) from a waitpid status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None
