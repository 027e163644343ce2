"""Shared plumbing for the benchmarks: a daemon under test, a minimal synchronous client, tmux, the C raw-PTY
reader, statistics and /proc readings.

Nothing here is part of the package; the benchmarks import it as `common` (bench/ is put on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
_HDR = struct.Struct(">I")
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


# -- the daemon ----------------------------------------------------------------------------------------------------


class Daemon:
    """A vibest-pty-daemon in a temporary directory, stopped on exit. `env` adds RUST_PTY_* settings."""

    def __init__(self, env: dict[str, str] | None = None, *, python: str = PYTHON) -> None:
        self.dir = tempfile.mkdtemp(prefix="vpb-")
        self.socket = os.path.join(self.dir, "s", "socket")
        self.extra_env = env or {}
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0

    def start(self, timeout: float = 20.0) -> Daemon:
        env = {**os.environ, "RUST_PTY_SOCKET_PATH": self.socket, "RUST_PTY_LOG_LEVEL": "warning",
               **self.extra_env}
        if os.environ.get("VPB_DAEMON_SRC"):  # measure a modified copy of src/ (before/after a daemon change)
            env["PYTHONPATH"] = os.environ["VPB_DAEMON_SRC"] + os.pathsep + env.get("PYTHONPATH", "")
        self.log = open(os.path.join(self.dir, "daemon.log"), "wb")  # noqa: SIM115
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([self.python, "-m", "vibest_pty"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            try:
                c = SyncClient(self.socket)
                c.request("hello", protocol=1, client="bench")
                c.close()
                break
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"daemon did not start: {self.read_log()[-2000:]}") from None
                time.sleep(0.002)
        self.start_s = time.perf_counter() - t0
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def read_log(self) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.dir, "daemon.log"), "rb") as f:
            return f.read().decode(errors="replace")
        return ""

    def client(self) -> SyncClient:
        return SyncClient(self.socket)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncClient:
    """A blocking client with as little overhead as Python allows: one recv buffer, msgpack's C unpacker.
    Used instead of the asyncio client so that the benchmark measures the daemon, not the client's event loop."""

    def __init__(self, path: str, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(path)
        self.buf = bytearray()
        self.ids = 0
        self.events: list[dict[str, Any]] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: dict[str, Any]) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(_HDR.pack(len(body)) + body)

    def send_request(self, type: str, **fields: Any) -> int:
        self.ids += 1
        self.send({"type": type, "id": self.ids, **fields})
        return self.ids

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("daemon closed the connection")
        self.buf += data

    def frames(self) -> Iterator[dict[str, Any]]:
        """Complete frames already buffered."""
        buf = self.buf
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = _HDR.unpack_from(buf, pos)[0]
            if n - pos - 4 < length:
                break
            msg = msgpack.unpackb(memoryview(buf)[pos + 4 : pos + 4 + length], raw=False)
            pos += 4 + length
            yield msg
        if pos:
            del buf[:pos]

    def next_message(self) -> dict[str, Any]:
        while True:
            buf = self.buf
            if len(buf) >= 4:
                length = _HDR.unpack_from(buf, 0)[0]
                if len(buf) - 4 >= length:
                    msg = msgpack.unpackb(bytes(buf[4 : 4 + length]), raw=False)
                    del buf[: 4 + length]
                    return msg  # type: ignore[no-any-return]
            self._fill()

    def request(self, type: str, **fields: Any) -> dict[str, Any]:
        rid = self.send_request(type, **fields)
        while True:
            msg = self.next_message()
            if msg.get("id") == rid and msg.get("type") in ("ok", "error"):
                if msg["type"] == "error":
                    raise RuntimeError(f"{type}: {msg.get('code')}: {msg.get('message')}")
                return msg
            self.events.append(msg)

    def wait_event(self, type: str, session: int | None = None) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("type") == type and (session is None or ev.get("session") == session):
                return self.events.pop(i)
        while True:
            msg = self.next_message()
            if msg.get("type") == type and (session is None or msg.get("session") == session):
                return msg
            self.events.append(msg)

    def create(self, **options: Any) -> dict[str, Any]:
        return self.request("create", options=options)["session"]  # type: ignore[no-any-return]


def wait_output(c: SyncClient, session: int, needle: bytes, timeout: float = 30.0) -> bytes:
    """Read output events of `session` until `needle` appeared; returns everything read."""
    got = bytearray()
    c.sock.settimeout(timeout)
    try:
        for ev in c.events:
            if ev.get("type") == "output" and ev.get("session") == session:
                got += ev["data"]
        c.events.clear()
        while needle not in got:
            msg = c.next_message()
            if msg.get("type") == "output" and msg.get("session") == session:
                got += msg["data"]
    finally:
        c.sock.settimeout(None)
    return bytes(got)


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
