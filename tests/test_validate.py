"""bulkimport.validation: collect-all per-row failures with catalogue codes; customers, operators, ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import bulkimport
from bulkimport import codes
from bulkimport.errors import MappingError
from bulkimport.mapping import Mapping
from bulkimport.planning import FAILURE_COLUMNS
from bulkimport.validation import prepare, validate

EXAMPLES = Path(__file__).resolve().parent.parent / "data_examples"
BASE = {"chat.id": "Chat", "user.id": "Client", "message.date": "Date", "message.text": "Text"}


def _df(**cols: list[object]) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return pd.DataFrame(cols, index=pd.RangeIndex(2, 2 + n, name="row"), dtype=object)


def _codes(failures: pd.DataFrame) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for row, code in zip(failures["row"], failures["code"], strict=True):
        out.setdefault(int(row), []).append(code)
    return out


def test_clean_rows_have_no_failures_and_columns_are_the_contract():
    df = _df(
        Chat=["c1", "c1"],
        Client=["007", "007"],
        Date=["2026-11-23 10:00", "2026-11-23 10:01"],
        Text=["hi", "there"],
    )
    f = validate(df, Mapping(columns=BASE))
    assert list(f.columns) == FAILURE_COLUMNS and f.empty
    assert bulkimport.validate(df, Mapping(columns=BASE)).empty


def test_collect_all_every_problem_of_every_row():
    df = _df(
        Chat=["c1", "c1", "c1"],
        Client=["1", "1", "1"],
        Date=["bad", None, "2026-11-23 10:00"],
        Text=[None, "ok", "x" * 20_001],
        Name=["R2D2", "Ann", "Bob"],
        Email=["nope", None, "a@b.co"],
    )
    m = Mapping(columns={**BASE, "user.name": "Name", "user.email": "Email"})
    f = validate(df, m)
    got = _codes(f)
    assert sorted(got[2]) == ["bad-date", "bad-email", "missing-content", "name-cleaned"]
    assert got[3] == ["missing-date"]
    assert got[4] == ["text-too-long"]
    row2 = f[f["row"] == 2].set_index("code")
    assert row2.loc["bad-date", "value"] == "bad" and row2.loc["bad-date", "field"] == "message.date"
    assert row2.loc["bad-email", "level"] == "warning" and row2.loc["bad-date", "level"] == "error"
    assert row2.loc["bad-date", "message"] == codes.get("bad-date").message
    assert set(f["code"]).issubset({c.code for c in codes.CATALOGUE.values()})


def test_operator_rows_get_the_customers_user_block():
    df = _df(
        Chat=["c1", "c1", "c1"],
        Client=["007", None, "007"],
        Name=["Анна", "Оператор Иван", None],
        Phone=["+7 916 123-45-67", None, None],
        Author=["Анна", "Иван", "Анна"],
        Date=["23.11.2026 10:00", "23.11.2026 10:01", "23.11.2026 10:02"],
        Text=["Привет", "Здравствуйте", "Спасибо"],
    )
    m = Mapping(
        columns={**BASE, "user.name": "Name", "user.phone": "Phone"},
        options={"author": "Author"},
        operators={"Иван": 12},
    )
    plan = bulkimport.plan(df, m)
    assert plan.counts["invalid"] == 0
    (conv,) = plan.conversations
    users = [msg["user"] for msg in conv.messages]
    assert users == [{"id": "007", "name": "Анна", "phone": "+79161234567"}] * 3
    assert [msg["message"].get("user_id") for msg in conv.messages] == [None, 12, None]


def test_operator_row_with_direct_message_user_id_column():
    df = _df(
        Client=["5", "5"], Date=["2026-01-01 10:00", "2026-01-01 10:05"], Text=["q", "a"], Op=[None, "77"]
    )
    m = Mapping(
        columns={"user.id": "Client", "message.date": "Date", "message.text": "Text", "message.user_id": "Op"}
    )
    (conv,) = bulkimport.plan(df, m).conversations
    assert conv.key == "5" and conv.messages[1]["message"]["user_id"] == 77
    assert "user_id" not in conv.messages[0]["message"]


def test_bad_operator_id_is_an_error():
    df = _df(Client=["5"], Date=["2026-01-01 10:00"], Text=["q"], Op=["Anna"])
    m = Mapping(
        columns={"user.id": "Client", "message.date": "Date", "message.text": "Text", "message.user_id": "Op"}
    )
    assert _codes(validate(df, m)) == {2: ["bad-operator-id"]}


def test_conversation_without_customer_is_invalid_with_its_own_code():
    df = _df(
        Chat=["c9", "c9", "c1"],
        Client=[None, None, "1"],
        Author=["Oleg", "Oleg", "Ann"],
        Date=["2026-01-01 10:00", "2026-01-01 10:01", "2026-01-01 10:00"],
        Text=["a", "b", "c"],
    )
    m = Mapping(columns=BASE, options={"author": "Author"}, operators={"Oleg": 15})
    f = validate(df, m)
    assert _codes(f) == {2: ["no-customer"], 3: ["no-customer"]}
    plan = bulkimport.plan(df, m)
    assert [c.key for c in plan.conversations] == ["c1"] and list(plan.invalid_rows) == [2, 3]


def test_customer_row_without_user_id_takes_the_chats_customer_or_fails():
    df = _df(
        Chat=["c1", "c1", "c2", None],
        Client=["1", None, None, None],
        Date=["2026-01-01 10:00"] * 4,
        Text=["a", "b", "c", "d"],
    )
    f = validate(df, Mapping(columns=BASE))
    assert _codes(f) == {4: ["missing-user-id"], 5: ["no-conversation"]}


def test_chat_id_defaults_to_user_id():
    df = _df(
        Client=["1", "2", "1"],
        Date=["2026-01-01 10:00", "2026-01-01 09:00", "2026-01-01 11:00"],
        Text=["a", "b", "c"],
    )
    plan = bulkimport.plan(
        df, Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"})
    )
    assert [(c.key, c.rows) for c in plan.conversations] == [("2", (3,)), ("1", (2, 4))]
    assert all(m["chat"]["id"] == m["user"]["id"] for c in plan.conversations for m in c.messages)


def test_generated_message_ids_are_stable_and_distinguish_repeats():
    df = _df(Client=["1", "1", "1"], Date=["2026-01-01 10:00"] * 3, Text=["ok", "ok", "other"])
    m = Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"})
    ids = prepare(df, m).canonical["message.id"].tolist()
    assert len(set(ids)) == 3 and all(i.startswith("bi2-") for i in ids)
    again = prepare(df.copy(), Mapping(columns=m.columns)).canonical["message.id"].tolist()
    assert ids == again
    shifted = pd.concat([_df(Client=["2"], Date=["2026-01-01 09:00"], Text=["x"]), df.set_axis([3, 4, 5])])
    shifted.index.name = "row"
    assert prepare(shifted, m).canonical["message.id"].tolist()[1:] == ids  # rows around don't matter


def test_generated_ids_follow_identity_not_content():
    """A row without a message id is known by chat, customer, time and occurrence: editing its text
    keeps its id (a re-run reports it as changed), editing its time gives it another."""
    df = _df(Client=["1", "1", "2"], Date=["2026-01-01 10:00", "2026-01-01 10:01", "2026-01-01 10:00"],
             Text=["ok", "thanks", "ok"])
    m = Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"})
    ids = prepare(df, m).canonical["message.id"].tolist()
    texts = df.assign(Text=["OK!", "thanks a lot", "ok"])
    assert prepare(texts, m).canonical["message.id"].tolist() == ids
    timed = df.assign(Date=["2026-01-01 10:00", "2026-01-01 10:05", "2026-01-01 10:00"])
    moved = prepare(timed, m).canonical["message.id"].tolist()
    assert moved[0] == ids[0] and moved[2] == ids[2] and moved[1] != ids[1]


def test_generated_ids_keep_their_values_and_their_hash_scheme():
    """The ids are pandas' SipHash of (chat, customer, time, occurrence) with key bulkimport-ids-2;
    hashing per column gives exactly hash_pandas_object's values."""
    ids_key = "bulkimport-ids-2"
    df = _df(Client=["1", "1"], Date=["2026-01-01 10:00"] * 2, Text=["ok", "ok"])
    m = Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"})
    ids = prepare(df, m).canonical["message.id"].tolist()
    when = int(pd.Timestamp("2026-01-01 10:00", tz="UTC").timestamp())
    frame = pd.DataFrame({"k": pd.Series(["1", "1"], dtype="str"), "u": pd.Series(["1", "1"], dtype="str"),
                          "d": [when, when], "n": [0, 1]})
    want = pd.util.hash_pandas_object(frame, index=False, hash_key=ids_key).to_numpy()
    assert ids == ["bi2-" + format(int(v), "016x") for v in want]


