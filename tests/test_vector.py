"""Version vectors (docs/bundle-format.md §12.1): order, bump, merge, storage, and validation of bundle input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peersync import vector as vv
from peersync.vector import Order

A, B, C = "A" * 26, "B" * 26, "C" * 26

vectors = st.dictionaries(st.sampled_from([A, B, C, "D" * 26]), st.integers(min_value=0, max_value=2**63 - 1),
                          max_size=4)


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ({}, {}, Order.EQUAL),
        ({A: 1}, {A: 1}, Order.EQUAL),
        ({A: 1, B: 0}, {A: 1}, Order.EQUAL),  # an absent peer counts as 0
        ({A: 1}, {A: 2}, Order.BEFORE),
        ({}, {A: 1}, Order.BEFORE),
        ({A: 1}, {A: 1, B: 1}, Order.BEFORE),
        ({A: 2}, {A: 1}, Order.AFTER),
        ({A: 1, B: 1}, {A: 1}, Order.AFTER),
        ({A: 1}, {}, Order.AFTER),
        ({A: 2}, {B: 1}, Order.CONCURRENT),
        ({A: 2, B: 1}, {A: 1, B: 2}, Order.CONCURRENT),
        ({A: 1, B: 1, C: 3}, {A: 1, B: 2, C: 1}, Order.CONCURRENT),
    ],
)
def test_compare_all_four_orders(a: vv.Vector, b: vv.Vector, order: Order) -> None:
    assert vv.compare(a, b) is order


def test_bump_is_monotonic() -> None:
    v: vv.Vector = {}
    v1 = vv.bump(v, A, 5)
    assert v1 == {A: 5} and v == {}  # a new vector; the input is not changed
    assert vv.compare(v, v1) is Order.BEFORE
    v2 = vv.bump(v1, A, 3)  # a counter below the current entry still moves forward
    assert v2[A] == 6 and vv.compare(v1, v2) is Order.BEFORE
    v3 = vv.bump({B: 4}, A, 1)
    assert v3 == {A: 1, B: 4} and vv.compare({B: 4}, v3) is Order.BEFORE


@given(vectors, st.sampled_from([A, B, C]), st.integers(min_value=0, max_value=2**62))
def test_bump_always_dominates(v: vv.Vector, peer: str, counter: int) -> None:
    bumped = vv.bump(v, peer, counter)
    assert vv.compare(bumped, v) is Order.AFTER
    assert bumped[peer] >= counter


def test_merge() -> None:
    assert vv.merge({A: 1, B: 5}, {A: 3, C: 2}) == {A: 3, B: 5, C: 2}
    assert vv.merge({}, {}) == {}
    assert vv.merge({A: 1}, {}) == {A: 1}


@given(vectors, vectors)
def test_compare_is_antisymmetric(a: vv.Vector, b: vv.Vector) -> None:
    mirror = {Order.EQUAL: Order.EQUAL, Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE,
              Order.CONCURRENT: Order.CONCURRENT}
    assert vv.compare(b, a) is mirror[vv.compare(a, b)]


@given(vectors)
def test_compare_is_reflexive(a: vv.Vector) -> None:
    assert vv.compare(a, a) is Order.EQUAL
    assert vv.compare(a, dict(a)) is Order.EQUAL


@given(vectors, vectors)
def test_merge_dominates_both(a: vv.Vector, b: vv.Vector) -> None:
    m = vv.merge(a, b)
    assert vv.compare(m, a) in (Order.AFTER, Order.EQUAL)
    assert vv.compare(m, b) in (Order.AFTER, Order.EQUAL)
    assert vv.merge(b, a) == m
    assert vv.merge(m, a) == m


@given(vectors, vectors, vectors)
def test_compare_is_transitive(a: vv.Vector, b: vv.Vector, c: vv.Vector) -> None:
    if vv.compare(a, b) is Order.BEFORE and vv.compare(b, c) is Order.BEFORE:
        assert vv.compare(a, c) is Order.BEFORE


@given(vectors)
def test_dumps_loads_round_trip(v: vv.Vector) -> None:
    text = vv.dumps(v)
    back = vv.loads(text)
    assert vv.compare(back, v) is Order.EQUAL
    assert back == {k: n for k, n in v.items() if n}  # zero entries are dropped
    assert vv.dumps(back) == text


def test_dumps_is_canonical() -> None:
    assert vv.dumps({B: 2, A: 1, C: 0}) == f'{{"{A}":1,"{B}":2}}'
    assert vv.loads(None) == {} and vv.loads("") == {}


def test_check_accepts_good_vectors() -> None:
    assert vv.check({}) == {}
    assert vv.check({A: 0, B: 2**63 - 1}) == {A: 0, B: 2**63 - 1}


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        [[A, 1]],
        "{}",
        42,
        {A: -1},
        {A: 1.0},
        {A: 1.5},
        {A: "1"},
        {A: True},  # JSON true is not a counter, although Python's bool is an int
        {A: None},
        {A: [1]},
        {"x" * 65: 1},
        {1: 1},
        {f"{i:026d}": 1 for i in range(10_001)},
    ],
)
def test_check_rejects_bad_input(bad: object) -> None:
    with pytest.raises(ValueError):
        vv.check(bad)


@pytest.mark.parametrize("bad", [{A: 2**63}, {A: 10**100}, {"not a peer id": 1}])
def test_check_bounds_counters_and_keys(bad: object) -> None:
    with pytest.raises(ValueError):
        vv.check(bad)
