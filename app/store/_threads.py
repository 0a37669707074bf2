"""Threads' metadata as every store compares it (`RunStore.search_threads`): JSON equality, the
one PostgreSQL's jsonb has, so that the memory and SQLite stores, which filter in Python, find
the threads PostgreSQL finds.

Why not Python's `==`: it holds `True == 1` and `1.0 == True`, where JSON's `true` is not a
number. Numbers compare by value (`1` equals `1.0`), as jsonb's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def json_equal(a: Any, b: Any) -> bool:
    """`a` and `b` (values parsed from JSON) are equal as JSON values."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping | list) or isinstance(b, Mapping | list):
        return False
    return bool(a == b)


def matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """`metadata` has every key of `wanted`, each with an equal value."""
    return all(k in metadata and json_equal(metadata[k], v) for k, v in wanted.items())