def test_legacy_generated_ids_keep_their_values_and_their_hash_scheme(monkeypatch):
    """The ids of journals written before id schemes (bulkimport.validation._legacy_generated_ids,
    which tests use to make such journals) are pandas' SipHash of (chat, time, text, files,
    occurrence) with key bulkimport-ids-1; hashing per column must give exactly
    hash_pandas_object's values, and repeats in other chats or times count apart."""
    import numpy as np

    from bulkimport import validation
    from bulkimport.validation import _IDS_KEY, _combine_hashes, _hash_by_value, _hash_files

    monkeypatch.setattr(validation, "_generated_ids", validation._legacy_generated_ids)

    k = pd.Series(["a", "b", "a", "c", "a"], dtype="str")
    d = np.array([1, 2, 3, -1, 1])
    t = pd.Series(["x", "\x00", "x", "y", "x"], dtype="str")
    f = pd.Series(["", "u v", "", "", ""], dtype="str")
    n = np.array([0, 0, 1, 0, 1])
    frame = pd.DataFrame({"k": k, "d": d, "t": t, "f": f, "n": n})
    want = pd.util.hash_pandas_object(frame, index=False, hash_key=_IDS_KEY).to_numpy()
    got = _combine_hashes(
        [
            _hash_by_value(k, pd.factorize(k)[0]),
            pd.util.hash_array(d, hash_key=_IDS_KEY, categorize=False),
            pd.util.hash_array(t.array, hash_key=_IDS_KEY, categorize=False),
            _hash_files(f, f.ne("").to_numpy()),
            pd.util.hash_array(n, hash_key=_IDS_KEY, categorize=False),
        ]
    )
    assert (got == want).all()
    assert (_hash_by_value(f, pd.factorize(f)[0]) == _hash_files(f, f.ne("").to_numpy())).all()
    df = _df(
        Client=["1", "1", "2", "1", "1"],
        Date=[
            "2026-01-01 10:00",
            "2026-01-01 10:00",
            "2026-01-01 10:00",
            "2026-01-01 10:01",
            "2026-01-01 10:00",
        ],
        Text=["ok", "ok", "ok", "ok", "ok"],
    )
    m = Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"})
    ids = prepare(df, m).canonical["message.id"].tolist()
    assert len(set(ids)) == 5  # three repeats in chat 1 at 10:00, one in chat 2, one at 10:01
    assert ids[:2] == prepare(df.iloc[:2], m).canonical["message.id"].tolist()  # pinned by position
    assert ids[0] == "bi-" + format(
        int(
            pd.util.hash_pandas_object(
                pd.DataFrame(
                    {
                        "k": pd.Series(["1"], dtype="str"),
                        "d": [int(pd.Timestamp("2026-01-01 10:00", tz="UTC").timestamp())],
                        "t": pd.Series(["ok"], dtype="str"),
                        "f": pd.Series([""], dtype="str"),
                        "n": [0],
                    }
                ),
                index=False,
                hash_key=_IDS_KEY,
            ).iloc[0]
        ),
        "016x",
    )


