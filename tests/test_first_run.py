"""#14 "A first run that cannot go wrong", library half: no silent guesses (what a guessed mapping
assumes is said, with a code), authors and their side, an [operators] skeleton, snake_case headers,
and functions short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

import bulkimport
from bulkimport.errors import MappingError
from bulkimport.mapping import Mapping
from bulkimport.validation import assumptions, authors, first_naive_date, validate

ROOT = Path(__file__).resolve().parent.parent


def _df(**cols: list[object]) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return pd.DataFrame(cols, index=pd.RangeIndex(2, 2 + n, name="row"), dtype=object)


def _issue_csv() -> pd.DataFrame:
    """The file of the issue: Chat / Client / Date / Message / Author, operators' rows among them."""
    rows = []
    for c in range(4):
        client = "Anna Smith" if c < 2 else f"Client Number{'ABCD'[c]}"
        rows.append((f"t{c}", client, f"2026-11-2{c} 10:00", "hello", client))
        rows.append((f"t{c}", client, f"2026-11-2{c} 10:05", "how can I help?", "Olga Operator"))
    return _df(
        **{k: [r[i] for r in rows] for i, k in enumerate(["Chat", "Client", "Date", "Message", "Author"])}
    )


def test_a_guess_says_which_header_each_field_came_from():
    m = Mapping.guess(_issue_csv())
    assert m.guessed and m.columns["user.id"] == "Client"
    assert "'Client'" in m.guessed_from["user.id"] and "'client'" in m.guessed_from["user.id"]
    assert "'Author'" in m.guessed_from["option author"]
    assert "user.id           ← 'Client'  (guessed: matches 'client')" in m.describe()
    assert "author column ← 'Author'  (guessed: matches 'author'" in m.describe()
    assert not Mapping(columns={"user.id": "Client"}).guessed


def test_a_guessed_user_id_from_a_name_column_is_a_warning_but_an_id_column_is_not():
    df = _issue_csv()
    m = Mapping.guess(df)
    assert ("user-id-from-name", "user.id", "Client") in m.notes
    found = dict(assumptions(df, m))
    assert "user-id-from-name" in found and "'Client'" in found["user-id-from-name"]
    assert "warning (user-id-from-name): user.id was guessed from a column of names" in m.describe()
    ids = _df(**{"Client ID": ["c-1", "c-2"], "Date": ["2026-01-01 10:00"] * 2, "Text": ["a", "b"]})
    assert Mapping.guess(ids).notes == []
    named_ids = _df(**{"Customer ID": ["Anna", "Bob"], "Date": ["2026-01-01"] * 2, "Text": ["a", "b"]})
    assert Mapping.guess(named_ids).notes == []  # the header says it is an id: the user chose it


def test_naive_dates_on_an_unstated_zone_are_reported_with_the_zone_used():
    df = _issue_csv()
    m = Mapping.guess(df)
    assert not m.timezone_given and m.timezone == "UTC"
    found = dict(assumptions(df, m))
    assert (
        "timezone-not-set" in found
        and "UTC" in found["timezone-not-set"]
        and "row 2" in found["timezone-not-set"]
    )
    assert "time zone: UTC (not stated" in m.describe()
    stated = m.with_options(timezone="Europe/Moscow")
    assert stated.timezone_given and stated.timezone == "Europe/Moscow"
    assert "timezone-not-set" not in dict(assumptions(df, stated))
    assert stated.columns == m.columns and stated.guessed_from == m.guessed_from
    # absolute dates (an offset, unix time): the zone decides nothing, nothing to report
    absolute = _df(
        Chat=["a", "a"], Client=["1", "1"], Date=["2026-01-01T10:00:00+03:00", "1767261600"], Text=["x", "y"]
    )
    plain = Mapping(
        columns={"chat.id": "Chat", "user.id": "Client", "message.date": "Date", "message.text": "Text"}
    )
    assert first_naive_date(absolute, plain) is None
    assert "timezone-not-set" not in dict(assumptions(absolute, plain))
    with pytest.raises(MappingError, match="timezone"):
        m.with_options(timezone="Mars/Olympus")


