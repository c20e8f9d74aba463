"""The sandbox's fast paths give exactly what the plain algorithms give: the PHP-bracket decoder
(cached name parsing, percent-decoding at C speed) for any query string, the reused ISO date,
and the cost sleep with oversleep credit (never short of the cost)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from bulkimport.sandbox import portal as sandbox_portal
from bulkimport.sandbox.portal import decode_pairs, decode_query


def _reference_assign(target: dict[str, Any], name: str, value: Any) -> None:
    """The decoder as first written (no caches, no fast paths): the oracle."""
    if "[" in name and name.find("]", name.find("[")) > 0 and name.find("[") > 0:
        base, rest = name[: name.find("[")], name[name.find("[") :]
    else:
        base, rest = name, ""
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return
    keys: list[str | None] = []
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        inner = rest[1:close]
        keys.append(None if inner == "" else inner)
        rest = rest[close + 1 :]
    if not keys:
        target[base] = value
        return
    node = target
    path: list[str | None] = [base, *keys]
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if key is None:
            ints = [int(k) for k in node if isinstance(k, str) and sandbox_portal._is_index(k)]
            key = str(max(ints) + 1 if ints else 0)
        if last:
            node[key] = value
        else:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child


def reference_decode(query: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        _reference_assign(params, unquote_plus(name), unquote_plus(value))
    return params


# Query strings built from the characters that matter to the parser: brackets, separators,
# escapes (valid, truncated, invalid), plus signs, dots, spaces, digits, non-ASCII.
_PIECES = st.sampled_from(["[", "]", "[]", "&", "=", "%", "%2", "%20", "%5B", "%5D", "%26", "%3D", "%D0%94",
                           "%zz", "+", ".", " ", "0", "1", "-1", "01", "a", "M", "б", "MESSAGES", "[0]",
                           "[user]", "[id]"])
QUERIES = st.lists(_PIECES, max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(QUERIES)
def test_decode_query_matches_the_reference(query: str) -> None:
    assert decode_query(query) == reference_decode(query)
    assert decode_query(query) == reference_decode(query)  # second time through the name cache


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(QUERIES, QUERIES), max_size=8))
def test_decode_pairs_matches_the_reference(pairs: list[tuple[str, str]]) -> None:
    expected: dict[str, Any] = {}
    for name, value in pairs:
        _reference_assign(expected, name, value)
    assert decode_pairs(pairs) == expected


def test_known_shapes() -> None:
    q = ("CONNECTOR=c&LINE=1&MESSAGES[0][user][id]=u%201&MESSAGES[0][message][text]=a+b%2Bc"
         "&a[]=1&a[]=2&x.y=3&MESSAGES[0][chat][id]=%D0%94")
    assert decode_query(q) == {
        "CONNECTOR": "c", "LINE": "1", "a": {"0": "1", "1": "2"}, "x_y": "3",
        "MESSAGES": {"0": {"user": {"id": "u 1"}, "message": {"text": "a b+c"}, "chat": {"id": "Д"}}},
    }


_ESCAPED_BYTES = st.binary(max_size=6).map(lambda b: "".join(f"%{x:02X}" for x in b))
_ESCAPED_LOWER = st.binary(max_size=4).map(lambda b: "".join(f"%{x:02x}" for x in b))
_ODD = st.sampled_from(["%", "%4", "%zz", "%%41", "+", "a", " ", "б", "€", "%e2%82", "&", "="])
_PART = st.one_of(_ESCAPED_BYTES, _ESCAPED_LOWER, _ODD, st.text(max_size=3))
UNQUOTE_TEXT = st.lists(_PART, max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(UNQUOTE_TEXT)
def test_unquote_fast_path_matches_the_library(text: str) -> None:
    assert sandbox_portal._unquote_plus(text) == unquote_plus(text)


_EDGES = st.sampled_from([0.0, 1e-7, 0.5, 0.999998, 0.9999994, 0.9999996, 0.9999999, 0.99999999])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4_000_000_000), _EDGES | st.floats(0, 1, exclude_max=True))
def test_iso_dates_match_datetime(second: int, fraction: float) -> None:
    for ts in (second + fraction, second + fraction, float(second)):  # twice: through the cache
        assert sandbox_portal._iso(ts) == datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def test_sleeping_the_cost_is_never_short_and_processing_is_exact() -> None:
    """Oversleep credit: at every moment the real time slept covers the cost spent so far."""
    import time

    from bulkimport.sandbox.limits import VirtualClock
    from bulkimport.sandbox.portal import Work

    for scale in (1.0, 4.0):
        work = Work(VirtualClock(scale), cap=60.0)
        started = time.perf_counter()
        for i in range(120):
            work.spend(0.0002 if i % 2 else 0.0005)
            assert time.perf_counter() - started >= work.spent / scale
        assert work.spent == sum(0.0002 if i % 2 else 0.0005 for i in range(120))
