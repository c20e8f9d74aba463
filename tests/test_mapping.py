"""Mapping: TOML files (load/save), header guessing in English and Russian, errors that list what exists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import bulkimport
from bulkimport.errors import MappingError
from bulkimport.mapping import FIELDS, OPTIONS, Mapping

EXAMPLES = Path(__file__).resolve().parent.parent / "data_examples"


def _frame(columns: list[str], rows: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        {c: [f"{c}{i}" for i in range(rows)] for c in columns}, index=pd.RangeIndex(2, 2 + rows, name="row")
    )


def test_fields_are_the_contract():
    assert FIELDS == (
        "chat.id",
        "chat.name",
        "chat.url",
        "user.id",
        "user.name",
        "user.last_name",
        "user.email",
        "user.phone",
        "user.picture",
        "user.url",
        "user.gender",
        "message.id",
        "message.date",
        "message.text",
        "message.files",
        "message.user_id",
    )
    assert bulkimport.Mapping is Mapping


def test_load_full_file_with_defaults(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text(
        """
[columns]
"user.id" = "Client ID"
"message.date" = ["Date", "Time"]
"message.text" = "Message"
[constants]
"chat.name" = "Old WhatsApp"
[options]
timezone = "Europe/Moscow"
dayfirst = true
author = "Author"
files_base_url = "https://files.example.com/export"
files_folder = "C:/export/files"
[operators]
"Anna Petrova" = 12
""",
        encoding="utf-8",
    )
    m = Mapping.load(p)
    assert m.columns["message.date"] == ["Date", "Time"]
    assert m.constants == {"chat.name": "Old WhatsApp"}
    assert m.options["disable_crm"] is True and m.options["skip_phone_validate"] is False
    assert m.options["phone_region"] == "RU" and m.options["timezone"] == "Europe/Moscow"
    assert m.operators == {"Anna Petrova": 12}
    assert m.source == "m.toml" and m.missing_required() == []


def test_save_and_load_round_trip(tmp_path):
    m = Mapping(
        columns={"user.id": "Клиент", "message.date": ["Дата", "Время"], "message.text": "Текст"},
        constants={"chat.name": "Архив"},
        options={"timezone": "Europe/Moscow", "author": "Автор"},
        operators={"Анна": 5},
    )
    p = m.save(tmp_path / "m.toml")
    back = Mapping.load(p)
    assert (back.columns, back.constants, back.options, back.operators) == (
        m.columns,
        m.constants,
        m.options,
        m.operators,
    )


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            '[colums]\n"user.id" = "A"\n',
            r"unknown section\(s\) 'colums'; the sections are 'columns', 'constants'",
        ),
        (
            '[columns]\n"user.idd" = "A"\n',
            r"unknown field\(s\) 'user.idd' in \[columns\] \(did you mean 'user.id'\?\)",
        ),
        (
            '[options]\ntimezon = "UTC"\n',
            r"unknown option\(s\) 'timezon' in \[options\]; the options are 'timezone'",
        ),
        ('[options]\ntimezone = "Mars/Olympus"\n', r"not a known time zone"),
        ('[options]\ndayfirst = "yes"\n', r"option dayfirst must be true or false"),
        ('[options]\nphone_region = "XX"\n', r"phone_region 'XX' is not a known region"),
        ('[options]\nfiles_base_url = "ftp://x"\n', r"must start with http"),
        (
            '[options]\nauthor = "A"\n[operators]\n"Anna" = "twelve"\n',
            r"\[operators\] 'Anna' must be a Bitrix24 employee id",
        ),
        ('[columns]\n"user.id" = 5\n', r"must name a column"),
        ('[columns]\n"message.date" = ["a", "b", "c"]\n', r"one column or two"),
        ('[constants]\n"chat.name" = ""\n', r"must be non-empty text"),
        (
            '[columns]\n"chat.name" = "A"\n[constants]\n"chat.name" = "B"\n',
            r"both in \[columns\] and \[constants\]",
        ),
        ("[columns\n", r"not valid TOML"),
        ('[operators]\n"Anna" = 3\n', r"\[operators\] needs the column that names each row's author"),
    ],
)
def test_file_errors_name_the_problem_and_what_exists(tmp_path, text, pattern):
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match=pattern) as info:
        Mapping.load(p)
    assert str(info.value).startswith("bad.toml") and "\n" not in str(info.value)


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match="does not exist"):
        Mapping.load(tmp_path / "none.toml")


def test_check_lists_existing_columns_and_suggests():
    m = Mapping(
        columns={"user.id": "Client Id", "message.date": "Date", "message.text": "Text"}, source="m.toml"
    )
    df = _frame(["Client ID", "Date", "Text"])
    with pytest.raises(
        MappingError,
        match=r"column 'Client Id' for user.id is not in the data \(did you mean "
        r"'Client ID'\?\); the columns are 'Client ID', 'Date', 'Text'",
    ):
        m.check(df)


def test_check_author_column_must_exist():
    m = Mapping(columns={"user.id": "A", "message.date": "B", "message.text": "C"}, options={"author": "Who"})
    with pytest.raises(MappingError, match="column 'Who' for option author"):
        m.check(_frame(["A", "B", "C"]))


def test_required_fields_named_with_how_to_map():
    m = Mapping(columns={"message.text": "Text"}, source="m.toml")
    assert m.missing_required() == ["user.id", "message.date"]
    with pytest.raises(
        MappingError,
        match=r"^m.toml: required field\(s\) user.id, message.date not mapped; add e.g. "
        r'"user.id" = "<column>" under \[columns\] of the mapping file',
    ):
        m.check(_frame(["Text", "Other"]))
    # a guess names the input, never "guess:"; the CLI wording has the command that writes it
    guess = Mapping(columns={"message.text": "Text"}, source="guess")
    frame = _frame(["Text", "Other"])
    frame.attrs["source"] = "h.csv"
    with pytest.raises(MappingError) as err:
        guess.check(frame)
    lib, cli = str(err.value), err.value.cli or ""
    head = "h.csv: no column header was recognised as the required field(s) user.id, message.date;"
    assert lib.startswith(head)
    assert "Mapping.guess(df).save(path)" in lib and "guess:" not in lib + cli
    assert "bulkimport mapping h.csv --save mapping.toml" in cli and "--mapping mapping.toml" in cli
    assert "Mapping." not in cli
    assert Mapping(columns={"user.id": "a", "message.date": "b"}).missing_required() == [
        "message.text or message.files"
    ]
    assert (
        Mapping(
            columns={"message.date": "b", "message.files": "f"}, constants={"user.id": "1"}
        ).missing_required()
        == []
    )


def test_guess_english_headers():
    df = _frame(
        ["chat_id", "Client ID", "Client name", "E-mail", "Phone", "date", "text", "Attachments", "author"]
    )
    m = Mapping.guess(df)
    assert m.columns == {
        "chat.id": "chat_id",
        "user.id": "Client ID",
        "user.name": "Client name",
        "user.email": "E-mail",
        "user.phone": "Phone",
        "message.date": "date",
        "message.text": "text",
        "message.files": "Attachments",
    }
    assert m.options["author"] == "author" and m.missing_required() == []


def test_guess_russian_headers_with_separate_date_and_time():
    df = _frame(["Чат", "Клиент", "Телефон", "Дата", "Время", "Сообщение", "Оператор", "Вложения"])
    m = Mapping.guess(df)
    assert m.columns["chat.id"] == "Чат" and m.columns["user.id"] == "Клиент"
    assert m.columns["message.date"] == ["Дата", "Время"]
    assert m.columns["message.text"] == "Сообщение" and m.columns["message.files"] == "Вложения"
    assert m.columns["user.phone"] == "Телефон" and m.options["author"] == "Оператор"


def test_guess_prefers_specific_id_header_and_uses_generic_for_name():
    m = Mapping.guess(_frame(["Клиент", "ID клиента", "Текст", "Дата"]))
    assert m.columns["user.id"] == "ID клиента" and m.columns["user.name"] == "Клиент"


def test_guess_numeric_operator_column_is_message_user_id():
    df = pd.DataFrame(
        {"Client": ["1", "2"], "Date": ["x", "y"], "Text": ["a", "b"], "Operator": ["12", None]}
    )
    m = Mapping.guess(df)
    assert m.columns["message.user_id"] == "Operator" and "author" not in {
        k for k, v in m.options.items() if v is not None
    }


def test_guess_refuses_to_plan_without_required_fields():
    df = _frame(["Foo", "Bar"])
    m = Mapping.guess(df)
    assert set(m.missing_required()) == {"user.id", "message.date", "message.text or message.files"}
    with pytest.raises(MappingError, match="required field"):
        bulkimport.plan(df)


def test_describe_shows_field_arrow_column_and_missing():
    m = Mapping.guess(_frame(["Клиент", "Текст"]))
    text = str(m)
    assert "user.id           ← 'Клиент'" in text and "MISSING (required): message.date" in text
    assert "chat.id           ← (same as user.id)" in text


def test_options_table_documents_defaults():
    assert OPTIONS["disable_crm"][0] is True and OPTIONS["skip_phone_validate"][0] is False


def test_example_mappings_load_and_fit_their_files():
    for data, mp in (("history.xlsx", "history_xlsx.toml"), ("history.csv", "history_csv.toml")):
        df = bulkimport.read(EXAMPLES / data)
        m = Mapping.load(EXAMPLES / mp)
        m.check(df)
        assert m.operators and m.options["author"]