def test_a_mapping_file_without_a_timezone_round_trips_unstated(tmp_path):
    m = Mapping.guess(_issue_csv())
    path = m.save(tmp_path / "m.toml")
    text = path.read_text(encoding="utf-8")
    assert "# timezone = " in text and "\ntimezone" not in text
    back = Mapping.load(path)
    assert not back.timezone_given and back.columns == m.columns
    stated = Mapping.load(m.with_options(timezone="Asia/Almaty").save(tmp_path / "s.toml"))
    assert stated.timezone_given and stated.timezone == "Asia/Almaty"


def test_one_user_id_with_several_phones_or_emails_is_warned_by_row_listing_them():
    df = _df(
        Chat=["a", "a", "b", "c"],
        Client=["Anna", "Anna", "Anna", "Bob"],
        Phone=["+7 916 123-45-67", "+7 916 123-45-67", "+7 903 000-11-22", "+7 916 555-44-33"],
        Mail=["a@x.org", "A@X.org", "a@x.org", "b@x.org"],
        Date=["2026-01-01 10:00", "2026-01-01 10:01", "2026-01-02 10:00", "2026-01-03 10:00"],
        Text=["1", "2", "3", "4"],
    )
    m = Mapping(
        columns={
            "chat.id": "Chat",
            "user.id": "Client",
            "user.phone": "Phone",
            "user.email": "Mail",
            "message.date": "Date",
            "message.text": "Text",
        },
        options={"timezone": "UTC"},
    )
    f = validate(df, m)
    merged = f[f["code"] == "user-id-merged"]
    assert merged[["row", "field"]].values.tolist() == [[2, "user.phone"], [4, "user.phone"]]
    assert set(merged["value"]) == {"+79161234567, +79030001122"}
    assert set(merged["level"]) == {"warning"}
    # e-mails differing only in case are one address; Bob has one phone: nothing about him
    assert not (f["field"] == "user.email").any() and 5 not in set(f["row"])


def _with_authors() -> tuple[pd.DataFrame, Mapping]:
    df = _issue_csv()
    m = Mapping(
        columns={"chat.id": "Chat", "user.id": "Client", "message.date": "Date", "message.text": "Message"},
        options={"author": "Author", "timezone": "UTC"},
    )
    return df, m


def test_authors_lists_every_author_with_counts_and_side():
    df, m = _with_authors()
    table = authors(df, m)
    olga = table[table["author"] == "Olga Operator"].iloc[0]
    assert (olga.messages, olga.conversations, olga.customers, olga.side) == (4, 4, 3, "customer")
    assert bool(olga.likely_operator)
    anna = table[table["author"] == "Anna Smith"].iloc[0]
    assert (anna.messages, anna.conversations, anna.customers, bool(anna.likely_operator)) == (2, 2, 1, False)
    assert table["author"].tolist()[0] == "Olga Operator"  # most messages first
    mapped = Mapping(columns=m.columns, options=m.options, operators={"olga operator": 7})
    olga = authors(df, mapped).set_index("author").loc["Olga Operator"]
    assert olga.side == "operator" and olga.operator_id == 7 and not olga.likely_operator
    assert authors(df, Mapping(columns=m.columns)).empty


def test_an_unmapped_author_who_writes_to_many_customers_is_a_warning_on_their_first_row():
    df, m = _with_authors()
    f = validate(df, m)
    warned = f[f["code"] == "operator-unmapped"]
    assert warned[["row", "value", "level"]].values.tolist() == [[3, "Olga Operator", "warning"]]
    assert "no-operators" in dict(assumptions(df, m))
    mapped = Mapping(columns=m.columns, options=m.options, operators={"Olga Operator": 7})
    assert "operator-unmapped" not in set(validate(df, mapped)["code"])
    assert "no-operators" not in dict(assumptions(df, mapped))


