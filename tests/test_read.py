"""bulkimport.sources (tabular): xlsx and csv into text frames with row numbers; one-line ReadErrors."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

import bulkimport
from bulkimport.errors import ReadError
from bulkimport.sources.tabular import read

EXAMPLES = Path(__file__).resolve().parent.parent / "data_examples"


def _xlsx(
    path: Path,
    rows: list[list[object]],
    title: str = "Sheet1",
    epoch1904: bool = False,
    extra_sheets: tuple[str, ...] = (),
) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = title
    if epoch1904:
        wb.epoch = openpyxl.utils.datetime.CALENDAR_MAC_1904
    for r in rows:
        ws.append(r)
    for name in extra_sheets:
        wb.create_sheet(name).append(["other"])
    wb.save(path)
    return path


def test_public_name_reads_whether_module_or_function_was_imported_first(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a\n1\n")
    assert bulkimport.read(p).loc[2, "a"] == "1"  # the submodule is imported above: still callable


# ---------------------------------------------------------------------------------------- xlsx
def test_xlsx_ids_stay_text_and_numbers_lose_the_point_zero(tmp_path):
    p = _xlsx(
        tmp_path / "h.xlsx",
        [
            ["Client ID", "Numeric id", "Long id", "Date", "Text"],
            ["000123", 12345, "1234567890123456789", dt.datetime(2026, 11, 23, 14, 5), "hi"],
            ["007", 42.0, "9223372036854775807", dt.datetime(2026, 11, 23, 14, 6), "again"],
        ],
    )
    df = read(p)
    assert df.index.name == "row" and list(df.index) == [2, 3]
    assert df.loc[2, "Client ID"] == "000123" and df.loc[3, "Client ID"] == "007"
    assert df.loc[2, "Numeric id"] == "12345" and df.loc[3, "Numeric id"] == "42"
    assert df.loc[2, "Long id"] == "1234567890123456789"
    assert df.loc[2, "Date"] == dt.datetime(2026, 11, 23, 14, 5)  # genuine date cells stay datetimes
    assert df.attrs["date1904"] is False and df.attrs["source"] == "h.xlsx"


def test_xlsx_row_numbers_match_the_sheet_with_leading_and_blank_rows(tmp_path):
    p = _xlsx(tmp_path / "h.xlsx", [[], ["A", "B"], ["x", "1"], [None, None], ["y", "2"]])
    df = read(p)
    assert list(df.index) == [3, 5]  # header on row 2, blank row 4 dropped, numbers kept
    assert list(df["A"]) == ["x", "y"]


def test_xlsx_sheet_by_name_and_index_and_unknown_sheet_lists_them(tmp_path):
    p = _xlsx(tmp_path / "h.xlsx", [["A"], ["main"]], title="Chats", extra_sheets=("Notes",))
    assert read(p, sheet="Chats")["A"].tolist() == ["main"]
    # the Notes sheet holds a header and no rows: refused with the file, the sheet and the reason
    with pytest.raises(ReadError, match=r"sheet 'Notes', has no data rows: only the header \(row 1\)"):
        read(p, sheet=1)
    with pytest.raises(ReadError, match="sheet 'Notes', has no data rows"):
        read(p, sheet="notes")  # case-insensitive
    with pytest.raises(ReadError, match=r"no sheet 'Missing'; the sheets are 'Chats', 'Notes'"):
        read(p, sheet="Missing")
    with pytest.raises(ReadError, match="no sheet number 5"):
        read(p, sheet=5)


def test_xlsx_1904_date_system_is_kept_in_attrs(tmp_path):
    p = _xlsx(tmp_path / "mac.xlsx", [["Date"], [dt.datetime(2026, 1, 2, 3, 4)], [45000]], epoch1904=True)
    df = read(p)
    assert df.attrs["date1904"] is True
    assert df.loc[2, "Date"] == dt.datetime(2026, 1, 2, 3, 4)
    assert df.loc[3, "Date"] == "45000"


def test_xlsx_time_cells_become_text(tmp_path):
    p = _xlsx(tmp_path / "t.xlsx", [["Date", "Time"], [dt.date(2026, 11, 23), dt.time(14, 5)]])
    df = read(p)
    assert df.loc[2, "Date"] == dt.datetime(2026, 11, 23) and df.loc[2, "Time"] == "14:05:00"


def test_xlsx_read_by_openpyxl_fallback_gives_same_values(tmp_path):
    from bulkimport.sources.tabular import _calamine_rows, _frame_from_rows, _openpyxl_rows

    p = _xlsx(
        tmp_path / "h.xlsx", [["A", "B", "C"], ["007", 12345, "#N/A"], ["x", 1.5, dt.datetime(2026, 1, 1)]]
    )
    cal = _frame_from_rows(_calamine_rows(p, None)[0][1], "h", 1)
    opx = _frame_from_rows(_openpyxl_rows(p, None)[0][1], "h", 1)
    assert cal.equals(opx)
    assert pd.isna(cal.loc[2, "C"])  # a formula error cell is empty, not the text "#N/A"


def test_calamine_failure_falls_back_to_openpyxl(tmp_path, monkeypatch):
    import bulkimport.sources.tabular as reader

    def refuse(*args, **kwargs):
        raise RuntimeError("calamine cannot read this file")

    monkeypatch.setattr(reader, "_calamine_rows", refuse)
    p = _xlsx(tmp_path / "h.xlsx", [["A"], ["007"]])
    assert read(p).loc[2, "A"] == "007"


def test_example_workbook_reads(tmp_path):
    df = read(EXAMPLES / "history.xlsx")
    assert len(df) >= 500 and df.index[0] == 2
    assert df["Client ID"].str.fullmatch(r"\d+").all()
    assert df["Client ID"].str.startswith("0").any() and df["Client ID"].str.len().eq(19).any()


# ---------------------------------------------------------------------------------------- csv
def test_csv_cp1251_semicolon_with_leading_zeros(tmp_path):
    p = tmp_path / "h.csv"
    p.write_bytes("Клиент;Текст;ID\n007;Привет;1234567890123456789\n0042;Пока;12345\n".encode("cp1251"))
    df = read(p)
    assert df.columns.tolist() == ["Клиент", "Текст", "ID"]
    assert df.loc[2].tolist() == ["007", "Привет", "1234567890123456789"]
    assert df.loc[3, "ID"] == "12345"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-8"])
def test_csv_unicode_encodings_and_bom(tmp_path, encoding):
    p = tmp_path / "h.csv"
    p.write_bytes("Дата,Текст\n23.11.2026,Привет 👋\n".encode(encoding))
    df = read(p)
    assert df.columns.tolist() == ["Дата", "Текст"]
    assert df.loc[2, "Текст"] == "Привет 👋"


def test_csv_multiline_quoted_cells_and_record_numbers(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text('id,text\n1,"first line\nsecond line"\n2,"say ""hi"""\n', encoding="utf-8")
    df = read(p)
    assert list(df.index) == [2, 3]  # record ordinal + 1, not the physical line
    assert df.loc[2, "text"] == "first line\nsecond line" and df.loc[3, "text"] == 'say "hi"'


