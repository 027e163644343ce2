"""The emulators in their own processes: a small pool, each member serving the sessions assigned to it.

Parsing output and building snapshots is CPU work (a `yes` flood costs ~5 ms of parsing per 64 KiB; a snapshot of
a 1000x1000 terminal takes seconds). In a pool member, at a lower CPU priority (nice EMULATOR_NICE), neither can
stall the daemon's loop (no GIL is shared, the loop thread is the daemon's only thread) nor another member's
sessions; within a member, EmulatorHost serves its sessions round-robin.

Daemon side (`EmulatorPool`, a feed Backend): one socketpair per member, both ends non-blocking on the daemon's
loop (add_reader / add_writer, no threads); a session is assigned to the member with the fewest sessions when it is
registered. Members are started at the first session (an empty daemon imports no emulator code). A member that
dies is restarted and each of its sessions is rebuilt from its replay window (Feed.rebuild), its subscribers then
marked for resync, with a log line; the daemon never dies of it.

Wire: frames of a 4-byte big-endian length and a msgpack array. Daemon -> member: [sid, [command, ...]] (see
feed.py for the commands). Member -> daemon: [event, ...] (see emulator_host.py).

Member side: `python -m vibest_pty.emulator_process FD` runs `serve(FD)`: a blocking loop that reads every command
available, runs one unit of work, writes the events, and exits when the daemon closes its end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from .feed import Command

if TYPE_CHECKING:
    from .feed import Feed

log = logging.getLogger("vibest_pty.emulators")

EMULATOR_NICE = 10  # below the daemon (and the sessions' programs) but not starved on a busy machine
MAX_MESSAGE = 256 * 1024 * 1024  # a snapshot is at most a protocol frame (16 MiB by default) plus its fields
RECV_SIZE = 1 << 20
_HDR = struct.Struct(">I")


def pool_size() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _pack(obj: Any) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return _HDR.pack(len(body)) + body


class _Reader:
    """Incremental framing for the pool socket."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _HDR.unpack_from(buf, pos)
            if n > MAX_MESSAGE:
                raise ValueError(f"emulator message of {n} bytes")
            if len(buf) - pos - 4 < n:
                break
            out.append(msgpack.unpackb(bytes(buf[pos + 4 : pos + 4 + n]), raw=False, use_list=True,
                                       strict_map_key=False))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# -- daemon side --------------------------------------------------------------------------------------------------


class _Member:
    def __init__(self, pool: EmulatorPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.sessions: set[int] = set()
        self.restarts = 0
        self.pid = 0
        self.sock: socket.socket | None = None
        self._out = bytearray()
        self._writing = False
        self._reader = _Reader()
        self.start()

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            theirs.set_inheritable(True)
            env = dict(os.environ)
            self.pid = os.posix_spawn(
                sys.executable, [sys.executable, "-m", "vibest_pty.emulator_process", str(theirs.fileno())], env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._out = bytearray()
        self._writing = False
        self._reader = _Reader()
        self.pool.loop.add_reader(ours.fileno(), self._on_readable)
        log.debug("emulator process %d started (pool member %d)", self.pid, self.index)

    def send(self, obj: Any) -> None:
        if self.sock is None:
            return
        self._out += _pack(obj)
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        sock = self.sock
        if sock is None:
            return
        while self._out:
            try:
                n = sock.send(self._out)
            except BlockingIOError:
                break
            except OSError:
                self._out.clear()
                return  # the reader sees the end and restarts the member
            del self._out[:n]
        want = bool(self._out)
        if want != self._writing:
            self._writing = want
            if want:
                self.pool.loop.add_writer(sock.fileno(), self._flush)
            else:
                self.pool.loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._died()
            return
        try:
            batches = self._reader.feed(data)
        except Exception:
            log.exception("emulator process %d sent garbage", self.pid)
            self._died()
            return
        for events in batches:
            self.pool.dispatch(events)

    def _close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.pool.loop.remove_reader(sock.fileno())
        if self._writing:
            self.pool.loop.remove_writer(sock.fileno())
            self._writing = False
        sock.close()

    def _reap(self) -> str:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "gone"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit code {os.WEXITSTATUS(status)}"

    def _died(self) -> None:
        self._close()
        how = self._reap()
        if self.pool.stopping:
            return
        self.restarts += 1
        log.error("emulator process %d died (%s): restarting it and rebuilding its %d sessions from their replay "
                  "windows", self.pid, how, len(self.sessions))
        self.start()
        for sid in sorted(self.sessions):
            feed = self.pool.feeds.get(sid)
            if feed is not None:
                feed.rebuild()
                self.pool.on_rebuilt(sid)

    def stop(self) -> None:
        self._close()  # the member sees EOF and exits
        self._reap()

    def stats(self) -> dict[str, Any]:
        return {"pid": self.pid, "rss": _rss(self.pid), "sessions": len(self.sessions), "restarts": self.restarts}


class EmulatorPool:
    """A feed Backend: sessions' emulators in `size` worker processes."""

    def __init__(self, size: int | None = None, on_rebuilt: Callable[[int], None] = lambda sid: None) -> None:
        self.loop = asyncio.get_running_loop()
        self.size = size or pool_size()
        self.members: list[_Member] = []
        self.feeds: dict[int, Feed] = {}
        self._assigned: dict[int, _Member] = {}
        self.on_rebuilt = on_rebuilt
        self.stopping = False

    def register(self, feed: Feed) -> None:
        if len(self.members) < self.size and all(m.sessions for m in self.members):
            self.members.append(_Member(self, len(self.members)))  # started on demand, up to `size`
        member = min(self.members, key=lambda m: len(m.sessions))
        member.sessions.add(feed.sid)
        self._assigned[feed.sid] = member
        self.feeds[feed.sid] = feed

    def send(self, sid: int, cmds: list[Command]) -> None:
        member = self._assigned.get(sid)
        if member is not None:
            member.send([sid, cmds])

    def unregister(self, sid: int) -> None:
        self.feeds.pop(sid, None)
        member = self._assigned.pop(sid, None)
        if member is not None:
            member.sessions.discard(sid)

    def dispatch(self, events: list[list[Any]]) -> None:
        for ev in events:
            feed = self.feeds.get(ev[1])
            if feed is None:
                continue
            kind = ev[0]
            if kind == "parsed":
                feed.on_parsed(ev[2], ev[3], ev[4])
            elif kind == "result":
                feed.on_result(ev[2], ev[3], ev[4])
            elif kind == "reply":
                feed.on_reply(ev[2])

    def stats(self) -> list[dict[str, Any]]:
        return [m.stats() for m in self.members]

    def stop(self) -> None:
        self.stopping = True
        for m in self.members:
            m.stop()


# -- member side --------------------------------------------------------------------------------------------------


def serve(fd: int) -> None:
    from .emulator_host import EmulatorHost, warm_up

    try:
        os.nice(EMULATOR_NICE)
    except OSError:
        pass
    sock = socket.socket(fileno=fd)
    reader = _Reader()
    events: list[Any] = []
    host = EmulatorHost(events.append)
    warm_up()
    while True:
        sock.setblocking(not host.has_work())
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                return  # the daemon closed its end (stopped, or died)
            for sid, cmds in reader.feed(data):
                host.put(sid, [tuple(c) for c in cmds])
            sock.setblocking(False)
        host.step()
        if events:
            sock.setblocking(True)
            sock.sendall(_pack(events))
            events.clear()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s[emulator %(process)d]: %(message)s")
    try:
        serve(int(sys.argv[1]))
    except (KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
        pass