def test_the_operators_skeleton_is_refused_until_its_placeholders_are_edited(tmp_path):
    df, m = _with_authors()
    path = m.save(tmp_path / "m.toml", authors=authors(df, m))
    text = path.read_text(encoding="utf-8")
    assert (
        '\n"Olga Operator" = 0  # 4 messages, 4 conversations, 3 customers: most likely an operator' in text
    )
    assert '\n# "Anna Smith" = 0  # 2 messages' in text
    with pytest.raises(MappingError, match=r"'Olga Operator' = 0 is the placeholder.*replace 0"):
        Mapping.load(path)
    path.write_text(text.replace('"Olga Operator" = 0', '"Olga Operator" = 12'), encoding="utf-8")
    loaded = Mapping.load(path)
    assert loaded.operators == {"Olga Operator": 12} and loaded.columns == m.columns
    assert "operator-unmapped" not in set(validate(df, loaded)["code"])


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("customer_email", "user.email"),
        ("customer_phone", "user.phone"),
        ("client_phone", "user.phone"),
        ("customerEmail", "user.email"),
        ("user_gender", "user.gender"),
        ("messageText", "message.text"),
    ],
)
def test_snake_and_camel_case_headers_are_guessed(header, field):
    df = _df(**{"Client ID": ["1"], "Date": ["2026-01-01"], header: ["x"]})
    m = Mapping.guess(df)
    assert m.columns.get(field) == header, m.columns
    assert "read as" in m.guessed_from[field] or "matches" in m.guessed_from[field]


def test_an_exact_header_wins_over_a_qualified_one():
    df = _df(**{"Client ID": ["1"], "customer_phone": ["+1"], "Phone": ["+2"], "Date": ["2026-01-01"]})
    assert Mapping.guess(df).columns["user.phone"] == "Phone"


MY_FILES = [
    "bulkimport/validation.py",
    "bulkimport/mapping.py",
    "bulkimport/reporting.py",
    "bulkimport/sources/tabular.py",
]


@pytest.mark.parametrize("name", MY_FILES)
def test_functions_are_at_most_80_lines(name):
    tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long


# ------------------------------------------------------------------ layouts as people save them
def _book(path: Path, sheets: dict[str, list[list[object]]], edit=None) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for r in rows:
            ws.append(r)
        if edit is not None:
            edit(ws)
    wb.save(path)
    return path


HEADER = ["Chat", "Client ID", "Date", "Text"]
BODY = [["c1", "u1", "2026-01-01 10:00", "hi"], ["c1", "u1", "2026-01-01 10:01", "there"]]


def test_the_header_below_a_merged_title_and_blank_rows_is_found_and_the_title_reported(tmp_path):
    from bulkimport import read

    p = _book(
        tmp_path / "h.xlsx",
        {"S": [["Chat history, exported 2026-01-05"], [], ["by CRM", "v2"], [], HEADER, *BODY]},
        edit=lambda ws: ws.merge_cells("A1:D1"),
    )
    df = read(p)
    assert df.columns.tolist() == HEADER and df.index.tolist() == [6, 7]  # rows as the sheet shows them
    assert df.attrs["skipped_above_header"] == [
        {"row": 1, "text": "Chat history, exported 2026-01-05"},
        {"row": 3, "text": "by CRM | v2"},
    ]
    # a two-cell note above a four-column table is not its header; given explicitly, it is
    q = _book(tmp_path / "q.xlsx", {"S": [["Chat", "Notes"], ["x", "y"], HEADER, *BODY]})
    found = read(q)
    assert found.columns.tolist() == HEADER and found.index.tolist() == [4, 5]
    assert [e["row"] for e in found.attrs["skipped_above_header"]] == [1, 2]
    forced = read(q, header_row=1)
    assert forced.columns.tolist()[:2] == ["Chat", "Notes"] and forced.index.tolist()[:2] == [2, 3]
    assert forced.attrs["skipped_above_header"] == []