def test_explicit_message_ids_duplicates_are_flagged():
    df = _df(
        Client=["1", "1", "2"], Mid=["m1", "m1", "m1"], Date=["2026-01-01 10:00"] * 3, Text=["a", "b", "c"]
    )
    m = Mapping(
        columns={"user.id": "Client", "message.id": "Mid", "message.date": "Date", "message.text": "Text"}
    )
    assert _codes(validate(df, m)) == {3: ["duplicate-message-id"]}


def test_files_only_rows_are_valid_and_bad_files_invalid():
    df = _df(
        Client=["1", "1"],
        Date=["2026-01-01 10:00"] * 2,
        Text=[None, "see file"],
        Files=["https://example.com/a.png", "scan.png"],
    )
    m = Mapping(
        columns={
            "user.id": "Client",
            "message.date": "Date",
            "message.text": "Text",
            "message.files": "Files",
        }
    )
    assert _codes(validate(df, m)) == {3: ["bad-file-url"]}
    with_base = Mapping(columns=m.columns, options={"files_base_url": "https://cdn.example.com/x"})
    assert validate(df, with_base).empty


def test_constants_feed_fields():
    df = _df(Client=["1"], Date=["2026-01-01 10:00"], Text=["a"])
    m = Mapping(
        columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"},
        constants={"chat.name": "Old WhatsApp", "chat.id": "archive"},
    )
    (conv,) = bulkimport.plan(df, m).conversations
    assert conv.messages[0]["chat"] == {"id": "archive", "name": "Old WhatsApp"}


