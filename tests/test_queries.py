"""Terminal queries: the output filter (sans-I/O), the emulator's answers, and a session answering exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibest_pty.queries import MAX_HOLD, Query, QueryFilter, Segment, split_queries
from vibest_pty.responder import XTVERSION, Colors, Responder, agree, parse_colors

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
