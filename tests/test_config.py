"""Config rows derived from the field names: every setting has RUST_PTY_<NAME> and --<name>, a flag beats its
variable, a bad value names the variable or flag."""

from __future__ import annotations

import dataclasses

import pytest

from vibest_pty.config import Config, ConfigError, env_var, flag

SETTINGS = [f for f in dataclasses.fields(Config) if f.name != "socket_path"]


@pytest.mark.parametrize("f", SETTINGS, ids=lambda f: f.name)
def test_every_setting_has_its_variable_and_flag(f: dataclasses.Field[object]) -> None:
    samples = {"log_level": "debug", "size_policy": "smallest", "colors": "#ffffff:#102030"}
    value = samples.get(f.name, "true" if f.type in (bool, "bool") else "1030")
    base = {"RUST_PTY_SOCKET_PATH": "/tmp/x/socket", "RUST_PTY_FLOW_THRESHOLD": "3"}
    want = f.metadata["parse"](value)
    assert want != f.default, "the sample must differ from the default"
    assert getattr(Config.load([], env={**base, env_var(f.name): value}), f.name) == want
    assert getattr(Config.load([flag(f.name), value], env=base), f.name) == want


def test_a_flag_beats_its_variable_and_bad_values_name_it() -> None:
    env = {"RUST_PTY_SOCKET_PATH": "/tmp/x/socket", "RUST_PTY_MAX_SESSIONS": "5"}
    assert Config.load(["--max-sessions", "9"], env=env).max_sessions == 9
    with pytest.raises(ConfigError, match="RUST_PTY_MAX_SESSIONS"):
        Config.load([], env={**env, "RUST_PTY_MAX_SESSIONS": "lots"})
    with pytest.raises(ConfigError, match="--max-sessions"):
        Config.load(["--max-sessions", "0"], env=env)
    assert Config.load(["--socket", "/tmp/y/s"], env=env).socket_path == "/tmp/y/s"
