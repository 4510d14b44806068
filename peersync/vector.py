"""Version vectors: one counter per peer that changed a path.

A vector is a plain ``dict[str, int]`` mapping peer id to counter; absent
peers count as 0. Each peer's counter comes from that peer's own monotonic
clock, so a (peer, counter) pair never names two different changes.
"""

from __future__ import annotations

import enum
import json
import re

Vector = dict[str, int]
PEER_RE = re.compile(r"^[A-Z2-7]{26}$")


class Order(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"  # a happened before b: b dominates
    AFTER = "after"  # a dominates b
    CONCURRENT = "concurrent"


def compare(a: Vector, b: Vector) -> Order:
    a_greater = b_greater = False
    for peer in a.keys() | b.keys():
        x, y = a.get(peer, 0), b.get(peer, 0)
        if x > y:
            a_greater = True
        elif y > x:
            b_greater = True
        if a_greater and b_greater:
            return Order.CONCURRENT
    if a_greater:
        return Order.AFTER
    if b_greater:
        return Order.BEFORE
    return Order.EQUAL


def bump(v: Vector, peer: str, counter: int) -> Vector:
    """``v`` with ``peer``'s entry set to ``counter`` (which must exceed every earlier one)."""
    out = dict(v)
    out[peer] = max(counter, out.get(peer, 0) + 1)
    return out


def merge(*vectors: Vector) -> Vector:
    out: Vector = {}
    for v in vectors:
        for p, n in v.items():
            if n > out.get(p, 0):
                out[p] = n
    return out


_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps with options builds one a call


def dumps(v: Vector) -> str:
    return _encode({k: v[k] for k in sorted(v) if v[k]})


def loads(text: str | None) -> Vector:
    if not text:
        return {}
    data = json.loads(text)
    return {str(k): int(n) for k, n in data.items()}


def check(v: object) -> Vector:
    """Validate a vector read from a bundle."""
    if not isinstance(v, dict) or len(v) > 10_000:
        raise ValueError("version vector is not a mapping")
    out: Vector = {}
    for k, n in v.items():
        if not isinstance(k, str) or not PEER_RE.match(k):
            raise ValueError("version vector names something that is not a peer id")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**63:
            raise ValueError("version vector has a bad counter")
        out[k] = n
    return out