def test_a_csv_header_below_title_lines_is_read_from_its_line(tmp_path):
    from bulkimport import read

    p = tmp_path / "h.csv"
    p.write_text(
        "Chat export\nexported 2025-01-01,,,\n"
        + ",".join(HEADER)
        + "\n"
        + "\n".join(",".join(r) for r in BODY)
        + "\n",
        encoding="utf-8",
    )
    df = read(p)
    assert df.columns.tolist() == HEADER and df.index.tolist() == [4, 5]
    assert [e["row"] for e in df.attrs["skipped_above_header"]] == [1, 2]
    assert df.attrs["skipped_above_header"][0]["text"] == "Chat export"
    assert df.attrs["encoding"] == "utf-8" and df.attrs["delimiter"] == ","
    assert read(p, header_row=3).index.tolist() == [4, 5]
    semi = tmp_path / "s.csv"
    semi.write_bytes("Чат;Текст\n1;привет\n".encode("cp1251"))
    got = read(semi, encoding="cp1251")
    assert (got.attrs["encoding"], got.attrs["delimiter"]) == ("cp1251", ";")
    bom = tmp_path / "b.csv"
    bom.write_text("Чат\tТекст\n1\tпривет\n", encoding="utf-8-sig")
    assert (read(bom).attrs["encoding"], read(bom).attrs["delimiter"]) == ("utf-8-sig", "\t")


def test_a_csv_record_wider_than_the_header_is_still_refused(tmp_path):
    from bulkimport import ReadError, read

    p = tmp_path / "h.csv"
    p.write_text("a,b\n1,2\n3,4\n5,6\n7,8,9,10\n", encoding="utf-8")
    with pytest.raises(ReadError, match="check the delimiter"):
        read(p)


def test_totals_and_footer_rows_are_reported_not_imported(tmp_path):
    from bulkimport import read

    rows = [HEADER, *BODY, ["Итого", None, None, "2 сообщения"], [None, None, None, "2"]]
    df = read(_book(tmp_path / "h.xlsx", {"S": rows}))
    assert df.index.tolist() == [2, 3]
    assert df.attrs["footer_rows"] == [{"row": 4, "text": "Итого | 2 сообщения"}, {"row": 5, "text": "2"}]
    p = tmp_path / "h.csv"
    p.write_text(
        ",".join(HEADER) + "\n" + "\n".join(",".join(r) for r in BODY) + "\nTotal,,,2\n", encoding="utf-8"
    )
    csv_df = read(p)
    assert csv_df.index.tolist() == [2, 3] and csv_df.attrs["footer_rows"][0]["row"] == 4
    # a full last row that happens to start with a totals word is a message, not a footer
    q = tmp_path / "q.csv"
    q.write_text("Text,Chat,Date\nhi,c1,2026-01-01\nTotal: thanks,c1,2026-01-02\n", encoding="utf-8")
    assert read(q).index.tolist() == [2, 3] and read(q).attrs["footer_rows"] == []


def test_several_sheets_or_all_keep_a_position_that_names_the_sheet(tmp_path):
    from bulkimport import plan, read

    p = _book(
        tmp_path / "h.xlsx",
        {
            "Jan": [HEADER, *BODY],
            "Notes": [],
            "Feb": [["February"], HEADER, ["c2", "u2", "2026-02-01 10:00", "again"]],
        },
    )
    df = read(p, sheet=["Jan", "feb"])
    assert df.index.tolist() == ["Jan!2", "Jan!3", "Feb!3"] and df.index.name == "row"
    assert df.attrs["sheets"] == ["Jan", "Feb"]
    assert df.attrs["skipped_above_header"] == [{"row": 1, "text": "February", "sheet": "Feb"}]
    every = read(p, sheet="*")  # the empty sheet is passed over
    assert every.index.tolist() == df.index.tolist() and every.attrs["sheets"] == ["Jan", "Feb"]
    m = Mapping.guess(every).with_options(timezone="UTC")
    pl = plan(every, m)
    assert pl.counts["valid"] == 3 and sorted(r for c in pl.conversations for r in c.rows) == sorted(df.index)
    assert read(p, sheet=["Feb"]).index.tolist() == [3]  # one sheet: plain row numbers


