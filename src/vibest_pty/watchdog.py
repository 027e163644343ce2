"""Nothing of a session outlives its daemon unseen: a tiny process that hangs sessions up when the daemon dies.

A daemon killed by SIGKILL or the OOM killer cannot hang up its sessions, and programs that ignore SIGHUP (a
`trap '' HUP` loop, a `nohup` job) would keep running under pid 1. So the daemon starts this watchdog at once
(posix_spawn: its cost does not depend on the daemon's heap), keeps the write end of a pipe whose read end is the
watchdog's stdin, and tells it each session's id (the session leader's pid; every process of the session shares
it unless it called setsid itself). When the pipe reaches EOF (the daemon is gone: clean exit, crash or kill),
the watchdog sends SIGHUP + SIGCONT to every process of those sessions, SIGKILL to what is left after
KILL_AFTER_S, and exits. An in-place upgrade passes the write end across execve, so the same watchdog keeps
watching the new code.

Wire format (daemon -> watchdog), one line each: `+SID STARTTIME` (track), `-SID` (forget). STARTTIME is the
leader's start time from /proc/SID/stat: a leader pid that was reused by a stranger is never taken for ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

log = logging.getLogger("vibest_pty.watchdog")

KILL_AFTER_S = 0.5  # SIGHUP first (shells save history, editors their swap), SIGKILL after this long
GIVE_UP_S = 2.0  # stop rescanning after this long (a process stuck in D state cannot be killed anyway)


def _stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time) of a process, from /proc/PID/stat; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    return int(rest[3]), int(rest[19])  # field 6 (session), field 22 (starttime)


def start_time(pid: int) -> int:
    st = _stat(pid)
    return st[1] if st is not None else 0


def members(sessions: dict[int, int]) -> list[int]:
    """Every live process whose session is one of ours (a leader reused by a stranger excluded)."""
    ours = set()
    for sid, started in sessions.items():
        leader = _stat(sid)
        if leader is None or leader[1] == started or started == 0:
            ours.add(sid)  # the leader is ours or gone (its session's members remain ours)
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        st = _stat(int(name))
        if st is not None and st[0] in ours:
            found.append(int(name))
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap_sessions(sessions: dict[int, int]) -> int:
    """Hang up, then kill, every process of `sessions`. Returns how many were still there for SIGKILL."""
    pids = members(sessions)
    if not pids:
        return 0
    _signal_all(pids, signal.SIGHUP)
    _signal_all(pids, signal.SIGCONT)  # a stopped job would not see the hangup until continued
    deadline = time.monotonic() + KILL_AFTER_S
    while time.monotonic() < deadline and (pids := members(sessions)):
        time.sleep(0.05)
    killed = len(pids)
    end = time.monotonic() + GIVE_UP_S
    while pids and time.monotonic() < end:
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.05)
        pids = members(sessions)
    return killed


def run(fd: int = 0) -> int:
    sessions: dict[int, int] = {}
    buf = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            try:
                if line.startswith(b"+"):
                    sid, started = line[1:].split()
                    sessions[int(sid)] = int(started)
                elif line.startswith(b"-"):
                    sessions.pop(int(line[1:]), None)
            except ValueError:
                continue  # not from our daemon; keep watching
    killed = reap_sessions(sessions)
    if sessions:
        print(f"vibest-pty watchdog: daemon gone; hung up {len(sessions)} sessions "
              f"({killed} processes needed SIGKILL)", file=sys.stderr)
    return 0


class Watchdog:
    """The daemon's side: start the watchdog, tell it the sessions. Writes never block the loop (a dead watchdog
    just stops being told)."""

    def __init__(self, write_fd: int, pid: int) -> None:
        self.fd = write_fd
        self.pid = pid

    @classmethod
    def start(cls) -> Watchdog | None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.posix_spawn(
                sys.executable, [sys.executable, "-m", "vibest_pty.watchdog"], dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)],  # dup2 clears close-on-exec on the copy
                setpgroup=0,  # its own group: a Ctrl-C meant for a foreground daemon does not reach it
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE),
            )
        except OSError as exc:
            log.warning("cannot start the watchdog (sessions may outlive a crashed daemon): %s", exc)
            os.close(r)
            os.close(w)
            return None
        os.close(r)
        os.set_blocking(w, False)
        return cls(w, pid)

    def _send(self, line: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, line.encode())
        except OSError as exc:  # EAGAIN (64 KiB of lines unread) or EPIPE (it died)
            log.warning("watchdog not told %r: %s", line.strip(), exc)

    def track(self, pid: int) -> None:
        self._send(f"+{pid} {start_time(pid)}\n")

    def forget(self, pid: int) -> None:
        self._send(f"-{pid}\n")

    def reap(self) -> None:
        """Collect its exit status if it has exited (it is our child)."""
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)


if __name__ == "__main__":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon's terminal closing is not our cue: the pipe is
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(run())
