"""The emulators in their own processes: a small pool, each member serving the sessions assigned to it.

Parsing output and building snapshots is CPU work (a `yes` flood costs ~5 ms of parsing per 64 KiB; a snapshot of
a 1000x1000 terminal takes seconds). In a pool member, at a lower CPU priority (nice EMULATOR_NICE), neither can
stall the daemon's loop (no GIL is shared, the loop thread is the daemon's only thread) nor another member's
sessions; within a member, EmulatorHost serves its sessions round-robin.

Daemon side (`EmulatorPool`, a feed Backend): one socketpair per member, both ends non-blocking on the daemon's
loop (add_reader / add_writer, no threads); a session is assigned to the member with the fewest sessions when it is
registered (preferring members that are warm). The first member is started with the daemon (the daemon itself
imports no emulator code), the others on demand. A member that
dies is restarted and each of its sessions is rebuilt from its replay window (Feed.rebuild), its subscribers then
marked for resync, with a log line; the daemon never dies of it.

An in-place upgrade (upgrade.py) keeps the members running with their terminals: the daemon's end of each
socketpair moves across execve with what was not yet written or decoded (`_Member.export`), and the new code's
pool adopts them (`EmulatorPool.restore`).

Wire: frames of a 4-byte big-endian length and a msgpack array. Daemon -> member: [sid, [command, ...]] (see
feed.py for the commands). Member -> daemon: [event, ...] (see emulator_host.py).

Member side: `python -m vibest_pty.emulator_process FD` runs `serve(FD)`: a blocking loop that reads every command
available, runs one unit of work, writes the events, and exits when the daemon closes its end.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from .feed import Command
from .shapes import EmulatorStats

if TYPE_CHECKING:
    from .feed import Feed

log = logging.getLogger("vibest_pty.emulators")

# Below the daemon and the sessions' programs (an echo is served before a flood's parsing), but not far below: on
# this shared 2-core box (load ~8) a reply behind a snapshot behind a flood's 4 MiB backlog took 1.6 s at nice 10
# and ~0.3 s at 5 (tests/test_flow.py budget: 1 s); SCHED_IDLE starves the emulators entirely under such load.
EMULATOR_NICE = 5
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
    def __init__(self, pool: EmulatorPool, index: int, state: dict[str, Any] | None = None) -> None:
        self.pool = pool
        self.index = index
        self.sessions: set[int] = set()
        self.restarts = 0
        self.ready = False  # warmed up (its first event); new sessions prefer ready members
        self.pid = 0
        self.sock: socket.socket | None = None
        self._out = bytearray()
        self._writing = False
        self._reader = _Reader()
        if state is None:
            self.start()
            return
        # An in-place upgrade: the process kept running (it is still our child) with its emulators; its socket
        # moved across execve, with what the old code had not yet written or not yet decoded.
        self.pid, self.restarts, self.ready = state["pid"], state["restarts"], state["ready"]
        self.sessions = set(state["sessions"])
        sock = socket.socket(fileno=state["fd"])
        sock.set_inheritable(False)
        sock.setblocking(False)
        self.sock = sock
        self._reader._buf += state["in"]
        pool.loop.add_reader(sock.fileno(), self._on_readable)
        if state["out"]:
            self._out += state["out"]
            self._flush()

    def export(self) -> dict[str, Any]:
        """The member as the new code adopts it (the loop has stopped watching its socket: pool.freeze())."""
        return {"pid": self.pid, "restarts": self.restarts, "ready": self.ready, "sessions": sorted(self.sessions),
                "fd": -1 if self.sock is None else self.sock.fileno(), "out": bytes(self._out),
                "in": bytes(self._reader._buf)}

    def freeze(self) -> None:
        if self.sock is not None:
            self.pool.loop.remove_reader(self.sock.fileno())
            if self._writing:
                self.pool.loop.remove_writer(self.sock.fileno())
                self._writing = False

    def thaw(self) -> None:
        if self.sock is not None:
            self.pool.loop.add_reader(self.sock.fileno(), self._on_readable)
            self._flush()

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
        self.ready = False
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
            if events and events[0][0] == "ready":
                self.ready = True
                self.pool.ready.set()
                continue
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

    def stats(self) -> EmulatorStats:
        return {"pid": self.pid, "rss": _rss(self.pid), "sessions": len(self.sessions), "restarts": self.restarts}


class EmulatorPool:
    """A feed Backend: sessions' emulators in `size` worker processes."""

    def __init__(self, size: int | None = None, on_rebuilt: Callable[[int], None] = lambda sid: None) -> None:
        import asyncio  # here, not at the top: a member (`-m` this module) never needs it (6 MiB of its ~28 MiB RSS)

        self.loop = asyncio.get_running_loop()
        self.size = size or pool_size()
        self.members: list[_Member] = []
        self.feeds: dict[int, Feed] = {}
        self._assigned: dict[int, _Member] = {}
        self.on_rebuilt = on_rebuilt
        self.stopping = False
        self.ready = asyncio.Event()  # a member is warm

    async def start(self, timeout: float = 10.0) -> None:
        """Start the first member and wait until it is warm (the daemon's start): a member takes 0.6 CPU s to start
        and warm up (2 s of wall time on this busy 2-core box), and a first session's programs would otherwise wait
        that long for their queries' answers (vim's termresponse arrives after its timer, and it redraws late).
        The daemon itself still imports no emulator code."""
        import asyncio

        if not self.members:
            self.members.append(_Member(self, 0))
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            log.warning("the emulator process is not ready after %.0f s; serving anyway", timeout)

    # -- in-place upgrade (upgrade.py): the members keep running across execve ---------------------------------

    def moving_fds(self) -> list[int]:
        return [m.sock.fileno() for m in self.members if m.sock is not None]

    def freeze(self) -> None:
        """Stop watching the members' sockets, right before the state is taken (execve follows)."""
        for m in self.members:
            m.freeze()

    def thaw(self) -> None:
        """execve failed: watch them again."""
        for m in self.members:
            m.thaw()

    def export(self) -> dict[str, Any]:
        return {"size": self.size, "members": [m.export() for m in self.members],
                "assigned": {sid: m.index for sid, m in self._assigned.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Adopt the old code's members; each session's Feed then registers as usual (and keeps its member)."""
        self.size = state["size"]
        self.members = [_Member(self, i, rec) for i, rec in enumerate(state["members"])]
        self._assigned = {sid: self.members[i] for sid, i in state["assigned"].items()}
        if any(m.ready for m in self.members):
            self.ready.set()

    def register(self, feed: Feed) -> None:
        if feed.sid in self._assigned and feed.sid not in self.feeds:
            self.feeds[feed.sid] = feed  # restored after an upgrade: its emulator lives in that member
            return
        if len(self.members) < self.size and all(m.sessions and m.ready for m in self.members):
            self.members.append(_Member(self, len(self.members)))  # started on demand (one at a time), up to `size`
        # A member takes ~0.5-2 s to start and warm up: until it is ready, sessions go to the warm ones.
        candidates = [m for m in self.members if m.ready] or self.members
        member = min(candidates, key=lambda m: len(m.sessions))
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

    def stats(self) -> list[EmulatorStats]:
        return [m.stats() for m in self.members]

    def stop(self) -> None:
        self.stopping = True
        for m in self.members:
            m.stop()


# -- member side --------------------------------------------------------------------------------------------------


def serve(fd: int) -> None:
    import signal

    from .emulator_host import EmulatorHost, warm_up

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the daemon's terminal is the daemon's to handle
    warm_up()  # at normal priority: the first session's first snapshot waits for it
    try:
        os.nice(EMULATOR_NICE)
    except OSError:
        pass
    sock = socket.socket(fileno=fd)
    sock.sendall(_pack([["ready", 0]]))
    reader = _Reader()
    events: list[Any] = []
    host = EmulatorHost(events.append)
    while True:
        # One read per unit of work: reading until EAGAIN would never end while a flood keeps arriving, and the
        # jobs queued behind it (a snapshot) would never run. Blocking only when there is nothing to do.
        sock.setblocking(not host.has_work())
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            data = None
        if data is not None:
            if not data:
                return  # the daemon closed its end (stopped, or died)
            for sid, cmds in reader.feed(data):
                host.put(sid, [tuple(c) for c in cmds])
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