def test_unused_columns_are_listed():
    df = _df(
        **{
            "Chat": ["c"],
            "Client ID": ["u"],
            "Date": ["2026-01-01"],
            "Text": ["x"],
            "Agent mood": ["ok"],
            "Notes": ["n"],
        }
    )
    assert Mapping.guess(df).unused_columns(df) == ["Agent mood", "Notes"]


def test_formula_cells_without_a_value_keep_their_text_and_are_warned(tmp_path):
    from bulkimport import read, validate

    rows = [HEADER, *BODY, ["c1", "u1", "2026-01-01 10:02", '=CONCAT("he","llo")']]
    df = read(_book(tmp_path / "h.xlsx", {"S": rows}))  # openpyxl writes formulas without values
    assert df.loc[4, "Text"] == '=CONCAT("he","llo")'
    assert df.attrs["formula_cells"] == {4: {"Text": '=CONCAT("he","llo")'}}
    f = validate(df, Mapping.guess(df).with_options(timezone="UTC"))
    assert "missing-content" not in set(f["code"])
    w = f[f["code"] == "formula-without-value"]
    assert w[["row", "field", "value", "level"]].values.tolist() == [
        [4, "Text", '=CONCAT("he","llo")', "warning"]
    ]


def test_several_sheets_go_to_a_sandbox_and_come_back_by_sheet_and_row(tmp_path):
    """End to end on the sandbox: rows named "<sheet>!<row>" are sent once, journalled, reported
    (row column, runs block) and listed by status_rows under the same names."""
    import openpyxl

    import bulkimport
    from bulkimport import connector
    from bulkimport.journal import Journal
    from bulkimport.reporting import status_rows

    rows = [["Chat", "Client ID", "Date", "Text"]]
    p = _book(
        tmp_path / "h.xlsx",
        {
            "Jan": [*rows, ["c1", "u1", "2026-01-01 10:00", "one"], ["c1", "u1", "2026-01-01 10:01", "two"]],
            "Feb": [
                ["Exported by CRM"],
                *rows,
                ["c2", "u2", "2026-02-01 10:00", "three"],
                ["c2", "u2", "bad date", "four"],
                ["Итого", None, None, "4"],
            ],
        },
    )
    df = bulkimport.read(p, sheet="*")
    plan = bulkimport.plan(df, Mapping.guess(df).with_options(timezone="Europe/Moscow"))
    with bulkimport.Sandbox(time_scale=200.0) as sandbox:
        target = connector.sandbox_target(sandbox)
        connector.setup(target.client, target.line, "bulkimport")
        out = bulkimport.send(
            plan,
            portal=target.portal,
            line=target.line,
            connector="bulkimport",
            client=target.client,
            clock=target.clock,
            state=tmp_path / "j.db",
            progress=False,
        )
        stored = sandbox.store.messages()
    assert out["import_status"].to_dict() == {
        "Jan!2": "sent",
        "Jan!3": "sent",
        "Feb!3": "sent",
        "Feb!4": "invalid",
    }
    assert sorted(stored["text"]) == ["one", "three", "two"]
    report = bulkimport.write_report(
        out, tmp_path / "r.xlsx", plan=plan, summary={"journal": str(tmp_path / "j.db")}
    )
    wb = openpyxl.load_workbook(report)
    assert [r[0].value for r in wb["rows"].iter_rows(min_row=2)] == ["Jan!2", "Jan!3", "Feb!3", "Feb!4"]
    summary = [r[0].value for r in wb["summary"].iter_rows()]
    assert "Runs of this journal" in summary
    journal = Journal.open(tmp_path / "j.db")
    try:
        listed = status_rows(journal, ["invalid", "sent"], plan=plan)
    finally:
        journal.close()
    assert listed["row"].tolist() == ["Feb!3", "Feb!4", "Jan!2", "Jan!3"]
    assert listed.set_index("row").loc["Jan!2", "time"] == "2026-01-01 10:00:00"


