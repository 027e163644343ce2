"""Shared plumbing for the benchmarks: the daemon under test and its raw peer (from vibest_pty.testing, shared with
the test suite), tmux, the C raw-PTY reader, statistics and /proc readings.

Nothing here is part of the package; the benchmarks import it as `common` (bench/ is put on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from vibest_pty.testing import Daemon, RawPeer

__all__ = ["Daemon", "RawPeer"]  # re-exported for the benchmarks' annotations

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = resource.getpagesize()


# -- statistics ---------------------------------------------------------------------------------------------------


def write_json(path: str | None, res: dict[str, Any]) -> None:
    """A script's results, when --json asked for them."""
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)


def pct(values: list[float], p: float) -> float:
    """Percentile by nearest rank on the sorted values (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- environment ---------------------------------------------------------------------------------------------------


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ensure_tmux() -> str | None:
    """tmux's path, installing it with apt-get when missing (as root); None when it cannot be had."""
    path = shutil.which("tmux")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "tmux"], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("tmux")


def machine_note() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    tmux = ""
    if shutil.which("tmux"):
        tmux = subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores, {cpu}, Linux {os.uname().release}, Python {sys.version.split()[0]}, {tmux}"


# -- /proc ---------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def emulator_pids(d: Daemon) -> list[int]:
    """The daemon's emulator processes (stats `emulators`): they parse the output and make the snapshots."""
    with client(d) as c:
        return [e["pid"] for e in c.request("stats")["emulators"]]


def cpu_with_emulators(d: Daemon) -> float:
    """CPU seconds of the daemon and of its emulator processes together (a member that exited counts 0)."""
    total = cpu_seconds(d.pid)
    for pid in emulator_pids(d):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def ctx_switches(pid: int) -> int:
    """Voluntary context switches of every thread of the process: a count of its wake-ups."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
    return total


# -- the daemon ---------------------------------------------------------------------------------------------------


def new_daemon(env: dict[str, str] | None = None, *, python: str = PYTHON) -> Daemon:
    """The daemon under test (vibest_pty.testing.Daemon, the harness the test suite uses too) in a fresh temporary
    directory, logging warnings only (debug lines cost the daemon time). `env` adds RUST_PTY_* settings.
    With VPB_DAEMON_SRC set, the daemon runs a modified copy of src/ (before/after a daemon change)."""
    env = dict(env or {})
    if os.environ.get("VPB_DAEMON_SRC"):
        env["PYTHONPATH"] = os.environ["VPB_DAEMON_SRC"] + os.pathsep + os.environ.get("PYTHONPATH", "")
    return Daemon(env=env, python=python, log_level="warning")


def client(d: Daemon, **kw: Any) -> RawPeer:
    """A raw peer of `d` that waits as long as the daemon takes (no receive timeout): a benchmark measures it."""
    return d.raw(**{"timeout": None, **kw})


def wait_output(c: RawPeer, session: int, needle: bytes, timeout: float = 30.0) -> bytes:
    """Read output events of `session` until `needle` appeared; returns everything read."""
    before = c.sock.gettimeout()
    c.sock.settimeout(timeout)
    try:
        return c.output_until(session, needle)
    finally:
        c.sock.settimeout(before)


# -- the C raw-PTY reader ------------------------------------------------------------------------------------------

RAWPTY_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
/* rawpty COLS ROWS FILE: forkpty, the child execs `cat FILE` (cooked mode, as in every case measured), the parent
   reads the master in 64 KiB reads until EIO. Prints "<bytes> <seconds>" from fork to the last byte. */
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    struct winsize ws = {0};
    ws.ws_col = atoi(argv[1]); ws.ws_row = atoi(argv[2]);
    static char buf[65536];
    int fd;
    double t0 = now();
    pid_t pid = forkpty(&fd, NULL, NULL, &ws);
    if (pid < 0) { perror("forkpty"); return 1; }
    if (pid == 0) { execl("/bin/cat", "cat", argv[3], (char *)NULL); _exit(127); }
    long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) { total += n; continue; }
        if (n < 0 && errno == EINTR) continue;
        break; /* EIO: the child closed the slave */
    }
    double t1 = now();
    waitpid(pid, NULL, 0);
    printf("%lld %.6f\n", total, t1 - t0);
    return 0;
}
"""


def build_rawpty(workdir: str) -> str | None:
    src = os.path.join(workdir, "rawpty.c")
    exe = os.path.join(workdir, "rawpty")
    with open(src, "w") as f:
        f.write(RAWPTY_C)
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    r = subprocess.run([cc, "-O2", "-o", exe, src, "-lutil"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        return None
    return exe


# -- tmux ----------------------------------------------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket and config), killed on exit."""

    def __init__(self, history: int = 2000, status: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="vpb-tmux-")
        self.sock = os.path.join(self.dir, "sock")
        self.conf = os.path.join(self.dir, "tmux.conf")
        with open(self.conf, "w") as f:
            f.write(f"set -g history-limit {history}\nset -g status {'on' if status else 'off'}\n"
                    "set -g default-terminal xterm-256color\n")

    def cmd(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        r = subprocess.run(["tmux", "-S", self.sock, "-f", self.conf, *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"tmux {args}: {r.stderr.strip()}")
        return r.stdout

    def server_pid(self) -> int:
        return int(self.cmd("display-message", "-p", "#{pid}").strip())

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.cmd("kill-server", check=False, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def tmux_attach_pty(t: Tmux, cols: int, rows: int, target: str | None = None) -> tuple[int, int]:
    """Start `tmux attach` in a new PTY of cols x rows; returns (pid, master fd). The caller drains the fd."""
    import fcntl
    import pty
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        args = ["tmux", "-S", t.sock, "-f", t.conf, "attach"]
        if target:
            args += ["-t", target]
        os.execvp("tmux", args)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return pid, fd


def drain_fd_thread(fd: int) -> Any:
    """Read fd in a thread until EOF/EIO; returns the thread (daemon)."""
    import threading

    def run() -> None:
        while True:
            try:
                if not os.read(fd, 65536):
                    return
            except OSError:
                return

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def kill_wait(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
