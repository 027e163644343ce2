"""The set of sessions: creation with limits and validation, lookup, exited-session retention, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from typing import Any

from . import protocol
from .agent import Hub, SessionAgent, new_nonce
from .config import Config
from .feed import Backend
from .protocol import CreateOptions, ProtocolError
from .pty import Child, spawn
from .queries import parse_colors
from .session import Counters, Session, SessionLimits, SessionSpec
from .shapes import SessionInfo
from .watchdog import Watchdog

log = logging.getLogger("vibest_pty.manager")


class Manager:
    def __init__(self, config: Config, worker: Backend) -> None:
        self.config = config
        self.worker = worker
        self.limits = SessionLimits(
            scrollback_lines=config.scrollback_lines, replay_bytes=config.replay_bytes,
            input_queue_bytes=config.input_queue_bytes, kill_grace_s=config.kill_grace_ms / 1000,
            max_frame=config.max_frame, replay_idle_s=config.replay_idle_s,
            replay_idle_bytes=config.replay_idle_bytes,
        )
        self.sessions: dict[int, Session] = {}
        self._exited: OrderedDict[int, None] = OrderedDict()  # exit order, oldest first
        self._next_id = 1
        self.counters = Counters()
        self.watchdog: Watchdog | None = None  # told each session, so none outlives a daemon that is killed
        self.started_at = time.monotonic()
        self._all_exited = asyncio.Event()
        self._all_exited.set()
        # Sessions created with kill_after_detach_s, and the pending kill of those nobody is attached to.
        self._kill_after: dict[int, float] = {}
        self._kill_timers: dict[int, asyncio.TimerHandle] = {}
        self.hub = Hub()  # connections watching every session (agent.py)

    @property
    def running_count(self) -> int:
        return len(self.sessions) - len(self._exited)

    def get(self, sid: int) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise ProtocolError(protocol.SESSION_NOT_FOUND, f"no session {sid}")
        return s

    def create(self, opts: CreateOptions) -> Session:
        cfg = self.config
        if self.running_count >= cfg.max_sessions:
            raise ProtocolError(protocol.LIMIT_REACHED, f"session limit reached ({cfg.max_sessions} running)")
        if self._next_id > protocol.MAX_U32:
            raise ProtocolError(protocol.LIMIT_REACHED, "session ids exhausted; restart the daemon")
        cwd = opts.cwd or os.environ.get("HOME") or "/"
        if not os.path.isabs(cwd):
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"cwd must be an absolute path: {cwd!r}")
        if not os.path.isdir(cwd):
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"cwd is not a directory: {cwd!r}")
        shell = opts.shell or os.environ.get("SHELL") or "/bin/sh"
        argv = [shell, *opts.args]
        # "replace": the client sent its whole environment (node-pty's default is the app's process.env), so a
        # variable the app does not have is not inherited from the daemon; TERM and friends are still defaulted.
        env = dict(os.environ) if opts.env_mode == "merge" else {}
        for var in list(env):
            if var.startswith("RUST_PTY_"):
                del env[var]  # the daemon's own settings are not the session's business
        env["TERM"] = "xterm-256color"
        env["COLORTERM"] = "truecolor"
        if not any(env.get(v) for v in ("LC_ALL", "LC_CTYPE", "LANG")):
            env["LANG"] = "C.UTF-8"
        env.update(opts.env)
        nonce = new_nonce()
        spawn_argv, env, injected, shell_name = argv, env, False, None
        if opts.shell_integration:
            from .shell_integration import inject  # at the first such create: not on the daemon's start path

            sp = inject(argv, env, nonce)
            spawn_argv, env, injected, shell_name = sp.argv, sp.env, sp.injected, sp.shell
        try:
            child = spawn(spawn_argv, env, cwd, opts.cols, opts.rows)
        except OSError as exc:
            raise ProtocolError(protocol.SPAWN_FAILED, f"cannot start {shell!r}: {exc.strerror or exc}") from None
        sid = self._next_id
        self._next_id += 1
        session = Session(
            sid, child, SessionSpec(argv, cwd, opts.cols, opts.rows, opts.name, dict(opts.tags), queries=opts.queries,
                                    colors=parse_colors(opts.colors, cfg.colors) if opts.colors is not None
                                    else cfg.colors,
                                    size_policy=opts.size_policy or cfg.size_policy),
            self.limits, self.worker, on_exit=self._on_exit, counters=self.counters,
        )
        session.agent = SessionAgent(session, nonce, injected, self.hub, shell_name)
        self.sessions[sid] = session
        if self.watchdog is not None:
            self.watchdog.track(child.pid)
        self._all_exited.clear()
        self.hub.created(session)
        if opts.kill_after_detach_s is not None:
            self._kill_after[sid] = opts.kill_after_detach_s
            if not opts.attach:
                self.detached(session)  # nobody attached yet: the grace runs from creation
        log.info("session %d created: pid %d %s", sid, child.pid, argv)
        return session

    # -- in-place upgrade (upgrade.py) -------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Sessions (each Session.export()), the exited records, the id counter, pending kill_after_detach_s
        kills (as CLOCK_MONOTONIC deadlines) and the watchdog's pipe."""
        loop = asyncio.get_running_loop()
        now, lnow = time.monotonic(), loop.time()
        return {
            "sessions": [s.export() for s in self.sessions.values()], "exited": list(self._exited),
            "next_id": self._next_id, "bytes": [self.counters.bytes_in, self.counters.bytes_out],
            "started_at": self.started_at, "kill_after": dict(self._kill_after),
            "kill_timers": {sid: now + max(0.0, t.when() - lnow) for sid, t in self._kill_timers.items()},
            "watchdog": None if self.watchdog is None else [self.watchdog.fd, self.watchdog.pid],
        }

    def moving_fds(self) -> list[int]:
        fds = [fd for s in self.sessions.values() for fd in (s._fd, s._pidfd) if fd >= 0]
        if self.watchdog is not None and self.watchdog.fd >= 0:
            fds.append(self.watchdog.fd)  # the watchdog keeps watching: its pipe must not reach EOF
        return fds

    def restore(self, state: dict[str, Any]) -> list[Session]:
        """The old code's export(): sessions are rebuilt (nothing watched yet: Session.resume_restored)."""
        self._next_id = state["next_id"]
        self.counters.bytes_in, self.counters.bytes_out = state["bytes"]
        self.started_at = state["started_at"]
        if state["watchdog"] is not None:
            fd, pid = state["watchdog"]
            os.set_inheritable(fd, False)
            self.watchdog = Watchdog(fd, pid)
        restored = []
        for rec in state["sessions"]:
            for fd in (rec["fd"], rec["pidfd"]):
                if fd >= 0:
                    os.set_inheritable(fd, False)
            spec = SessionSpec(rec["command"], rec["cwd"], rec["cols"], rec["rows"], rec["name"], rec["tags"],
                               queries=rec["queries"])
            session = Session(rec["id"], Child(rec["pid"], rec["fd"]), spec, self.limits, self.worker,
                              on_exit=self._on_exit, counters=self.counters, state=rec)
            fields = session.agent_state()
            if fields is not None:
                agent = SessionAgent(session, None, False, self.hub)
                agent.__dict__.update(fields)
                session.agent = agent
            self.sessions[session.id] = session
            restored.append(session)
        self._exited = OrderedDict((sid, None) for sid in state["exited"])
        if self.running_count:
            self._all_exited.clear()
        self._kill_after = dict(state["kill_after"])
        loop = asyncio.get_running_loop()
        for sid, deadline in state["kill_timers"].items():
            if (s := self.sessions.get(sid)) is not None:
                self._kill_timers[sid] = loop.call_later(max(0.0, deadline - time.monotonic()),
                                                         self._kill_abandoned, s)
        return restored

    def attached(self, session: Session) -> None:
        """A client subscribed: a pending kill_after_detach_s kill is cancelled."""
        self._cancel_kill(session.id)

    def _cancel_kill(self, sid: int) -> None:
        timer = self._kill_timers.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def detached(self, session: Session) -> None:
        """A client left: once none is left, a session created with kill_after_detach_s is killed that long
        after, unless someone attaches again first."""
        grace = self._kill_after.get(session.id)
        if grace is None or session.subscribers or not session.running or session.id in self._kill_timers:
            return
        self._kill_timers[session.id] = asyncio.get_running_loop().call_later(grace, self._kill_abandoned, session)

    def _kill_abandoned(self, session: Session) -> None:
        self._kill_timers.pop(session.id, None)
        if session.running and not session.subscribers and self.sessions.get(session.id) is session:
            log.info("session %d killed: no client for %gs (kill_after_detach_s)", session.id,
                     self._kill_after.get(session.id, 0))
            session.kill()

    def _on_exit(self, session: Session) -> None:
        self._cancel_kill(session.id)
        self.hub.exited(session)
        self._exited[session.id] = None
        while len(self._exited) > self.config.max_exited:
            old, _ = self._exited.popitem(last=False)
            self._drop(old)
        if self.running_count == 0:
            self._all_exited.set()

    def emulator_rebuilt(self, sid: int) -> None:
        """The session's emulator was rebuilt after its process died: its subscribers get a fresh snapshot."""
        s = self.sessions.get(sid)
        if s is not None:
            for sub in list(s.subscribers.values()):
                sub.request_resync()

    def remove(self, sid: int) -> None:
        """Forget an exited session."""
        self._exited.pop(sid, None)
        self._drop(sid)

    def prune(self) -> list[int]:
        """Forget every exited session; returns their ids, oldest exit first."""
        removed = list(self._exited)
        for sid in removed:
            self.remove(sid)
        return removed

    def _drop(self, sid: int) -> None:
        self._kill_after.pop(sid, None)
        self._cancel_kill(sid)
        s = self.sessions.pop(sid, None)
        if s is not None:
            s.close()
            self.hub.removed(sid)
            if self.watchdog is not None:
                self.watchdog.forget(s.pid)

    def kill(self, sid: int) -> None:
        s = self.get(sid)
        if s.running:
            s.kill()
        else:
            self.remove(sid)

    def list(self) -> list[SessionInfo]:
        return [s.info() for s in self.sessions.values()]

    async def shutdown(self, grace_s: float) -> None:
        """Hang up every session and wait (SIGKILL after the grace) until all have exited."""
        for s in list(self.sessions.values()):
            s.kill()
        try:
            await asyncio.wait_for(self._all_exited.wait(), grace_s + 1.0)
        except TimeoutError:
            log.warning("%d sessions still running at shutdown", self.running_count)
        for sid in list(self.sessions):
            self.sessions[sid].settle_kill()  # we are leaving: SIGKILL the stragglers now and reap the leader
            self._drop(sid)
