"""Daemon configuration: RUST_PTY_* environment variables (names kept from the original design), then flags.

A flag beats its variable; a bad value of either stops start-up with a message naming it (exit code 2).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from . import __version__
from .queries import DEFAULT_COLORS, Colors, parse_colors
from .sizing import POLICIES


class ConfigError(Exception):
    pass


def default_socket_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("RUST_PTY_SOCKET_PATH"):
        return env["RUST_PTY_SOCKET_PATH"]
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".vibest", "pty", "socket")


def _positive_int(text: str) -> int:
    v = int(text.strip(), 10)
    if v <= 0:
        raise ValueError("must be a positive integer")
    return v


def _non_negative_int(text: str) -> int:
    v = int(text.strip(), 10)
    if v < 0:
        raise ValueError("must be a non-negative integer")
    return v


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


_LEVELS = ("debug", "info", "warning", "error")


def _level(text: str) -> str:
    t = text.strip().lower()
    if t not in _LEVELS:
        raise ValueError(f"must be one of {', '.join(_LEVELS)}")
    return t


def _size_policy(text: str) -> str:
    t = text.strip().lower()
    if t not in POLICIES:
        raise ValueError(f"must be one of {', '.join(POLICIES)}")
    return t


def _colors(text: str) -> Colors:
    """FOREGROUND:BACKGROUND[:CURSOR], each #rrggbb (what sessions answer colour queries with)."""
    parts = text.strip().split(":")
    if not 2 <= len(parts) <= 3:
        raise ValueError("must be FOREGROUND:BACKGROUND[:CURSOR], e.g. #d0d0d0:#000000")
    keys = ("foreground", "background", "cursor")
    return parse_colors(dict(zip(keys, parts, strict=False)))


@dataclass(frozen=True)
class Config:
    socket_path: str = ""
    max_connections: int = 100
    max_sessions: int = 100
    scrollback_lines: int = 1000
    flow_threshold: int = 4096
    flow_max_queue_size: int = 16384
    flow_max_queue_bytes: int = 8 * 1024 * 1024
    flow_auto_disconnect: bool = False
    max_frame: int = 16 * 1024 * 1024
    input_queue_bytes: int = 8 * 1024 * 1024
    replay_bytes: int = 1024 * 1024
    max_exited: int = 100
    kill_grace_ms: int = 2000
    log_level: str = "info"
    size_policy: str = "latest"
    colors: Colors = DEFAULT_COLORS

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Build from the environment and command line; raises ConfigError naming the bad variable or flag."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {"socket_path": default_socket_path(env)}
        for f in fields(cls):
            spec = _SPECS.get(f.name)
            if spec is None:
                continue
            var, parse, _ = spec
            raw = env.get(var)
            if raw is None or (raw == "" and f.name != "flow_auto_disconnect"):
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid {var}={raw!r}: {_why(exc)}") from None
        args = _parser().parse_args(argv)
        for f in fields(cls):
            raw = getattr(args, f.name, None)
            if raw is None:
                continue
            if f.name == "socket_path":
                values[f.name] = raw
                continue
            _, parse, flag = _SPECS[f.name]
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid {flag} {raw!r}: {_why(exc)}") from None
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not self.socket_path:
            raise ConfigError("RUST_PTY_SOCKET_PATH is empty")
        if len(os.fsencode(self.socket_path)) > 107:
            raise ConfigError(f"RUST_PTY_SOCKET_PATH is too long for a Unix socket (107 bytes): {self.socket_path}")
        if self.flow_threshold >= self.flow_max_queue_size:
            raise ConfigError(
                "RUST_PTY_FLOW_THRESHOLD must be below RUST_PTY_FLOW_MAX_QUEUE_SIZE "
                f"({self.flow_threshold} >= {self.flow_max_queue_size})"
            )
        if self.max_frame < 1024:
            raise ConfigError("RUST_PTY_MAX_FRAME must be at least 1024")


def _why(exc: ValueError) -> str:
    s = str(exc)
    return "must be an integer" if s.startswith("invalid literal") else s


# field -> (environment variable, parser, flag)
_SPECS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "max_connections": ("RUST_PTY_MAX_CONNECTIONS", _positive_int, "--max-connections"),
    "max_sessions": ("RUST_PTY_MAX_SESSIONS", _positive_int, "--max-sessions"),
    "scrollback_lines": ("RUST_PTY_SCROLLBACK_LINES", _non_negative_int, "--scrollback-lines"),
    "flow_threshold": ("RUST_PTY_FLOW_THRESHOLD", _positive_int, "--flow-threshold"),
    "flow_max_queue_size": ("RUST_PTY_FLOW_MAX_QUEUE_SIZE", _positive_int, "--flow-max-queue-size"),
    "flow_max_queue_bytes": ("RUST_PTY_FLOW_MAX_QUEUE_BYTES", _positive_int, "--flow-max-queue-bytes"),
    "flow_auto_disconnect": ("RUST_PTY_FLOW_AUTO_DISCONNECT", _bool, "--flow-auto-disconnect"),
    "max_frame": ("RUST_PTY_MAX_FRAME", _positive_int, "--max-frame"),
    "input_queue_bytes": ("RUST_PTY_INPUT_QUEUE_BYTES", _positive_int, "--input-queue-bytes"),
    "replay_bytes": ("RUST_PTY_REPLAY_BYTES", _non_negative_int, "--replay-bytes"),
    "max_exited": ("RUST_PTY_MAX_EXITED", _non_negative_int, "--max-exited"),
    "kill_grace_ms": ("RUST_PTY_KILL_GRACE_MS", _non_negative_int, "--kill-grace-ms"),
    "log_level": ("RUST_PTY_LOG_LEVEL", _level, "--log-level"),
    "size_policy": ("RUST_PTY_SIZE_POLICY", _size_policy, "--size-policy"),
    "colors": ("RUST_PTY_COLORS", _colors, "--colors"),
}
_METAVARS = {"log_level": "LEVEL", "size_policy": "POLICY", "colors": "FG:BG[:CURSOR]"}



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit(2) itself; we want one error path
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vibest-pty-daemon",
        description="PTY daemon: terminal sessions that outlive their clients, served on a Unix socket.",
        epilog="Every flag has an environment variable: "
        + ", ".join(f"{v[2]}={v[0]}" for v in _SPECS.values())
        + ", --socket=RUST_PTY_SOCKET_PATH. See docs/protocol.md.",
    )
    p.add_argument("--version", action="version", version=f"vibest-pty-daemon {__version__}")
    p.add_argument("--socket", dest="socket_path", metavar="PATH", help="Unix socket path")
    for name, (var, _, flag) in _SPECS.items():
        p.add_argument(flag, dest=name, metavar=_METAVARS.get(name, "N"), help=f"(env {var})")
    return p
