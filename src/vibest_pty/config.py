"""Daemon configuration: RUST_PTY_* environment variables (names kept from the original design), then flags.

A flag beats its variable; a bad value of either stops start-up with a message naming it (exit code 2).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
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


def _setting(default: Any, parse: Callable[[str], Any], metavar: str = "N") -> Any:
    """A setting's row: its environment variable and flag are derived from the field's name (env_var, flag)."""
    return field(default=default, metadata={"parse": parse, "metavar": metavar})


def env_var(name: str) -> str:
    return "RUST_PTY_" + name.upper()


def flag(name: str) -> str:
    return "--socket" if name == "socket_path" else "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Config:
    socket_path: str = ""  # RUST_PTY_SOCKET_PATH / --socket (default_socket_path)
    max_connections: int = _setting(100, _positive_int)
    max_sessions: int = _setting(100, _positive_int)
    scrollback_lines: int = _setting(1000, _non_negative_int)
    flow_threshold: int = _setting(4096, _positive_int)
    flow_max_queue_size: int = _setting(16384, _positive_int)
    flow_max_queue_bytes: int = _setting(8 * 1024 * 1024, _positive_int)
    flow_auto_disconnect: bool = _setting(False, _bool, "BOOL")
    max_frame: int = _setting(16 * 1024 * 1024, _positive_int)
    input_queue_bytes: int = _setting(8 * 1024 * 1024, _positive_int)
    replay_bytes: int = _setting(1024 * 1024, _non_negative_int)
    replay_idle_s: int = _setting(600, _non_negative_int)  # unattached this long: keep replay_idle_bytes (0: never)
    replay_idle_bytes: int = _setting(64 * 1024, _non_negative_int)
    max_exited: int = _setting(100, _non_negative_int)
    kill_grace_ms: int = _setting(2000, _non_negative_int)
    log_level: str = _setting("info", _level, "LEVEL")
    size_policy: str = _setting("latest", _size_policy, "POLICY")
    colors: Colors = _setting(DEFAULT_COLORS, _colors, "FG:BG[:CURSOR]")  # noqa: RUF009 (a dataclasses.field)

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Build from the environment and command line; raises ConfigError naming the bad variable or flag."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {"socket_path": default_socket_path(env)}
        for f in _settings():
            var, parse = env_var(f.name), f.metadata["parse"]
            raw = env.get(var)
            if raw is None or (raw == "" and parse is not _bool):  # an empty boolean is false
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid {var}={raw!r}: {_why(exc)}") from None
        args = _parser().parse_args(argv)
        if args.socket_path is not None:
            values["socket_path"] = args.socket_path
        for f in _settings():
            raw = getattr(args, f.name, None)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"invalid {flag(f.name)} {raw!r}: {_why(exc)}") from None
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


def _settings() -> list[Field[Any]]:
    """The fields that have an environment variable and a flag (all but socket_path, whose default is computed)."""
    return [f for f in fields(Config) if "parse" in f.metadata]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit(2) itself; we want one error path
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vibest-pty-daemon",
        description="PTY daemon: terminal sessions that outlive their clients, served on a Unix socket.",
        epilog="Every flag has an environment variable: --socket=RUST_PTY_SOCKET_PATH, "
        + ", ".join(f"{flag(f.name)}={env_var(f.name)}" for f in _settings())
        + ". See docs/protocol.md.",
    )
    p.add_argument("--version", action="version", version=f"vibest-pty-daemon {__version__}")
    p.add_argument("--socket", dest="socket_path", metavar="PATH", help="Unix socket path")
    for f in _settings():
        p.add_argument(flag(f.name), dest=f.name, metavar=f.metadata["metavar"], help=f"(env {env_var(f.name)})")
    return p
