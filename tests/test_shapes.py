"""Reply shapes described once (tests/vectors/shapes.json) and checked against the TypedDicts the daemon and the
Python client share (src/vibest_pty/shapes.py, re-exported by the client) and a live daemon's replies (the TypeScript suite checks the same file against the SDK's types: test/shapes.test.ts).
A field added on one side fails here until the file and both clients know it."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, read_until
from vibest_pty import client as pyclient

SHAPES: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).parent / "vectors" / "shapes.json").read_text()
)["shapes"]
HINT = "update tests/vectors/shapes.json, src/vibest_pty/shapes.py and sdk/typescript/src/types.ts together"


def _keys(shape: dict[str, str]) -> set[str]:
    return {k.rstrip("?") for k in shape}


def check(value: Any, type_: str, where: str) -> list[str]:
    """Problems of `value` against a shapes.json type (empty when it conforms)."""
    alternatives = type_.split("|")
    if len(alternatives) > 1:
        if any(not check(value, t, where) for t in alternatives):
            return []
        return [f"{where}: {value!r:.60} is not {type_}"]
    t = type_
    if t in SHAPES:
        if not isinstance(value, dict):
            return [f"{where}: not a map ({t})"]
        shape = SHAPES[t]
        problems = [f"{where}.{k}: sent by the daemon but not in {t} ({HINT})" for k in set(value) - _keys(shape)]
        for k, kt in shape.items():
            name = k.rstrip("?")
            if name not in value:
                if not k.endswith("?"):
                    problems.append(f"{where}.{name}: in {t} but not sent by the daemon")
                continue
            problems += check(value[name], kt, f"{where}.{name}")
        return problems
    if t.startswith("[") and t.endswith("]"):
        if not isinstance(value, list):
            return [f"{where}: not a list ({t})"]
        return [p for i, v in enumerate(value) for p in check(v, t[1:-1], f"{where}[{i}]")]
    if t.startswith("{") and t.endswith("}"):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return [f"{where}: not a map with str keys ({t})"]
        return [p for k, v in value.items() for p in check(v, t[1:-1], f"{where}[{k!r}]")]
    ok = {
        "int": lambda v: type(v) is int,
        "number": lambda v: type(v) in (int, float),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "bin": lambda v: isinstance(v, bytes),
        "null": lambda v: v is None,
    }.get(t)
    if ok is None:
        return [f"{where}: unknown type {t!r} in shapes.json"]
    return [] if ok(value) else [f"{where}: {value!r:.60} is not {t}"]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_python_client_types_have_exactly_the_fields_of_each_shape(name: str) -> None:
    typed = getattr(pyclient, name)
    fields = set(typing.get_type_hints(typed))
    expected = _keys(SHAPES[name])
    assert fields == expected, (
        f"{name}: only in the Python client {sorted(fields - expected)}, only in shapes.json "
        f"{sorted(expected - fields)} ({HINT})"
    )


def test_shapes_json_uses_only_known_types() -> None:
    def walk(t: str) -> None:
        for alt in t.split("|"):
            if alt[:1] in "[{":
                walk(alt[1:-1])
            else:
                assert alt in SHAPES or alt in ("int", "number", "str", "bool", "bin", "null"), alt

    for shape in SHAPES.values():
        for t in shape.values():
            walk(t)


async def test_live_daemon_replies_have_exactly_the_described_shapes(daemon: Daemon) -> None:
    c = await daemon.client()
    try:
        hello = await c.request("hello", protocol=1)
        created = await c.request("create", options={"shell": "/bin/sh", "attach": True})
        info = created["session"]
        await c.input(info["id"], b"echo shaped\n")
        await read_until(c, info["id"], b"shaped")
        stats = await c.request("stats")
        snap = await c.request("snapshot", session=info["id"])
        listed = await c.request("list")
        problems: list[str] = []
        strip = ("type", "id")
        problems += check({k: v for k, v in hello.items() if k not in strip}, "HelloInfo", "hello")
        problems += check(info, "SessionInfo", "create.session")
        problems += check(listed["sessions"], "[SessionInfo]", "list.sessions")
        problems += check(snap["snapshot"], "Snapshot", "snapshot.snapshot")
        problems += check({k: v for k, v in stats.items() if k not in strip}, "Stats", "stats")
        assert stats["queues"], "a subscribed session has a queue entry, so QueueStats is checked too"
        assert not problems, "\n".join(problems)
        await c.request("kill", session=info["id"])
    finally:
        await c.close()


async def test_live_agent_replies_have_exactly_the_described_shapes(daemon: Daemon, tmp_path: Path) -> None:
    """`run`, `wait` (each condition's fields) and `text`, from a bash with shell integration."""
    c = await daemon.client()
    try:
        home = str(tmp_path)
        sid = (await c.create_session(shell="bash", cwd=home, env={"HOME": home, "HISTFILE": ""}))["id"]
        strip = ("type", "id")
        replies = {
            "wait prompt": await c.request("wait", session=sid, timeout_ms=20000, **{"for": "prompt"}),
            "run": await c.request("run", session=sid, command="echo shaped", timeout_ms=20000),
            "wait text": await c.request("wait", session=sid, pattern="shap.d", timeout_ms=20000, **{"for": "text"}),
            "wait idle": await c.request("wait", session=sid, idle_ms=50, timeout_ms=20000, **{"for": "idle"}),
            "text": await c.request("text", session=sid, scope="all"),
        }
        await c.input(sid, "exit 3\r")
        replies["wait exit"] = await c.request("wait", session=sid, timeout_ms=20000, **{"for": "exit"})
        replies["text since"] = await c.request("text", session=sid, since=0)
        problems: list[str] = []
        for what, reply in replies.items():
            shape = {"run": "RunResult", "wait": "WaitResult", "text": "TextResult"}[what.split()[0]]
            problems += check({k: v for k, v in reply.items() if k not in strip}, shape, what)
        assert not problems, "\n".join(problems)
        assert replies["wait exit"]["code"] == 3 and replies["wait text"]["match"] == "shaped", replies
        await c.kill(sid)
    finally:
        await c.close()


def test_the_client_returns_the_types_the_daemon_builds() -> None:
    """One description: the client re-exports the daemon's TypedDicts, it does not keep copies that could drift."""
    from vibest_pty import shapes

    for name in SHAPES:
        assert getattr(pyclient, name) is getattr(shapes, name), name
