"""The sans-I/O codec: test vectors, incremental decoding under any chunking, request validation."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibest_pty import protocol
from vibest_pty.protocol import FrameDecoder, FrameError, Malformed, ProtocolError

from .vectors.make_vectors import from_json

VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text())


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_vector_encodes_byte_for_byte(case: dict[str, Any]) -> None:
    assert protocol.encode(from_json(case["value"])).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_vector_decodes(case: dict[str, Any]) -> None:
    assert protocol.decode_all(bytes.fromhex(case["hex"])) == [from_json(case["value"])]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vector_rejected(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    dec = FrameDecoder(max_frame=1 << 20)
    dec.feed(data)
    if case["error"] == "bad_frame":
        with pytest.raises(FrameError):
            list(dec.messages())
    else:
        out = list(dec.messages())
        assert len(out) == 1 and isinstance(out[0], Malformed)


def test_encode_output_matches_generic_encoding() -> None:
    assert protocol.encode_output(3, 99, b"ab") == protocol.encode(
        {"type": "output", "session": 3, "data": b"ab", "offset": 99}
    )


def test_decoder_waits_for_whole_frame_and_keeps_order() -> None:
    frames = b"".join(protocol.encode({"type": "list", "id": i}) for i in range(50))
    dec = FrameDecoder()
    got: list[Any] = []
    for i in range(0, len(frames), 3):
        dec.feed(frames[i : i + 3])
        got.extend(dec.messages())
    assert [m["id"] for m in got] == list(range(50))
    assert dec.buffered == 0


def test_decoder_stays_broken_after_frame_error() -> None:
    dec = FrameDecoder(max_frame=100)
    dec.feed(struct.pack(">I", 101))
    with pytest.raises(FrameError):
        list(dec.messages())
    dec.feed(protocol.encode({"type": "list"}))
    with pytest.raises(FrameError):
        list(dec.messages())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=1, max_value=64), max_size=50))
def test_any_bytes_in_any_chunking_never_crash(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder(max_frame=4096)
    pos = 0
    for c in [*cuts, len(data)]:
        dec.feed(data[pos : pos + c])
        pos += c
        try:
            for m in dec.messages():
                assert isinstance(m, dict | Malformed)
        except FrameError:
            return


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=40) | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=6), min_size=1, max_size=8),
       st.integers(min_value=1, max_value=17))
def test_round_trip_in_any_chunking(msgs: list[dict[str, Any]], step: int) -> None:
    stream = b"".join(protocol.encode(m) for m in msgs)
    dec = FrameDecoder(requests=True)
    out: list[Any] = []
    for i in range(0, len(stream), step):
        dec.feed(stream[i : i + step])
        out.extend(dec.messages())
    assert len(out) == len(msgs)
    for got, sent in zip(out, msgs, strict=True):
        if _depth(sent) > protocol.MAX_DEPTH or _containers(sent) > protocol.MAX_CONTAINERS:
            assert isinstance(got, Malformed) and "decoding limits" in got.reason
        else:
            assert got == sent


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    return 0


def _containers(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + sum(map(_containers, v.values()))
    if isinstance(v, list):
        return 1 + sum(map(_containers, v))
    return 0


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "id", "session", "options", "data", "cols", "rows", "signal",
                                        "since", "snapshot", "count", "protocol"]), json_values, max_size=8))
def test_validation_raises_only_protocol_errors(msg: dict[str, Any]) -> None:
    """Whatever a peer sends, validation answers with a documented error code, never another exception."""
    for fn in (protocol.request_id, protocol.request_type, protocol.get_session, protocol.parse_create_options,
               protocol.get_data, lambda m: protocol.parse_signal(m.get("signal"))):
        try:
            fn(msg)
        except ProtocolError as exc:
            assert exc.code in protocol.ERROR_CODES


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ({"id": -1, "type": "list"}, "bad_message"),
        ({"id": 2**53, "type": "list"}, "bad_message"),
        ({"id": "x", "type": "list"}, "bad_message"),
        ({"id": True, "type": "list"}, "bad_message"),
    ],
)
def test_bad_ids(msg: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.request_id(msg)
    assert e.value.code == code


def test_types() -> None:
    assert protocol.request_type({"type": "list"}) == "list"
    with pytest.raises(ProtocolError, match="unknown request type") as e:
        protocol.request_type({"type": "nope"})
    assert e.value.code == "unknown_type"
    with pytest.raises(ProtocolError) as e:
        protocol.request_type({"type": b"list"})
    assert e.value.code == "bad_message"


@pytest.mark.parametrize(("value", "expected"), [("SIGINT", 2), ("int", 2), ("TERM", 15), (9, 9), ("SIGWINCH", 28)])
def test_signal_names(value: Any, expected: int) -> None:
    assert protocol.parse_signal(value) == expected


@pytest.mark.parametrize("value", ["SIGNOPE", 0, 999, -1, 2.0, None, b"INT"])
def test_bad_signals(value: Any) -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.parse_signal(value)
    assert e.value.code == "invalid_argument"


@pytest.mark.parametrize(
    "options",
    [
        {"cols": 0}, {"rows": 1001}, {"cols": "80"}, {"args": "ls"}, {"args": [1]}, {"env": {"A": 1}},
        {"env": {"A=B": "x"}}, {"tags": []}, {"attach": 1}, {"shell": ""}, {"cwd": 5}, {"name": "a\x00b"},
    ],
)
def test_bad_create_options(options: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.parse_create_options({"options": options})
    assert e.value.code == "invalid_argument"


def test_create_defaults() -> None:
    o = protocol.parse_create_options({})
    assert (o.cols, o.rows, o.attach, o.args, o.shell) == (80, 24, False, (), None)
