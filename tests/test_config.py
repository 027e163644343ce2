"""Config rows derived from the field names: every setting has RUST_PTY_<NAME> and --<name>, a flag beats its
variable, a bad value names the variable or flag."""

from __future__ import annotations

import dataclasses

import pytest

from vibest_pty.config import Config, ConfigError, env_var, flag

SETTINGS = [f for f in dataclasses.fields(Config) if f.name != "socket_path"]


@pytest.mark.parametrize("f", SETTINGS, ids=lambda f: f.name)
def test_every_setting_has_its_variable_and_flag(f: dataclasses.Field[object]) -> None:
    value = "debug" if f.name == "log_level" else "true" if f.type in (bool, "bool") else "1030"
    base = {"RUST_PTY_SOCKET_PATH": "/tmp/x/socket", "RUST_PTY_FLOW_THRESHOLD": "3"}
    cfg = Config.load([], env={**base, env_var(f.name): value})
    assert str(getattr(cfg, f.name)).lower() == value.lower() or getattr(cfg, f.name) == 1030
    cfg = Config.load([flag(f.name), value], env=base)
    assert str(getattr(cfg, f.name)).lower() == value.lower() or getattr(cfg, f.name) == 1030


def test_a_flag_beats_its_variable_and_bad_values_name_it() -> None:
    env = {"RUST_PTY_SOCKET_PATH": "/tmp/x/socket", "RUST_PTY_MAX_SESSIONS": "5"}
    assert Config.load(["--max-sessions", "9"], env=env).max_sessions == 9
    with pytest.raises(ConfigError, match="RUST_PTY_MAX_SESSIONS"):
        Config.load([], env={**env, "RUST_PTY_MAX_SESSIONS": "lots"})
    with pytest.raises(ConfigError, match="--max-sessions"):
        Config.load(["--max-sessions", "0"], env=env)
    assert Config.load(["--socket", "/tmp/y/s"], env=env).socket_path == "/tmp/y/s"
