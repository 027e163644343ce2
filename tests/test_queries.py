"""Terminal queries: the output filter (sans-I/O), the emulator's answers, and a session answering exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibest_pty.queries import (
    MAX_HOLD,
    Colors,
    Query,
    QueryFilter,
    Segment,
    agree,
    parse_colors,
    split_queries,
)
from vibest_pty.responder import XTVERSION, Responder

from .conftest import read_until

QUERIES = {
    b"\x1b[c": "da1",
    b"\x1b[0c": "da1",
    b"\x1b[>c": "da2",
    b"\x1b[>0c": "da2",
    b"\x1b[=c": "da3",
    b"\x1b[6n": "cpr",
    b"\x1b[?6n": "decxcpr",
    b"\x1b[5n": "dsr",
    b"\x1b[?996n": "color_scheme",
    b"\x1b[?2004$p": "decrqm",
    b"\x1b[4$p": "decrqm",
    b"\x1b[>q": "xtversion",
    b"\x1b[>0q": "xtversion",
    b"\x1b[?u": "kitty_keyboard",
    b"\x1b[14t": "size",
    b"\x1b[16t": "size",
    b"\x1b[18t": "size",
    b"\x1b]10;?\x1b\\": "osc_color",
    b"\x1b]11;?\x07": "osc_color",
    b"\x1b]12;?\x1b\\": "osc_color",
    b"\x1b]10;?;?\x07": "osc_color",
    b"\x1b]4;1;?\x1b\\": "osc_color",
    b"\x1b]4;1;?;200;?\x07": "osc_color",
    b"\x1bP$qm\x1b\\": "decrqss",
    b'\x1bP$q"q\x1b\\': "decrqss",
    b"\x1bP+q544e;436f\x1b\\": "xtgettcap",
}
NOT_QUERIES = [
    b"\x1b[38;5;1m", b"\x1b[2J", b"\x1b[?2004h", b"\x1b[16n", b"\x1b[6;1n", b"\x1b[?15n", b"\x1b[21t", b"\x1b[>1u",
    b"\x1b[=1;1u", b"\x1b[1 q", b"\x1b]0;title\x07", b"\x1b]10;#ffffff\x1b\\", b"\x1b]4;1;rgb:00/00/00\x07",
    b"\x1b]52;c;?\x07", b"\x1b]133;A\x1b\\", b"\x1bPtmux;x\x1b\\", b"\x1b_Gf=100;AAAA\x1b\\", b"\x1b7", b"\x1b=",
    b"\x1b(B", b"\x1b]11;?", b"\x1b[6", b"\x1bP+qZZ\x1b\\",
]
TEXT = b"hello \xc3\xa9\xe2\x94\x80 world\r\n"


def client(segs: list[Segment]) -> bytes:
    return b"".join(s for s in segs if isinstance(s, bytes))


def queries(segs: list[Segment]) -> list[Query]:
    return [s for s in segs if isinstance(s, Query)]


def emulator(segs: list[Segment]) -> bytes:
    return b"".join(s.raw if isinstance(s, Query) else s for s in segs)


def chunked(data: bytes, cuts: list[int]) -> list[Segment]:
    f = QueryFilter()
    out: list[Segment] = []
    prev = 0
    for c in [*sorted({min(max(c, 0), len(data)) for c in cuts}), len(data)]:
        out += f.feed(data[prev:c])
        prev = c
    return out + f.flush()


def test_each_listed_query_is_removed_from_the_client_stream_and_named():
    for raw, kind in QUERIES.items():
        segs = split_queries(b"a" + raw + b"b")
        assert client(segs) == b"ab", raw
        assert queries(segs) == [Query(kind, raw)], raw


def test_sequences_that_are_not_queries_pass_through_unchanged():
    for raw in NOT_QUERIES:
        segs = split_queries(b"a" + raw + b"b")
        assert client(segs) == b"a" + raw + b"b", raw
        assert queries(segs) == [], raw


def test_chunk_without_escape_is_returned_as_the_same_object():
    data = b"x" * 65536
    f = QueryFilter()
    segs = f.feed(data)
    assert len(segs) == 1 and segs[0] is data
    sgr = b"\x1b[31mred\x1b[0m" * 100
    segs = f.feed(sgr)
    assert len(segs) == 1 and segs[0] is sgr and f.held == 0


def test_query_split_byte_by_byte_is_found_and_nothing_else_is_delayed():
    for raw, kind in QUERIES.items():
        f = QueryFilter()
        assert f.feed(b"before") == [b"before"]  # ordinary output goes at once
        segs: list[Segment] = []
        for i in range(len(raw)):
            segs += f.feed(raw[i : i + 1])
            assert client(segs) == b"", raw  # the undecided query is held, never leaked
        assert queries(segs) == [Query(kind, raw)], raw
        assert f.held == 0
        assert f.feed(b"after") == [b"after"]


def test_held_candidate_that_turns_out_ordinary_is_released_whole():
    f = QueryFilter()
    assert f.feed(b"x\x1b[38;5") == [b"x"]
    assert f.held == 6
    assert client(f.feed(b";1mred")) == b"\x1b[38;5;1mred"
    assert f.feed(b"\x1b") == [] and f.held == 1
    assert client(f.feed(b"7")) == b"\x1b7"
    assert f.feed(b"\x1b]0;ti") == [b"\x1b]0;ti"]  # a title is not a candidate: not held


def test_hold_is_bounded():
    f = QueryFilter()
    long_candidate = b"\x1b]4" + b";1;?" * MAX_HOLD
    segs = f.feed(long_candidate)
    assert client(segs) == long_candidate and f.held == 0


def test_flush_releases_what_is_held():
    f = QueryFilter()
    assert f.feed(b"\x1b[") == []
    assert f.flush() == [b"\x1b["]
    assert f.flush() == []


FRAGMENTS = st.sampled_from([*QUERIES, *NOT_QUERIES, TEXT, b"\x1b", b"\x1b[", b"\x1b]", b"\x1bP", b"\x1b\\", b"\x07",
                             b"?", b";", b"1", b"$", b"q", b"\x18"])


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=30), st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_same_segments_and_loses_no_byte(frags: list[bytes], cuts: list[int]):
    data = b"".join(frags)
    whole = split_queries(data)
    assert emulator(whole) == data
    parts = chunked(data, cuts)
    assert emulator(parts) == data
    assert client(parts) == client(whole)
    assert queries(parts) == queries(whole)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40).map(lambda b: b.replace(b"\x1b", b"")),
                          st.sampled_from(sorted(QUERIES))), max_size=10),
       st.lists(st.integers(0, 600), max_size=20))
def test_queries_between_ordinary_output_are_all_found(pairs: list[tuple[bytes, bytes]], cuts: list[int]):
    data = b"".join(t + q for t, q in pairs)
    segs = chunked(data, cuts)
    assert client(segs) == b"".join(t for t, _ in pairs)
    assert [q.raw for q in queries(segs)] == [q for _, q in pairs]


# -- the emulator's answers (a real libghostty-vt terminal) ------------------------------------------------------------


THEME = Colors(foreground=(0x11, 0x22, 0x33), background=(0xF0, 0xF0, 0xE0), cursor=(0xAA, 0xBB, 0xCC),
               palette={1: (0x12, 0x34, 0x56)})


@pytest.fixture
def emu():
    from vibest_pty.emulator import Emulator

    e = Emulator(80, 24, 100)
    r = Responder(e._t, 80, 24, THEME)
    yield e, r
    r.close()
    e.close()


def hexs(s: str) -> str:
    return s.encode().hex()


EXPECTED = {
    b"\x1b[c": b"\x1b[?62;22c",
    b"\x1b[>c": b"\x1b[>1;10;0c",
    b"\x1b[5n": b"\x1b[0n",
    b"\x1b[6n": b"\x1b[3;5R",
    b"\x1b[?6n": b"\x1b[?3;5R",
    b"\x1b[?2004$p": b"\x1b[?2004;2$y",
    b"\x1b[?7$p": b"\x1b[?7;1$y",
    b"\x1b[4$p": b"\x1b[4;2$y",
    b"\x1bP$qm\x1b\\": b"\x1bP1$r0m\x1b\\",
    b"\x1bP$qr\x1b\\": b"\x1bP1$r1;24r\x1b\\",
    b"\x1b[>q": b"\x1bP>|" + XTVERSION.encode() + b"\x1b\\",
    b"\x1b]10;?\x1b\\": b"\x1b]10;rgb:1111/2222/3333\x1b\\",
    b"\x1b]11;?\x07": b"\x1b]11;rgb:f0f0/f0f0/e0e0\x07",
    b"\x1b]12;?\x1b\\": b"\x1b]12;rgb:aaaa/bbbb/cccc\x1b\\",
    b"\x1b]4;1;?\x1b\\": b"\x1b]4;1;rgb:1212/3434/5656\x1b\\",
    b"\x1b[?u": b"\x1b[?0u",
    b"\x1b[14t": b"\x1b[4;384;640t",
    b"\x1b[16t": b"\x1b[6;16;8t",
    b"\x1b[18t": b"\x1b[8;24;80t",
    b"\x1b[?996n": b"\x1b[?997;2n",
    b"\x1bP+q" + hexs("TN").encode() + b";" + hexs("Co").encode() + b";" + hexs("xx").encode() + b"\x1b\\":
        b"\x1bP1+r" + hexs("TN").encode() + b"=" + hexs("xterm-256color").encode() + b"\x1b\\"
        + b"\x1bP1+r" + hexs("Co").encode() + b"=" + hexs("256").encode() + b"\x1b\\"
        + b"\x1bP0+r" + hexs("xx").encode() + b"\x1b\\",
}


def test_emulator_answers_every_filtered_query_exactly_once(emu):
    _, r = emu
    assert r.write(b"\r\n\r\nabcd") == b""
    for q, want in EXPECTED.items():
        assert r.write(q) == want, q
        assert queries(split_queries(q)) != [], q  # the filter takes every query answered here


def test_cursor_reports_respect_origin_mode(emu):
    _, r = emu
    assert r.write(b"\x1b[5;20r\x1b[?6h\x1b[3;4H\x1b[6n\x1b[?6n") == b"\x1b[3;4R\x1b[?3;4R"


def test_several_queries_in_one_write_answer_in_stream_order(emu):
    _, r = emu
    assert r.write(b"\x1b[?6nx\x1b[5n\x1bP+q544e\x1b\\\x1b[6n") == (
        b"\x1b[?1;1R\x1b[0n\x1bP1+r544e=" + hexs("xterm-256color").encode() + b"\x1b\\\x1b[1;2R")


def test_colour_scheme_follows_the_background(emu):
    _, r = emu
    r.set_colors(Colors(background=(0, 0, 0)))
    assert r.write(b"\x1b[?996n") == b"\x1b[?997;1n"
    assert r.write(b"\x1b]11;?\x1b\\") == b"\x1b]11;rgb:0000/0000/0000\x1b\\"


def test_size_reports_follow_the_session_size(emu):
    e, r = emu
    e.resize(100, 30)
    r.resize(100, 30)
    assert r.write(b"\x1b[18t") == b"\x1b[8;30;100t"


def test_del_takes_no_cell(emu):
    e, r = emu
    r.write(b"ab\x7fc\x7f\x7f\r\n")
    assert e.text().splitlines()[0] == "abc"
    assert "\x7f" not in e.text()


def test_deccolm_does_not_change_the_emulator_size(emu):
    e, r = emu
    r.write(b"hello\x1b[?40h\x1b[?3h\x1b[?3;25l\x1b[?25h")
    assert (e.snapshot().cols, e.snapshot().rows) == (80, 24)
    assert "hello" in e.text()  # DECCOLM would also have cleared the screen
    assert agree(b"\x1b[?3;1h\x1b[?30h\x1b[?3l") == b"\x1b[?1h\x1b[?30h"


def test_colors_option_parses_an_xterm_js_like_theme():
    c = parse_colors({"foreground": "#112233", "background": "#fff", "cursor": "rgb:ff/00/0000",
                      "palette": ["#000000", "#ff0000"]})
    assert c == Colors((0x11, 0x22, 0x33), (255, 255, 255), (255, 0, 0), {0: (0, 0, 0), 1: (255, 0, 0)})
    assert parse_colors({"palette": {"7": "#010203"}}).palette == {7: (1, 2, 3)}
    for bad in ({"foreground": "red"}, {"palette": {"300": "#000000"}}, {"nope": 1}, "x"):
        with pytest.raises(ValueError):
            parse_colors(bad)


# -- a real daemon: the probe program in a session ----------------------------------------------------------------------

PROBE = os.path.join(os.path.dirname(__file__), "query_probe.py")
PROBE_EXPECTED = {
    "da1": b"\x1b[?62;22c",
    "da2": b"\x1b[>1;10;0c",
    "cpr": b"\x1b[3;5R",
    "decxcpr": b"\x1b[?3;5R",
    "dsr": b"\x1b[0n",
    "decrqm": b"\x1b[?2004;2$y",
    "decrqm_ansi": b"\x1b[4;2$y",
    "decrqss": b"\x1bP1$r0m\x1b\\",
    "xtversion": b"\x1bP>|" + XTVERSION.encode() + b"\x1b\\",
    "osc10": b"\x1b]10;rgb:d0d0/d0d0/d0d0\x1b\\",
    "osc11": b"\x1b]11;rgb:0000/0000/0000\x07",
    "osc12": b"\x1b]12;rgb:d0d0/d0d0/d0d0\x1b\\",
    "osc4": b"\x1b]4;1;rgb:cccc/6666/6666\x1b\\",
    "kitty": b"\x1b[?0u",
    "size14": b"\x1b[4;384;640t",
    "size16": b"\x1b[6;16;8t",
    "size18": b"\x1b[8;24;80t",
    "xtgettcap": b"\x1bP1+r" + hexs("TN").encode() + b"=" + hexs("xterm-256color").encode() + b"\x1b\\",
    "color_scheme": b"\x1b[?997;1n",
}


async def wait_file(path: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} not written"
        await asyncio.sleep(0.05)
    with open(path) as f:
        return json.load(f)  # type: ignore[no-any-return]


def check_probe(result: dict[str, Any], expected: dict[str, bytes] = PROBE_EXPECTED) -> None:
    got = {k: bytes.fromhex(v) if "|" not in v else v for k, v in result["replies"].items()}
    assert got == expected
    assert bytes.fromhex(result["late"]) == b"", "a second answer arrived"


async def test_detached_session_answers_every_query_exactly_once(client, tmp_path):
    out = str(tmp_path / "probe.json")
    await client.create(shell=sys.executable, args=[PROBE, out])
    result = await wait_file(out)
    check_probe(result)
    ms = sorted(result["ms"].values())
    assert ms[len(ms) // 2] < 50, result["ms"]  # each round trip includes the sentinel's answer too


async def test_query_split_byte_by_byte_across_reads_is_answered_once(client, tmp_path):
    out = str(tmp_path / "probe.json")
    reply = await client.create(shell=sys.executable, args=[PROBE, out, "split"], attach=True)
    sid = reply["id"]
    check_probe(await wait_file(out))
    seen = await read_until(client, sid, b"done")
    assert b"\x1b[6n" not in seen and b"\x1b[" + b"c" not in seen.replace(b"\x1b[2J", b"")
    assert b"\x1b[2J\x1b[3;5H" in seen  # ordinary output passes


async def test_queries_client_mode_passes_everything_through(client, tmp_path):
    out = str(tmp_path / "probe.json")
    reply = await client.create(shell=sys.executable, args=[PROBE, out], attach=True, queries="client")
    sid = reply["id"]
    seen = await read_until(client, sid, b"\x1b[c")  # the client sees the query; nobody has answered it
    await client.input(sid, b"\x1b[?1;2c\x1b[0n")  # this client answers, as its terminal would
    assert b"\x1b[>c" in await read_until(client, sid, b"\x1b[>c", start=seen)


# -- several clients: size policy and read-only ---------------------------------------------------------------------

from vibest_pty.sizing import SizePolicy  # noqa: E402


def test_size_policy_latest_follows_the_client_that_resized_or_typed_last():
    p = SizePolicy("latest", 80, 24)
    assert p.resize(1, 90, 20) == (90, 20)
    assert p.resize(2, 140, 40) == (140, 40)
    assert p.typed(1) == (90, 20)
    assert p.typed(1) is None
    assert p.leave(1) == (140, 40)  # a detaching client's size stops counting
    assert p.typed(3) is None  # a client without a size does not lead


def test_size_policy_smallest_and_largest_per_dimension():
    s, g = SizePolicy("smallest", 80, 24), SizePolicy("largest", 80, 24)
    for p in (s, g):
        p.resize(1, 90, 50)
    assert s.resize(2, 140, 40) == (90, 40)
    assert g.resize(2, 140, 40) == (140, 50)
    assert s.typed(2) is None and g.typed(2) is None
    assert s.leave(1) == (140, 40)
    assert g.leave(2) == (90, 50)


def test_size_policy_manual_applies_only_explicit_resizes():
    p = SizePolicy("manual", 80, 24)
    assert p.resize(1, 90, 20) == (90, 20)
    assert p.resize(2, 140, 40) == (140, 40)
    assert p.typed(1) is None and p.leave(2) is None
    with pytest.raises(ValueError):
        SizePolicy("biggest", 80, 24)


async def session_size(c: Any, sid: int) -> tuple[int, int]:
    info = next(s for s in await c.list() if s["id"] == sid)
    return info["cols"], info["rows"]


@pytest.mark.parametrize(("policy", "after_both", "after_typing", "after_leave"), [
    ("latest", (140, 40), (90, 20), (140, 40)),
    ("smallest", (90, 20), (90, 20), (140, 40)),
    ("largest", (140, 40), (140, 40), (140, 40)),
    ("manual", (140, 40), (140, 40), (140, 40)),
])
async def test_two_clients_of_different_sizes_under_each_size_policy(daemon, policy, after_both, after_typing,
                                                                      after_leave):
    a, b = await daemon.client(), await daemon.client()
    try:
        sid = (await a.create(shell="/bin/sh", size_policy=policy))["id"]
        await a.attach(sid)
        await b.attach(sid)
        await a.resize(sid, 90, 20)
        await b.resize(sid, 140, 40)
        assert await session_size(a, sid) == after_both
        await a.input(sid, b" ")
        assert await session_size(a, sid) == after_typing
        await a.detach(sid)
        assert await session_size(b, sid) == after_leave
    finally:
        await a.close()
        await b.close()


async def test_read_only_viewer_gets_output_and_read_only_errors(daemon, tmp_path):
    from vibest_pty.client import PtyError

    a, viewer = await daemon.client(), await daemon.client()
    try:
        sid = (await a.create(shell="/bin/sh", cols=100, rows=30))["id"]
        await viewer.request("attach", session=sid, read_only=True)
        for call in (viewer.input(sid, b"x"), viewer.resize(sid, 50, 10), viewer.signal(sid, "INT")):
            with pytest.raises(PtyError) as exc:
                await call
            assert exc.value.code == "read_only"
        assert await session_size(a, sid) == (100, 30)
        await a.input(sid, b"echo hi-there\n")
        await read_until(viewer, sid, b"hi-there\r\n")
        out = str(tmp_path / "probe.json")
        await a.input(sid, f"exec {sys.executable} {PROBE} {out}\n".encode())
        expected = dict(PROBE_EXPECTED, size14=b"\x1b[4;480;800t", size18=b"\x1b[8;30;100t")
        check_probe(await wait_file(out), expected)
    finally:
        await a.close()
        await viewer.close()


async def test_attach_colors_answer_osc_queries_and_colour_scheme(daemon, tmp_path):
    a = await daemon.client()
    try:
        sid = (await a.create(shell="/bin/sh", colors={"foreground": "#102030"}))["id"]
        await a.request("attach", session=sid, colors={"background": "#f8f8f8", "palette": {"1": "#010203"}})
        out = str(tmp_path / "probe.json")
        await a.input(sid, f"exec {sys.executable} {PROBE} {out}\n".encode())
        expected = dict(PROBE_EXPECTED, osc10=b"\x1b]10;rgb:1010/2020/3030\x1b\\",
                        osc11=b"\x1b]11;rgb:f8f8/f8f8/f8f8\x07", osc12=b"\x1b]12;rgb:1010/2020/3030\x1b\\",
                        osc4=b"\x1b]4;1;rgb:0101/0202/0303\x1b\\", color_scheme=b"\x1b[?997;2n")
        check_probe(await wait_file(out), expected)
        with pytest.raises(Exception, match="colour"):
            await a.request("attach", session=sid, colors={"foreground": "blue"})
    finally:
        await a.close()


# -- real terminals attached: tmux running `vibest-pty attach` ------------------------------------------------------

BIN = os.path.dirname(sys.executable)


class TmuxViewers:
    """A private tmux server; each of its sessions runs `vibest-pty attach SID` in a 100x30 window."""

    def __init__(self, directory: str, daemon_socket: str) -> None:
        self.socket = os.path.join(directory, "tmux-q.sock")
        self.env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": directory,
                    "TERM": "xterm-256color", "LANG": "C.UTF-8", "TMUX_TMPDIR": directory,
                    "RUST_PTY_SOCKET_PATH": daemon_socket}
        self.n = 0

    def run(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args], env=self.env,
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def attach(self, sid: int) -> None:
        self.n += 1
        self.run("new-session", "-d", "-x", "100", "-y", "30", "-s", f"v{self.n}",
                 f"{BIN}/vibest-pty attach {sid}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], env=self.env, capture_output=True, timeout=10)


async def wait_clients(c: Any, sid: int, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while next(s for s in await c.list() if s["id"] == sid)["clients"] != n:
        assert time.monotonic() < deadline, f"not {n} clients"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("viewers", [1, 2])
async def test_session_with_real_terminals_attached_answers_each_query_once(daemon, tmp_path, viewers):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = TmuxViewers(daemon.dir, daemon.socket)
    a = await daemon.client()
    try:
        sid = (await a.create(shell="/bin/sh", cols=100, rows=30))["id"]
        for _ in range(viewers):
            t.attach(sid)
        await wait_clients(a, sid, viewers)
        await asyncio.sleep(0.3)  # the attaches' resizes (to the 100x30 windows) are in
        out = str(tmp_path / "probe.json")
        await a.input(sid, f"exec {sys.executable} {PROBE} {out}\n".encode())
        expected = dict(PROBE_EXPECTED, size14=b"\x1b[4;480;800t", size18=b"\x1b[8;30;100t")
        check_probe(await wait_file(out), expected)
    finally:
        t.kill()
        await a.close()


# -- real programs started detached ----------------------------------------------------------------------------------


async def test_prompt_toolkit_started_detached_gets_its_cpr_answer(client):
    code = "from prompt_toolkit import prompt; print(repr(prompt('pt> ')))"
    sid = (await client.create(shell=sys.executable, args=["-c", code], attach=True))["id"]
    seen = await read_until(client, sid, b"pt>", timeout=20)
    await asyncio.sleep(2.5)  # prompt_toolkit warns after waiting 2 s for a CPR answer
    await client.input(sid, b"hello\r")
    seen = await read_until(client, sid, b"'hello'", start=seen, timeout=20)
    assert b"CPR" not in seen and b"\x1b[6n" not in seen


async def test_vim_started_detached_gets_its_termresponse(client, tmp_path):
    if shutil.which("vim") is None:
        pytest.skip("vim is not installed")
    out = tmp_path / "termresponse"
    script = (f"call timer_start(1500, {{-> writefile([v:termresponse], '{out}')}})"
              f" | call timer_start(1600, {{-> execute('qa!')}})")
    sid = (await client.create(shell="vim", args=["-N", "-u", "NONE", "-i", "NONE", "--cmd", script],
                               attach=True))["id"]
    await client.next_event("exit", timeout=20)
    assert out.read_text().strip() == "\x1b[>1;10;0c", sid


def test_attach_restores_margins_reverse_wrap_reports_and_colours_on_detach():
    from vibest_pty.cli.attach import ModeTracker

    m = ModeTracker()
    seq = m.restore_sequence()
    for part in (b"\x1b[?69h\x1b[s\x1b[?69l", b"\x1b[?45l", b"\x1b[?2031l", b"\x1b[?2048l", b"\x1b]104\x1b\\",
                 b"\x1b]110\x1b\\", b"\x1b]111\x1b\\", b"\x1b]112\x1b\\"):
        assert part in seq
    assert seq.index(b"\x1b7") < seq.index(b"\x1b[s") < seq.index(b"\x1b8")  # DECSLRM homes the cursor
    assert b"1007" not in seq  # the user's alternate-scroll setting is left alone...
    m.feed(b"\x1b[?1007h")
    assert b"\x1b[?1007l" in m.restore_sequence()  # ...unless the session changed it


def test_daemon_defaults_for_size_policy_and_colours_are_configurable():
    from vibest_pty.config import Config, ConfigError

    cfg = Config.load([], {"RUST_PTY_SIZE_POLICY": "smallest", "RUST_PTY_COLORS": "#ffffff:#eeeeee",
                           "RUST_PTY_SOCKET_PATH": "/tmp/x.sock"})
    assert cfg.size_policy == "smallest"
    assert (cfg.colors.foreground, cfg.colors.background) == ((255, 255, 255), (0xEE, 0xEE, 0xEE))
    for env in ({"RUST_PTY_SIZE_POLICY": "big"}, {"RUST_PTY_COLORS": "white"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Config.load([], {**env, "RUST_PTY_SOCKET_PATH": "/tmp/x.sock"})


async def test_daemon_default_colours_answer_and_a_create_overrides_part_of_them(daemon_factory, tmp_path):
    d = daemon_factory(env={"RUST_PTY_COLORS": "#ffffff:#eeeeee", "RUST_PTY_SIZE_POLICY": "smallest"})
    a, b = await d.client(), await d.client()
    try:
        sid = (await a.create(shell="/bin/sh", colors={"foreground": "#000000"}))["id"]
        await a.attach(sid)
        await b.attach(sid)
        await a.resize(sid, 90, 20)
        await b.resize(sid, 140, 40)
        assert await session_size(a, sid) == (90, 20)  # the daemon's default policy: smallest
        await a.resize(sid, 80, 24)
        out = str(tmp_path / "probe.json")
        await a.input(sid, f"exec {sys.executable} {PROBE} {out}\n".encode())
        expected = dict(PROBE_EXPECTED, osc10=b"\x1b]10;rgb:0000/0000/0000\x1b\\",
                        osc11=b"\x1b]11;rgb:eeee/eeee/eeee\x07", osc12=b"\x1b]12;rgb:0000/0000/0000\x1b\\",
                        color_scheme=b"\x1b[?997;2n")
        check_probe(await wait_file(out), expected)
    finally:
        await a.close()
        await b.close()
