"""Property tests (hypothesis): fingerprints and serialization round trips."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from suture.fingerprint import canonical_json, fingerprint_call
from suture.serialization import JsonSerializer, PickleSerializer, type_adapter

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**60), max_value=2**60),
                    st.floats(allow_nan=False), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                      max_leaves=20)


def reorder(value):
    """The same value with every dict's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(values)
def test_equal_inputs_equal_fingerprints(value):
    assert fingerprint_call((value,), {}) == fingerprint_call((reorder(value),), {})
    assert fingerprint_call((), {"a": value, "b": 1}) == fingerprint_call((), {"b": 1, "a": reorder(value)})


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_different_inputs_different_fingerprints(a, b):
    if canonical_json(a) != canonical_json(b):
        assert fingerprint_call((a,), {}) != fingerprint_call((b,), {})


@given(st.integers(min_value=-(2**52), max_value=2**52))
def test_numeric_forms_as_documented(n):
    assert fingerprint_call((n,), {}) == fingerprint_call((float(n),), {})  # 1 == 1.0
    assert fingerprint_call((True,), {}) != fingerprint_call((1,), {})  # True is not 1
    assert fingerprint_call(((n, n),), {}) == fingerprint_call(([n, n],), {})  # tuples are arrays


@settings(max_examples=300, deadline=None)
@given(values)
def test_json_round_trip(value):
    s = JsonSerializer()
    assert s.loads(s.dumps(value), None) == json.loads(json.dumps(value))


@given(st.dictionaries(st.text(max_size=8), st.lists(st.integers(), max_size=4), max_size=4),
       st.tuples(st.integers(), st.text(max_size=10)), st.binary(max_size=64))
def test_typed_round_trips(mapping, pair, blob):
    s = JsonSerializer()
    assert s.loads(s.dumps(mapping), type_adapter(dict[str, list[int]])) == mapping
    assert s.loads(s.dumps(pair), type_adapter(tuple[int, str])) == pair
    p = PickleSerializer()
    assert p.loads(p.dumps({"blob": blob, "pair": pair}), None) == {"blob": blob, "pair": pair}
