"""The server's JSON codec: orjson where it answers exactly as the standard library does, json elsewhere."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepline.serving import json_codec


def same(a, b) -> bool:
    """Equal as JSON values, NaN equal to NaN, ints and floats kept apart."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(value=VALUES, ascii_only=st.booleans())
def test_loads_reads_what_json_reads(value, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert same(json_codec.loads(body), json.loads(body))


@pytest.mark.parametrize("body", [
    b'{"a": NaN, "b": Infinity, "c": -Infinity}', b"[1e400]", b"\xef\xbb\xbf[1]", "[1, 2]".encode("utf-16"),
    b'["\\ud800"]', b'{"a": 1, "a": 2}', b" [ 1 ] ", b"[" * 40 + b"]" * 40,
])
def test_bodies_orjson_refuses_or_may_read_differently_are_read_by_json(body):
    assert same(json_codec.loads(body), json.loads(body))


@pytest.mark.parametrize("body", [b"", b"[1,", b"{'a': 1}", b"\xff\xfe\xff", b"[1] x"])
def test_malformed_bodies_raise_what_json_raises(body):
    with pytest.raises(ValueError) as expected:
        json.loads(body)
    with pytest.raises(type(expected.value)):
        json_codec.loads(body)


def test_nesting_deeper_than_json_allows_is_refused_as_json_refuses_it():
    deep = b"[" * 5000 + b"]" * 5000  # some orjson releases read any depth
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        json_codec.loads(deep)


@pytest.mark.parametrize("body, depth, expected", [
    (b"1", 0, True), (b"[1]", 1, True), (b"[[1]]", 1, False), (b'{"a": [{}]}', 3, True), (b'{"a": [{}]}', 2, False),
    (b"[", 5, False), (b"[[]", 5, False), (b"[{]}", 5, False), (b'["]"]', 5, False), (b'["["]', 5, False),
])
def test_nests_at_most_never_says_shallow_for_a_deeper_body(body, depth, expected):
    assert json_codec.nests_at_most(body, depth) is expected


ARRAYS = [
    np.arange(5, dtype=np.int64), np.arange(5, dtype=np.int8), np.arange(5, dtype=np.uint64) * (2 ** 60),
    np.array([True, False]), np.array([0.1, 1e16, -0.0, 5e-324]), np.array([1.5, np.nan, np.inf]),
    np.array([0.1, 0.2], dtype=np.float32), np.arange(12.0).reshape(3, 4), np.arange(12.0).reshape(3, 4)[:, 1],
    np.array(["a", "b"]), np.array([1.0], dtype=">f8"), np.array([1], dtype=np.float16),
]


@pytest.mark.parametrize("array", ARRAYS, ids=[f"{a.dtype}{list(a.shape)}" for a in ARRAYS])
def test_an_array_is_written_as_json_writes_its_list(array):
    body = json_codec.dumps({"predictions": json_codec.jsonable(array, np.ndarray.tolist)})
    assert same(json.loads(body), {"predictions": array.tolist()})


def test_only_arrays_orjson_writes_exactly_are_passed_to_it():
    exact = [a for a in ARRAYS if json_codec.writes_exactly(a)]
    if json_codec.orjson is None:
        assert exact == []
        return
    assert all(a.dtype.kind in "biu" or (a.dtype == np.float64 and np.isfinite(a).all()) for a in exact)
    assert not json_codec.writes_exactly(np.array([0.1], dtype=np.float32))  # orjson: 0.1, json: 0.10000000149011612
    assert not json_codec.writes_exactly(np.array([np.nan]))  # orjson: null, json: NaN


def test_nan_in_a_list_is_written_as_python_reads_it():
    assert json_codec.dumps({"a": [float("nan"), 1.0]}) == b'{"a":[NaN,1.0]}'


def test_text_utf8_cannot_encode_is_written_escaped():
    body = json_codec.dumps({"id": "x\ud800", "b": "é"})
    assert json.loads(body) == {"id": "x\ud800", "b": "é"}
    body.decode("utf-8")  # valid UTF-8
