"""PHP-bracket query encoding for ``batch`` commands (reference §1, §4).

``{"MESSAGES": [{"user": {"id": 42}}]}`` → ``MESSAGES[0][user][id]=42``. Keys keep their brackets
literal (as the reference shows); every key segment and every value is percent-encoded as UTF-8
with no safe characters, so ``&``, ``=``, ``+``, ``%``, ``#``, newlines and spaces (``%20``, never
``+``) survive PHP's ``parse_str`` on the portal unchanged.

Scalars: ``True``/``False`` become ``1``/``0`` and ``None`` is left out, as PHP's
``http_build_query`` does; an empty list or dict is left out too (PHP cannot express it in a query
string). The Plan contract guarantees MESSAGES items contain neither.

A value may encode itself: an object with a ``php_query_pairs(prefix, out, memo)`` method (the
plan's lazy :class:`~bulkimport.planning.Messages` views) appends its pairs to ``out`` instead of
being walked as a sequence. It must produce exactly what walking its items would (the plan's tests
compare the two); it exists so a chunk of messages goes to the wire without first being built
as a million small dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["command", "decode_query", "encode_query", "pairs", "quote", "shared_pairs"]


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("NaN and infinite floats cannot be sent to the portal")
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (str, int)):
        return str(value)
    raise TypeError(f"cannot encode a {type(value).__name__} in a query string")


#: Characters ``quote(..., safe="")`` leaves as they are: a value made only of them needs no quoting.
_UNRESERVED_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
#: Percent-encoding of every byte (what ``quote`` produces byte by byte).
_BYTE = [chr(b) if chr(b) in _UNRESERVED_CHARS else f"%{b:02X}" for b in range(256)]


def _quote(text: str) -> str:
    """``quote(text, safe="")``, faster: unreserved text as is, else one table look-up per byte."""
    if _UNRESERVED.fullmatch(text):
        return text
    return "".join(map(_BYTE.__getitem__, text.encode("utf-8")))


_KEYS: dict[str, str] = {}  # "[quoted key]": a handful of names repeat in every message


def _key(key: Any) -> str:
    """``[key]`` with the key percent-encoded (memoised for ``str`` keys)."""
    if type(key) is not str:
        return f"[{_quote(str(key))}]"
    quoted = _KEYS.get(key)
    if quoted is None:
        quoted = f"[{_quote(key)}]"
        if len(_KEYS) < 4096:
            _KEYS[key] = quoted
    return quoted


def _pairs(prefix: str, value: Any, out: list[str], memo: dict[int, list[str]] | None = None) -> None:
    # The send path encodes ~10 leaves per message: exact-type checks first (the Plan contract's
    # plain dict/list/str/int), the generic Mapping/Sequence checks only for anything else.
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            path = prefix + _key(key)
            leaf = type(item)
            if leaf is str:  # leaves inline: one call fewer per value
                out.append(f"{path}={_quote(item)}")
            elif leaf is int:
                out.append(f"{path}={item}")
            elif leaf is dict and memo is not None:
                _shared(path, item, out, memo)
            else:
                _pairs(path, item, out, memo)
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            _pairs(f"{prefix}[{index}]", item, out, memo)
    elif kind is str:
        out.append(f"{prefix}={_quote(value)}")
    elif kind is int:
        out.append(f"{prefix}={value}")
    elif (own := getattr(value, "php_query_pairs", None)) is not None:
        own(prefix, out, memo)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _pairs(f"{prefix}[{_quote(str(key))}]", item, out, memo)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        for index, item in enumerate(value):
            _pairs(f"{prefix}[{index}]", item, out, memo)
    else:
        text = _scalar(value)
        if text is not None:
            out.append(f"{prefix}={_quote(text)}")


def _shared(path: str, value: dict[Any, Any], out: list[str], memo: dict[int, list[str]]) -> None:
    """A nested dict, encoded once per object: a plan shares one ``user`` and one ``chat`` block
    among all of a conversation's messages, so their percent-encoding is done once per command
    and only the ``MESSAGES[i]`` prefix differs. ``memo`` lives for one :func:`encode_query` call,
    during which every object it keys by ``id`` stays alive (``params`` holds them)."""
    tails = memo.get(id(value))
    if tails is None:
        tails = []
        _pairs("", value, tails, memo)
        memo[id(value)] = tails
    out.extend([path + tail for tail in tails])


#: For values that encode themselves (see the module docstring): the same pieces the walk uses.
quote = _quote
pairs = _pairs


def shared_pairs(path: str, value: Any, out: list[str], memo: dict[int, list[str]] | None) -> None:
    """``value`` under ``path`` as the walk encodes a ``dict`` value of a ``dict`` (memoised per
    object in ``memo``; anything else walked as usual)."""
    if type(value) is dict and memo is not None:
        _shared(path, value, out, memo)
    else:
        _pairs(path, value, out, memo)


def encode_query(params: Mapping[str, Any]) -> str:
    """``params`` as a PHP-bracket query string (no leading ``?``)."""
    out: list[str] = []
    memo: dict[int, list[str]] = {}
    for key, value in params.items():
        _pairs(_quote(str(key)), value, out, memo)
    return "&".join(out)


def command(method: str, params: Mapping[str, Any] | None = None) -> str:
    """One ``batch`` command: ``method?query`` (just ``method`` without parameters)."""
    query = encode_query(params or {})
    return f"{method}?{query}" if query else method


_SEGMENT = re.compile(r"\[([^\]]*)\]")


def decode_query(query: str) -> dict[str, Any]:
    """Inverse of :func:`encode_query` (PHP ``parse_str`` semantics): lists come back for keys
    ``0..n-1``. Used by the tests for round trips; the portal has its own parser."""
    root: dict[str, Any] = {}
    for pair in query.split("&") if query else []:
        raw_key, _, raw_value = pair.partition("=")
        head, bracket, rest = raw_key.partition("[")
        path = [unquote(head)]
        if bracket:
            path += [unquote(m) for m in _SEGMENT.findall("[" + rest)]
        node = root
        for segment in path[:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = unquote(raw_value)
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if (
        items
        and all(key.isdigit() for key in items)
        and sorted(int(k) for k in items) == list(range(len(items)))
    ):
        return [items[str(i)] for i in range(len(items))]
    return items