# ------------------------------------------------------------------ found by the new-user trial
def test_a_year_first_date_is_never_read_day_first():
    """2024-05-06 7:00 PM beside 06.05.2024 (a day-first column) is 6 May, not 5 June."""
    from bulkimport.values import parse_dates

    s = pd.Series(["2024-05-06 7:00 PM", "06.05.2024 7:10 PM", "2024-05-07T08:00:00"], dtype="str")
    for dayfirst in (None, True):
        got = pd.to_datetime(parse_dates(s, timezone="UTC", dayfirst=dayfirst).seconds, unit="s")
        assert [d.strftime("%m-%d %H:%M") for d in got] == ["05-06 19:00", "05-06 19:10", "05-07 08:00"]


def test_a_delimiter_of_more_than_one_character_is_a_one_line_error(tmp_path):
    from bulkimport.errors import ReadError
    from bulkimport.sources import read

    path = tmp_path / "x.csv"
    path.write_text("a;b\n1;2\n", encoding="utf-8")
    with pytest.raises(ReadError, match=r"delimiter 'xx' is not one character") as err:
        read(path, delimiter="xx")
    assert "delimiter=';'" in str(err.value) and "--" not in str(err.value)  # the Python wording
    assert "--delimiter 'xx' is not one character" in (err.value.cli or "")  # what the CLI prints


def test_reading_one_sheet_of_several_says_which_were_left(tmp_path):
    import openpyxl
    from click.testing import CliRunner

    from bulkimport.cli import main

    path = tmp_path / "two.xlsx"
    wb = openpyxl.Workbook()
    wb.active.title = "Jan"
    wb.active.append(["Chat", "Client", "Date", "Message"])
    wb.active.append(["c1", "u1", "2024-01-02 10:00", "hello"])
    feb = wb.create_sheet("Feb")
    feb.append(["Chat", "Client", "Date", "Message"])
    feb.append(["c2", "u2", "2024-02-02 10:00", "again"])
    wb.save(path)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert "the workbook has 2 sheets; read 'Jan', not 'Feb'" in result.output, result.output
    every = CliRunner().invoke(main, ["validate", str(path), "--sheet", "*"])
    assert "not 'Feb'" not in every.output and "2 rows" in every.output, every.output


# ------------------------------------------------------------------ second new-user trial
def _helpdesk(side: str = "Agent?", yes: str = "yes", no: str = "no", author: bool = False) -> pd.DataFrame:
    """A helpdesk export: a ticket column, the customer's e-mail on every row, a yes/no side column."""
    rows = [
        ("T-1", "ann@example.com", no, "2024-03-01 09:00", "my order is late", "Ann"),
        ("T-1", "ann@example.com", yes, "2024-03-01 09:05", "checking it now", "Olga"),
        ("T-2", "bob@example.com", no, "2024-03-02 10:00", "reset my password?", "Bob"),
        ("T-2", "bob@example.com", yes, "2024-03-02 10:03", "use the link", "Olga"),
    ]
    cols = ["Ticket", "Customer email", side, "Created", "Body", "Author"]
    data = {k: [r[i] for r in rows] for i, k in enumerate(cols)}
    if not author:
        del data["Author"]
    return _df(**data)


