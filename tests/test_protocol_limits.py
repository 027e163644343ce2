"""Decoding is bounded by the protocol's own limits (issue #11 item 1): hostile *large* shapes are bad_message at
once, and every valid request, up to the largest, decodes exactly as msgpack would."""

from __future__ import annotations

import struct
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibest_pty import protocol
from vibest_pty.protocol import MAX_CONTAINER_ITEMS, MAX_CONTAINERS, MAX_DEPTH, MAX_ITEMS, Malformed

MIB = 1024 * 1024


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def list_of_empty_maps(n: int) -> bytes:
    """{"type": "list", "id": 1, "x": [{} x n]} built directly (packing it with msgpack would take seconds)."""
    return (b"\x83\xa4type\xa4list\xa2id\x01\xa1x\xdd" + n.to_bytes(4, "big") + b"\x80" * n)


def decode(payload: bytes) -> dict[str, Any] | Malformed:
    (m,) = protocol.decode_all(frame(payload), requests=True)
    return m


# Large hostile shapes, each just under a 16 MiB frame: what the fuzz suite did not send.
LARGE = {
    "16.7M empty maps in one array": list_of_empty_maps(16 * MIB - 32),
    "4096 x 4000 empty maps": msgpack.packb({"type": "list", "id": 1, "x": [[{}] * 4096] * 4000}),
    "deep nesting": b"\x81\xa1x" + b"\x91" * (16 * MIB - 8) + b"\xc0",
    "a map header of 2^32-1 entries": b"\x81\xa1x\xdf\xff\xff\xff\xff",
    "many small strings": msgpack.packb({"type": "list", "id": 1, "x": [["ab"] * 4096] * 9}),
    "ext types": msgpack.packb({"type": "list", "x": msgpack.ExtType(5, b"x" * MIB)}),
}


@pytest.mark.parametrize("name", list(LARGE))
def test_large_hostile_shapes_are_bad_message_at_once(name: str) -> None:
    payload = LARGE[name]
    t0 = time.perf_counter()
    m = decode(payload)
    elapsed = time.perf_counter() - t0
    assert isinstance(m, Malformed), name
    # Unbounded, the first one cost 2.8 s and 1.2 GiB; bounded it is microseconds (the walk stops at the first
    # limit). 0.5 s leaves room for a loaded machine and still fails the unbounded decoder.
    assert elapsed < 0.5, (name, elapsed)


def test_the_largest_valid_create_decodes_exactly() -> None:
    msg = {"type": "create", "id": 1, "options": {
        "args": ["a" * 10] * MAX_CONTAINER_ITEMS,
        "env": {f"K{i}": "v" * 100 for i in range(MAX_CONTAINER_ITEMS)},
        "tags": {f"t{i}": "ü" for i in range(MAX_CONTAINER_ITEMS)},
    }}
    assert decode(msgpack.packb(msg)) == msg


def test_a_16_mib_input_decodes_in_a_few_steps() -> None:
    data = bytes(range(256)) * (16 * MIB // 256 - 1)  # every byte value, container type bytes included
    msg = {"type": "input", "session": 1, "data": data}
    t0 = time.perf_counter()
    assert decode(msgpack.packb(msg)) == msg
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("pad", [0, 2000])  # small payloads are checked after decoding, large ones before
def test_limits_are_the_same_for_small_and_large_payloads(pad: int) -> None:
    filler = {"pad": "p" * pad}
    deep: Any = {}
    for _ in range(MAX_DEPTH - 1):
        deep = {"d": deep}
    assert not isinstance(decode(msgpack.packb({**filler, **deep})), Malformed), "exactly at the depth limit"
    assert isinstance(decode(msgpack.packb({**filler, "x": deep})), Malformed), "one deeper"
    many = {**filler, "x": [[] for _ in range(MAX_CONTAINERS - 2)]}
    assert not isinstance(decode(msgpack.packb(many)), Malformed)
    many["y"] = []
    m = decode(msgpack.packb(many))
    assert isinstance(m, Malformed) and "arrays and maps" in m.reason
    m = decode(msgpack.packb({**filler, "x": [0] * (MAX_CONTAINER_ITEMS + 1)}))
    assert isinstance(m, Malformed)


def test_total_items_are_bounded() -> None:
    per = MAX_ITEMS // 8 + 1
    payload = msgpack.packb({"x": [[0] * min(per, MAX_CONTAINER_ITEMS)] * 9})
    m = decode(payload)
    assert isinstance(m, Malformed) and "items" in m.reason


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=40), st.binary(max_size=300))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=8), c,
                                                                                     max_size=6), max_leaves=40)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=8), st.booleans())
def test_within_the_limits_decoding_equals_msgpack(msg: dict[str, Any], large: bool) -> None:
    if large:
        msg = {**msg, "\x00pad": b"\x90" * 2000}  # over SCAN_ABOVE: the walk runs first
    payload = msgpack.packb(msg)
    m = decode(payload)
    if isinstance(m, Malformed):
        assert "decoding limits" in m.reason, m.reason
    else:
        assert m == msgpack.unpackb(payload, raw=False, strict_map_key=False)


# -- large shapes, generated (the fuzz suite's shapes are hostile but small) ------------------------------------

LEAVES = {"nil": b"\xc0", "int": b"\xcd\x01\x00", "str": b"\xa2ab", "empty map": b"\x80", "empty array": b"\x90",
          "bin": b"\xc4\x03xyz"}
HEAD = b"\x83\xa4type\xa4list\xa2id\x01\xa1x"  # {"type": "list", "id": 1, "x": ...}


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return (b"\xdc" + n.to_bytes(2, "big")) if n < 65536 else (b"\xdd" + n.to_bytes(4, "big"))


def large_shape(width: int, depth: int, leaf: str, max_bytes: int) -> tuple[bytes, bool] | None:
    """A `list` request whose `x` is `depth` levels of arrays of `width` items around a leaf, built as bytes
    (packing millions of objects would take seconds), and whether it is within the decoding limits; None when it
    would exceed `max_bytes`."""
    inner = LEAVES[leaf]
    for _ in range(depth):
        if len(inner) * width > max_bytes:
            return None
        inner = _array_header(width) + inner * width
    if len(HEAD) + len(inner) > max_bytes:
        return None
    leaf_is_container = leaf in ("empty map", "empty array")
    arrays = sum(width**k for k in range(depth))  # the levels of arrays
    containers = 1 + arrays + (width**depth if leaf_is_container else 0)
    items = 3 + sum(width ** (k + 1) for k in range(depth))
    levels = 1 + depth + (1 if leaf_is_container else 0)
    within = (width <= MAX_CONTAINER_ITEMS or depth == 0) and containers <= MAX_CONTAINERS \
        and levels <= MAX_DEPTH and items <= MAX_ITEMS
    return HEAD + inner, within


large_shapes = st.builds(large_shape, st.integers(1, 70000) | st.sampled_from([1, 2, 15, 16, 4096, 4097]),
                         st.integers(0, 6), st.sampled_from(sorted(LEAVES)), st.just(4 * MIB)).filter(
    lambda x: x is not None)


@settings(max_examples=200, deadline=None)
@given(large_shapes)
def test_large_shapes_are_decoded_or_refused_as_the_limits_say(shape: tuple[bytes, bool]) -> None:
    payload, within = shape
    t0 = time.perf_counter()
    m = decode(payload)
    assert isinstance(m, Malformed) != within, (len(payload), m if isinstance(m, Malformed) else "decoded")
    if not within:
        assert time.perf_counter() - t0 < 0.5
