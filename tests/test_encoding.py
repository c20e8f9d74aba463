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