@pytest.mark.parametrize(
    ("sep", "ext"), [(",", ".csv"), (";", ".csv"), ("\t", ".tsv"), ("\t", ".txt"), ("|", ".txt")]
)
def test_csv_delimiter_sniffing(tmp_path, sep, ext):
    p = tmp_path / f"h{ext}"
    p.write_text(sep.join(["a", "b", "c"]) + "\n" + sep.join(["1", "x, y; z", "3"]) + "\n", encoding="utf-8")
    if sep in ",;":
        p.write_text(
            sep.join(["a", "b", "c"]) + "\n" + sep.join(["1", '"x, y; z"', "3"]) + "\n", encoding="utf-8"
        )
    df = read(p)
    assert df.columns.tolist() == ["a", "b", "c"] and df.loc[2, "b"] == "x, y; z"


def test_csv_explicit_encoding_and_delimiter(tmp_path):
    p = tmp_path / "h.txt"
    p.write_bytes("a;b\n1;Ж\n".encode("cp1251"))
    assert read(p, encoding="cp1251", delimiter=";").loc[2, "b"] == "Ж"


def test_csv_empty_cells_are_missing_and_na_words_are_text(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a,b\n,NA\nnull,\n", encoding="utf-8")
    df = read(p)
    assert pd.isna(df.loc[2, "a"]) and df.loc[2, "b"] == "NA" and df.loc[3, "a"] == "null"


def test_example_csv_reads():
    df = read(EXAMPLES / "history.csv")
    assert len(df) >= 500 and "Чат" in df.columns and df["ID клиента"].str.startswith("0").any()


# ---------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(ReadError, match=r"no such file; check the path"):
        read(tmp_path / "nope.xlsx")


def test_unknown_extension(tmp_path):
    p = tmp_path / "h.docx"
    p.write_text("x")
    with pytest.raises(ReadError, match=r"h.docx: unknown file type '.docx'; use .xlsx, .csv"):
        read(p)


def test_old_xls_is_explained(tmp_path):
    p = tmp_path / "h.xls"
    p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100)
    with pytest.raises(ReadError, match=r"save as \.xlsx"):
        read(p)