@pytest.mark.parametrize(
    ("header", "yes", "no"),
    [
        ("Agent?", "yes", "no"),
        ("Is agent", "TRUE", "FALSE"),
        ("From operator", "1", "0"),
        ("Direction", "out", "in"),
        ("Sender type", "agent", "customer"),
        ("Is customer", "no", "yes"),  # the header says what "yes" means
    ],
)
def test_a_side_column_is_guessed_and_decides_who_wrote_each_row(header, yes, no):
    df = _helpdesk(header, yes, no)
    m = Mapping.guess(df)
    assert m.options["side"] == header
    assert m.options["operator_values"] == [yes] and m.options["customer_values"] == [no]
    assert m.columns["chat.id"] == "Ticket" and m.columns["user.id"] == "Customer email"
    found = dict(assumptions(df, m))
    assert f"Rows whose {header!r} is {yes!r} are sent as the operator's replies" in found["side-from-column"]
    assert f"side column ← {header!r} ({yes!r} = operator, {no!r} = customer)" in m.describe()
    system = m.with_options(unmapped_operators="system")
    plan = bulkimport.plan(df, system)
    ops = {
        r: msg["message"].get("user_id")
        for c in plan.conversations
        for r, msg in zip(c.rows, c.messages, strict=True)
    }
    assert ops == {2: None, 3: 0, 4: None, 5: 0}  # the replies go as the operator's, not the customer's


def test_side_column_operator_rows_take_the_employee_of_their_author_and_unmapped_ones_are_refused(tmp_path):
    from bulkimport.errors import InputError
    from bulkimport.job import ImportJob

    df = _helpdesk(author=True)
    m = Mapping.guess(df)
    assert m.options["side"] == "Agent?" and m.options["author"] == "Author"
    table = authors(df, m)
    olga = table[table["author"] == "Olga"].iloc[0]
    assert olga.side == "operator"  # the side column says so, without [operators]
    path = tmp_path / "helpdesk.csv"
    df.to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        ImportJob(path).plan()
    assert "'Olga' (2 rows)" in str(err.value) and "unmapped_operators=\"system\"" in str(err.value)
    assert "--operator 'Olga=<employee id>'" in (err.value.cli or "")
    assert "--unmapped-operators system" in (err.value.cli or "")
    plan = ImportJob(path, operators={"Olga": 7}).plan()
    ops = [msg["message"].get("user_id") for c in plan.conversations for msg in c.messages]
    assert ops == [None, 7, None, 7]


def test_a_side_value_of_neither_side_is_an_invalid_row_and_a_saved_mapping_keeps_the_side(tmp_path):
    df = _helpdesk()
    df.loc[4, "Agent?"] = "maybe"
    m = Mapping.guess(_helpdesk())
    failures = validate(df, m.with_options(unmapped_operators="system"))
    bad = failures[failures["code"] == "bad-side"]
    assert list(bad["row"]) == [4] and list(bad["value"]) == ["maybe"] and set(bad["level"]) == {"error"}
    saved = Mapping.load(m.save(tmp_path / "m.toml"))
    assert saved.options["side"] == "Agent?"
    assert (saved.options["operator_values"], saved.options["customer_values"]) == (["yes"], ["no"])
    assert not saved.guessed and "side-from-column" not in dict(saved.warnings())
    # no author column: the file says how to give the replies an employee; uncommented, it works
    text = (tmp_path / "m.toml").read_text(encoding="utf-8")
    assert '# [constants]\n# "message.user_id" = 12\n' in text
    (tmp_path / "m.toml").write_text(text.replace("# [constants]\n# ", "[constants]\n"), encoding="utf-8")
    plan = bulkimport.plan(_helpdesk(), Mapping.load(tmp_path / "m.toml"))
    ops = [m["message"].get("user_id") for c in plan.conversations for m in c.messages]
    assert ops == [None, 12, None, 12]


def test_a_header_that_names_people_is_not_a_side_column():
    people = _df(Agent=["Olga", None], Client=["1", "0"], Date=["2024-01-01 10:00"] * 2, Text=["a", "b"])
    m = Mapping.guess(people)
    assert "side" not in {k for k, v in m.options.items() if v is not None}
    assert m.options["author"] == "Agent" and m.columns["user.id"] == "Client"