def test_two_column_date_and_time_mapping():
    df = _df(Client=["1"], D=["23.11.2026"], T=["14:05"], Text=["a"])
    m = Mapping(
        columns={"user.id": "Client", "message.date": ["D", "T"], "message.text": "Text"},
        options={"timezone": "Europe/Moscow"},
    )
    (conv,) = bulkimport.plan(df, m).conversations
    assert conv.messages[0]["message"]["date"] == int(pd.Timestamp("2026-11-23 11:05", tz="UTC").timestamp())
    bad = _df(Client=["1"], D=["23.11.2026"], T=["99:99"], Text=["a"])
    f = validate(bad, m)
    assert _codes(f) == {2: ["bad-date"]} and f["value"][0] == "23.11.2026 99:99"


def test_unmapped_required_fields_refuse_with_mapping_error():
    df = _df(Foo=["1"])
    with pytest.raises(MappingError, match="required field"):
        validate(df, Mapping(columns={"message.text": "Foo"}))


def test_duplicate_index_is_refused():
    df = pd.DataFrame({"Client": ["1", "1"], "Date": ["2026-01-01"] * 2, "Text": ["a", "b"]}, index=[2, 2])
    with pytest.raises(bulkimport.InputError, match="index must be unique"):
        validate(df, Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"}))
    df.index = pd.array([2, None], dtype="Int64")  # unique, but a row without an id
    with pytest.raises(bulkimport.InputError, match="index has missing values"):
        bulkimport.plan(
            df, Mapping(columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"})
        )


def test_warnings_for_operator_rows_user_fields_are_not_reported():
    df = _df(
        Client=["1", "1"],
        Name=["Ann", "Operator #1"],
        Author=["Ann", "Op"],
        Date=["2026-01-01 10:00", "2026-01-01 10:01"],
        Text=["a", "b"],
    )
    m = Mapping(
        columns={"user.id": "Client", "user.name": "Name", "message.date": "Date", "message.text": "Text"},
        options={"author": "Author"},
        operators={"Op": 3},
    )
    assert validate(df, m).empty


def test_example_files_validate_with_the_deliberate_problems():
    for data, mp in (("history.xlsx", "history_xlsx.toml"), ("history.csv", "history_csv.toml")):
        df = bulkimport.read(EXAMPLES / data)
        f = validate(df, Mapping.load(EXAMPLES / mp))
        errs = set(f.loc[f["level"] == "error", "code"])
        assert {"missing-date", "bad-date", "missing-content", "bad-file-url", "no-customer"} <= errs
        assert (f["level"] == "warning").any()


def test_excel_1904_serials_flow_from_the_workbook_to_the_plan(tmp_path):
    import datetime as dt

    import openpyxl

    wb = openpyxl.Workbook()
    wb.epoch = openpyxl.utils.datetime.CALENDAR_MAC_1904
    ws = wb.active
    ws.append(["Client", "Date", "Text"])
    ws.append(["007", dt.datetime(2026, 11, 23, 14, 5), "a date cell"])
    ws.append(["007", 46349.586805555556 - 1462, "a plain number: a 1904 serial"])
    wb.save(tmp_path / "mac.xlsx")
    df = bulkimport.read(tmp_path / "mac.xlsx")
    m = Mapping(
        columns={"user.id": "Client", "message.date": "Date", "message.text": "Text"},
        options={"timezone": "Europe/Moscow"},
    )
    (conv,) = bulkimport.plan(df, m).conversations
    want = int(pd.Timestamp("2026-11-23 11:05", tz="UTC").timestamp())
    assert [msg["message"]["date"] for msg in conv.messages] == [want, want]
    assert conv.messages[0]["user"]["id"] == "007"


def test_author_lookup_compares_the_text_form_of_each_value():
    """Authors are matched by their text: True ('TRUE') is not the operator '1', though pandas
    counts True and 1 as one value when factorizing an object column."""
    df = pd.DataFrame(
        {
            "chat": ["c"] * 4,
            "uid": ["u"] * 4,
            "date": [f"2025-01-01 10:00:0{i}" for i in range(4)],
            "text": list("abcd"),
            "author": pd.Series([1, True, 1.0, "true"], dtype=object),
        }
    )
    m = Mapping.from_dict(
        {
            "columns": {"chat.id": "chat", "user.id": "uid", "message.date": "date", "message.text": "text"},
            "options": {"author": "author"},
            "operators": {"1": 5, "TRUE": 9},
        }
    )
    got = prepare(df, m).canonical["message.user_id"].tolist()
    assert got == [5, 9, 5, 9]


@pytest.mark.parametrize("with_ids", [False, True])
def test_lone_surrogates_are_refused_per_row_never_a_crash(with_ids, tmp_path):
    """A DataFrame built in Python (or decoded with surrogateescape) can hold lone surrogates that
    no UTF-8 request can carry: the row is invalid with bad-characters, the others go on, and the
    plan, its ids and the report are built without an encoding error."""
    cols = dict(BASE, **({"message.id": "Mid"} if with_ids else {}))
    df = _df(
        Chat=["c1", "c1", "c\udc80", "c2"],
        Client=["1", "1", "2", "3\ud800"],
        Date=["2026-11-23 10:00", "2026-11-23 10:01", "2026-11-23 10:02", "2026-11-23 10:03"],
        Text=["ok", "bad \udcff text", "fine", "fine"],
        Mid=["m1", "m2", "m3", "m4"],
    )
    p = bulkimport.plan(df, Mapping(columns=cols))
    assert _codes(p.failures) == {3: ["bad-characters"], 4: ["bad-characters"], 5: ["bad-characters"]}
    assert set(p.failures["field"]) == {"message.text", "chat.id", "user.id"}
    assert [c.rows for c in p.conversations] == [(2,)]
    for conv in p.conversations:
        for item in conv.messages:
            str(item).encode("utf-8")  # what is planned can be sent
    assert codes.get("bad-characters").level == "error"
    from bulkimport.reporting import write_report

    for name in ("r.csv", "r.xlsx"):
        write_report(df, tmp_path / name, p)
    assert "\ufffd" in (tmp_path / "r.csv").read_text(encoding="utf-8-sig")
