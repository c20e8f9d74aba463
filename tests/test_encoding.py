"""PHP-bracket query encoding of batch commands: exact strings and round trips."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkimport.portal.encoding import command, decode_query, encode_query


def test_reference_shape():
    q = encode_query({"MESSAGES": [{"user": {"id": 42}, "message": {"text": "Hi"}}]})
    assert q == "MESSAGES[0][user][id]=42&MESSAGES[0][message][text]=Hi"


def test_every_value_is_percent_encoded():
    q = encode_query({"T": "a&b=c+d%e f\nж#?/"})
    assert q == "T=a%26b%3Dc%2Bd%25e%20f%0A%D0%B6%23%3F%2F"


def test_scalars_like_php():
    assert (
        encode_query({"A": True, "B": False, "C": None, "D": 3, "E": 2.0, "F": [], "G": {}})
        == "A=1&B=0&D=3&E=2"
    )
    with pytest.raises(ValueError, match="NaN"):
        encode_query({"X": float("nan")})


def test_command():
    assert (
        command("imconnector.status", {"LINE": 1, "CONNECTOR": "x"})
        == "imconnector.status?LINE=1&CONNECTOR=x"
    )
    assert command("server.time") == "server.time"


def test_standard_parser_sees_the_same_pairs():
    q = encode_query({"MESSAGES": [{"message": {"text": "a & b = c + d % 100\r\nnext"}}]})
    assert parse_qsl(q) == [("MESSAGES[0][message][text]", "a & b = c + d % 100\r\nnext")]


def test_round_trip_message():
    msgs = {
        "CONNECTOR": "hist",
        "LINE": 1,
        "MESSAGES": [
            {
                "user": {"id": "u1", "name": "Анна-Мария", "skip_phone_validate": "Y"},
                "message": {
                    "id": "m1",
                    "date": 1600000000,
                    "text": "[b]Hi[/b]\n& = + %",
                    "files": [{"url": "https://x/y?a=1&b=2"}],
                },
                "chat": {"id": "c1", "url": "https://chat/1#x"},
            },
        ],
    }
    back = decode_query(encode_query(msgs))
    assert back["MESSAGES"][0]["message"]["files"][0]["url"] == "https://x/y?a=1&b=2"
    assert back["MESSAGES"][0]["message"]["text"] == "[b]Hi[/b]\n& = + %"
    assert back["MESSAGES"][0]["user"]["name"] == "Анна-Мария"
    assert back["MESSAGES"][0]["message"]["date"] == "1600000000"  # query strings carry text


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["id", "text", "name"]), text, min_size=1), min_size=1, max_size=5
    )
)
def test_round_trip_property(items):
    assert decode_query(encode_query({"M": items})) == {"M": items}


def _reference(params: dict) -> str:
    """The straightforward encoder (urllib's quote, generic type checks): the spec the fast one meets."""
    from collections.abc import Mapping, Sequence
    from urllib.parse import quote

    out: list[str] = []

    def pairs(prefix: str, value: object) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                pairs(f"{prefix}[{quote(str(key), safe='')}]", item)
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
            for index, item in enumerate(value):
                pairs(f"{prefix}[{index}]", item)
        elif value is not None:
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            out.append(f"{prefix}={quote(text, safe='')}")

    for key, value in params.items():
        pairs(quote(str(key), safe=""), value)
    return "&".join(out)


_leaf = st.one_of(st.text(), st.integers(), st.booleans(), st.none(),
                  st.text(alphabet="abcXYZ019_.-~ ж€😀&=+%#[]\n\t", max_size=30))
_tree = st.recursive(_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.tuples(kids, kids),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), kids, max_size=4)), max_leaves=20)


@given(st.dictionaries(st.text(min_size=1, max_size=10), _tree, max_size=4))
def test_fast_encoder_matches_the_reference(params):
    # the send path's encoder is optimised (bench/client_overhead.py); its output must not change
    assert encode_query(params) == _reference(params)


def test_shared_blocks_encode_like_copies():
    """A plan shares one user/chat dict among a conversation's messages; the encoder memoises them
    per call, which must give exactly what distinct copies give (and nothing leaks between calls)."""
    import json

    user = {"id": "c-1", "name": "Иван & Co", "phone": "+79161234567", "picture": {"url": "https://x/p q"}}
    chat = {"id": "wa 1", "name": "Иван (WhatsApp)"}
    shared = [
        {"user": user, "chat": chat, "message": {"id": f"m{i}", "date": i, "text": f"т {i}"}}
        for i in range(3)
    ]
    copies = json.loads(json.dumps(shared))  # equal values, distinct objects
    assert copies[0]["user"] is not copies[1]["user"]
    assert encode_query({"MESSAGES": shared}) == encode_query({"MESSAGES": copies})
    decoded = decode_query(encode_query({"MESSAGES": shared}))["MESSAGES"]
    assert decoded[2]["user"]["picture"]["url"] == "https://x/p q"
    user["name"] = "Пётр"  # the same object changed between two calls: the second call sees it
    assert decode_query(encode_query({"MESSAGES": shared}))["MESSAGES"][1]["user"]["name"] == "Пётр"