def test_an_agent_writing_to_two_customers_is_a_likely_operator():
    df = _df(
        Chat=["c1", "c1", "c2", "c2"],
        Client=["1", "1", "2", "2"],
        Date=["2024-01-01 10:00", "2024-01-01 10:01", "2024-01-02 10:00", "2024-01-02 10:01"],
        Text=["hi", "hello", "hey", "hello"],
        Author=["Ann", "Olga", "Bob", "Olga"],
    )
    table = authors(df, Mapping.guess(df)).set_index("author")
    assert bool(table.loc["Olga", "likely_operator"])
    assert not table.loc[["Ann", "Bob"], "likely_operator"].any()


@pytest.mark.parametrize(
    "header", ["Ticket", "Ticket ID", "Case", "Thread", "Conversation", "Dialog", "Ticket #"]
)
def test_ticket_case_thread_and_dialog_headers_are_the_chat_id(header):
    df = _df(**{header: ["1", "2"], "Client ID": ["a", "b"], "Date": ["2024-01-01"] * 2, "Text": ["x", "y"]})
    m = Mapping.guess(df)
    assert m.columns["chat.id"] == header
    assert "(same as user.id)" not in m.describe()


def test_a_russian_crm_export_is_guessed_whole():
    """№ обращения = chat.id, Телефон клиента = the phone (and the customer id: Клиент holds names),
    Направление входящее/исходящее = the side, Сотрудник = the author, Дата + Время = the date."""
    df = _df(**{
        "№ обращения": ["1001", "1001"], "Клиент": ["Иванов Иван", "Иванов Иван"],
        "Телефон клиента": ["+7 916 123-45-67"] * 2, "Дата": ["01.03.2024"] * 2, "Время": ["09:00", "09:04"],
        "Направление": ["входящее", "исходящее"], "Сотрудник": [None, "Ольга Петрова"],
        "Текст сообщения": ["Здравствуйте", "Добрый день"],
    })
    m = Mapping.guess(df)
    assert m.columns["chat.id"] == "№ обращения" and m.columns["user.phone"] == "Телефон клиента"
    assert m.columns["user.id"] == "Телефон клиента" and m.columns["user.name"] == "Клиент"
    assert m.columns["message.date"] == ["Дата", "Время"] and m.columns["message.text"] == "Текст сообщения"
    assert (m.options["side"], m.options["operator_values"]) == ("Направление", ["исходящее"])
    assert m.options["author"] == "Сотрудник"
    assert "no-operators" not in dict(m.warnings())  # the side column says who is an operator
    assert m.unused_columns(df) == []


def test_helpdesk_headers_people_write():
    df = _df(**{
        "Case Number": ["5001"], "Contact Email": ["a@x.com"], "Is Agent": ["False"],
        "Created Date": ["2024-05-06 19:00"], "Message Body": ["Need help"], "Agent Name": [None],
    })
    m = Mapping.guess(df)
    assert m.columns == {
        "chat.id": "Case Number", "user.id": "Contact Email", "user.email": "Contact Email",
        "message.date": "Created Date", "message.text": "Message Body",
    }
    assert m.options["author"] == "Agent Name" and m.options["side"] == "Is Agent"


def test_a_zendesk_like_export_author_type_end_user_agent_and_requester_email():
    df = _df(**{
        "Ticket ID": ["101", "101"], "Requester email": ["x@y.com"] * 2,
        "Author type": ["end-user", "agent"],
        "Created at": ["2024-06-01T10:00:00Z", "2024-06-01T10:30:00Z"],
        "Comment body": ["broken", "try again"],
    })
    m = Mapping.guess(df)
    assert m.columns["user.id"] == m.columns["user.email"] == "Requester email"
    assert (m.options["side"], m.options["operator_values"], m.options["customer_values"]) == (
        "Author type", ["agent"], ["end-user"]
    )