def test_empty_files(tmp_path):
    for name in ("e.csv", "e.xlsx"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ReadError, match="empty"):
            read(tmp_path / name)
    (tmp_path / "blank.csv").write_text("\n\n  \n")
    with pytest.raises(ReadError, match="empty"):
        read(tmp_path / "blank.csv")


def test_empty_sheet(tmp_path):
    p = _xlsx(tmp_path / "h.xlsx", [])
    with pytest.raises(ReadError, match="sheet is empty"):
        read(p)


def test_encrypted_workbook(tmp_path):
    p = tmp_path / "secret.xlsx"
    p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    with pytest.raises(
        ReadError, match=r"secret.xlsx: the workbook is password-protected.*remove the password"
    ):
        read(p)


def test_corrupt_workbook(tmp_path):
    p = tmp_path / "bad.xlsx"
    p.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ReadError, match=r"bad.xlsx: not a valid xlsx workbook"):
        read(p)
    z = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("hello.txt", "no workbook here")
    with pytest.raises(ReadError, match=r"broken.xlsx: the workbook is corrupt"):
        read(z)


def test_no_header_row(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("12345,23.11.2026,+79161234567\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ReadError, match=r"row 1 looks like data, not a header row"):
        read(p)
    x = _xlsx(tmp_path / "h.xlsx", [[12345, dt.datetime(2026, 1, 1)], [1, 2]])
    with pytest.raises(ReadError, match="not a header row"):
        read(x)


def test_undecodable_bytes_with_given_encoding(tmp_path):
    p = tmp_path / "h.csv"
    p.write_bytes("a,b\n1,Привет\n".encode("cp1251"))
    with pytest.raises(ReadError, match=r"h.csv: .*not valid utf-8.*encoding="):
        read(p, encoding="utf-8")


def test_binary_file_is_refused(tmp_path):
    p = tmp_path / "h.csv"
    p.write_bytes(b"a,b\n\x00\x01\x02\x00\x00\x00\x00\x00\x00\xff\x00")
    with pytest.raises(ReadError, match=r"binary|encoding"):
        read(p)


def test_unknown_encoding_name(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a\n1\n")
    with pytest.raises(ReadError, match="unknown encoding 'klingon'"):
        read(p, encoding="klingon")


def test_ragged_csv_names_the_record(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a,b\n1,2\n1,2,3,4\n", encoding="utf-8")
    with pytest.raises(ReadError, match=r"h.csv: .*check the delimiter"):
        read(p)


def test_sheet_option_on_csv(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a\n1\n")
    with pytest.raises(ReadError, match="no sheets"):
        read(p, sheet="x")


def test_errors_are_one_line(tmp_path):
    for target in (tmp_path / "x.csv", tmp_path / "y.pdf"):
        if target.suffix == ".pdf":
            target.write_text("x")
        with pytest.raises(ReadError) as info:
            read(target)
        assert "\n" not in str(info.value)


def test_duplicate_and_blank_headers_get_unique_names(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("a,a,,b\n1,2,3,4\n", encoding="utf-8")
    assert read(p).columns.tolist() == ["a", "a.1", "Unnamed: 2", "b"]


def test_a_header_without_data_rows_is_a_one_line_error_naming_the_file(tmp_path):
    """A header-only export (or one whose rows are all blank) is not "0 rows, nothing to do": it is
    refused, naming the file, the header row and that it has no data rows."""
    p = tmp_path / "h.csv"
    p.write_text("Date;Client;Text\n", encoding="utf-8")
    with pytest.raises(ReadError, match=r"^h.csv has no data rows: only the header \(row 1\)"):
        read(p)
    p.write_text("Date;Client;Text\n;;\n\n;;\n", encoding="utf-8")
    with pytest.raises(ReadError, match=r"^h.csv has no data rows"):
        read(p)
    x = _xlsx(tmp_path / "h.xlsx", [["Report"], [None], ["Date", "Client", "Text"], [None] * 3], title="Hist")
    with pytest.raises(ReadError, match=r"^h.xlsx, sheet 'Hist', has no data rows: only the header \(row 3"):
        read(x)
    with pytest.raises(ReadError) as err:
        read(x)
    assert "sheet=" in str(err.value) and "--sheet NAME" in (err.value.cli or "")


def test_csv_utf8_head_with_bad_bytes_after_the_first_megabyte(tmp_path):
    """A file read as UTF-8 on the strength of its first megabyte still gets the full encoding
    checks when the parser meets a bad byte later: the same one-line error as before."""
    body = "a;b\n" + "".join(f"{i};привет мир\n" for i in range(60_000))
    p = tmp_path / "late.csv"
    p.write_bytes(body.encode("utf-8") + "99;Пока\n".encode("cp1251"))
    with pytest.raises(ReadError, match=r"late.csv: line 60002 has bytes that are not valid UTF-8"):
        read(p)
    ok = tmp_path / "ok.csv"
    ok.write_bytes(body.encode("utf-8") + "99;Пока\n".encode())
    df = read(ok)
    assert len(df) == 60_001 and df.loc[60_002, "b"] == "Пока" and df.loc[2, "a"] == "0"


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        # a record with an extra field, then a bad byte: the encoding problem is what is reported
        (b"wa-2;x;y\nwa-3;\xc0 broken\n", r"line 40003 has bytes that are not valid UTF-8"),
        (b"wa-3;\xc0 broken\nwa-2;x;y\n", r"line 40002 has bytes that are not valid UTF-8"),
    ],
)
def test_csv_bad_row_and_bad_bytes_after_the_first_megabyte_report_the_encoding(tmp_path, tail, message):
    """A malformed record AND bad bytes past the first megabyte: the tentative UTF-8 read must not
    turn the parser's complaint into the final error; the full detection runs first, as before."""
    p = tmp_path / "both.csv"
    p.write_bytes("Чат;Текст\n".encode() + ("wa-1;Привет, как дела?\n" * 40_000).encode() + tail)
    with pytest.raises(ReadError, match=message):
        read(p)


def test_csv_unclosed_quote_in_a_utf8_head_file_gets_the_full_path_message(tmp_path):
    """Any failure of the tentative UTF-8 read falls back to detection first: the message is the
    one the full path gives (here the detector's verdict on the non-UTF-8 tail)."""
    p = tmp_path / "quote.csv"
    p.write_bytes(b"chat;text\n" + b"wa-1;hello\n" * 120_000 + b'wa-2;"open\n\xff\n')
    with pytest.raises(ReadError, match=r"quote.csv: the file is not valid ascii"):
        read(p)
