"""bulkimport.sources.chunked: a big csv/tsv/txt read in chunks gives exactly read()'s frame (#19)."""

from __future__ import annotations

import itertools
import random
import tracemalloc
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bulkimport.errors import ReadError
from bulkimport.sources import chunked, tabular
from bulkimport.sources.chunked import estimated_rows, open_chunks
from bulkimport.sources.tabular import read
from data_examples.generate import big_csv
from tests.drills.hostile import corpus

EXAMPLES = Path(__file__).resolve().parent.parent / "data_examples"
SIZES = (1, 2, 7, 1000)
HEAD = "Chat;Client;Author;Date;Text\n"


def _rows(n: int, start: int = 0) -> str:
    """Message records ``start`` … ``n - 1`` in the HEAD columns, seven to a chat."""
    return "".join(
        f"wa-{i // 7};c{i // 7};Ann;2026-10-01 10:{i % 60:02d};message {i}\n" for i in range(start, n)
    )


#: name → content: every shape read() handles that a chunk boundary could break
CASES: dict[str, str | bytes] = {
    "plain.csv": HEAD + _rows(40),
    "comma.csv": HEAD.replace(";", ",") + _rows(30).replace(";", ","),
    "tabs.tsv": HEAD.replace(";", "\t") + _rows(30).replace(";", "\t"),
    "pipes.txt": HEAD.replace(";", "|") + _rows(30).replace(";", "|"),
    "titles.csv": "Chat history export\nExported 2026-10-02 by admin\n\n" + HEAD + _rows(25),
    "blank_lines.csv": HEAD + _rows(5) + "\n\n;;;;\n" + _rows(12, 5) + "\n" + _rows(20, 12) + "\n\n",
    "totals.csv": HEAD + _rows(20) + "Итого;;;;20\n",
    "two_footer_rows.csv": HEAD + _rows(20) + "Total;20;;;\n;;;;Exported by admin\n",
    "numbers_footer.csv": HEAD + _rows(15) + "20;15;;;\n",
    "five_footer_rows.csv": HEAD + _rows(30) + "".join(f"Total {k};{k};;;\n" for k in range(5)),
    "footer_only_lines.csv": HEAD + _rows(3) + "Итого;3;;;\n",
    "one_row.csv": HEAD + _rows(1),
    "bom.csv": "\ufeff" + HEAD + _rows(12),
    "cp1251.csv": (HEAD.replace("Text", "Текст") + _rows(30).replace("message", "текст")).encode("cp1251"),
    "utf16.csv": (HEAD + _rows(30).replace("message", "сообщение")).encode("utf-16"),
    "quoted.csv": HEAD
    + _rows(6)
    + 'wa-9;c9;Ann;2026-10-01 11:00;"two\nlines; and ""quotes"""\n'
    + _rows(14, 6)
    + 'wa-9;c9;Ann;2026-10-01 11:01;"three\n\nlines"\n'
    + _rows(20, 14),
    "trailing_delimiter.csv": (HEAD + _rows(25)).replace("\n", ";\n"),
    "unnamed_filled_late.csv": (HEAD + _rows(30)).replace("\n", ";\n") + "wa-9;c9;Ann;x;y;late\n",
    "unnamed_middle_empty.csv": "Chat;;Client\n" + "".join(f"wa-{i};;c{i}\n" for i in range(20)),
    "unnamed_middle_filled.csv": "Chat;;Client\n" + "".join(f"wa-{i};{i % 2 or ''};c{i}\n" for i in range(9)),
    "dup_headers.csv": "Chat;Text;Client;Text;Date\n"
    + "".join(f"wa-{i};a{i};c{i};b{i};2026-10-01\n" for i in range(9)),
    "ids.csv": "Chat;Client;Text\n" + "".join(f"00{i};{10**18 + i};NA\n" for i in range(9)) + "null;;\n",
    "crlf.csv": (HEAD + _rows(20) + "\nИтого;20;;;\n").replace("\n", "\r\n"),
    "wide_title.csv": "Export of chats;;;;;;\n" + HEAD + _rows(20),
    "title_no_header_names.csv": "Export\n" + HEAD.replace("Chat", "1") + _rows(5),
    "blank_top.csv": "\n" * 130 + HEAD + _rows(10),
    "header_only.csv": HEAD,
    "header_and_blanks.csv": HEAD + "\n;;;;\n\n",
    "ragged_early.csv": HEAD + _rows(2) + "a;b;c;d;e;f;g\n" + _rows(10, 2),
    "ragged_late.csv": HEAD + _rows(300) + "a;b;c;d;e;f;g\n" + _rows(310, 300),
    "data_not_header.csv": "12345;23.11.2026;+79161234567\n1;2;3\n",
    "whitespace.csv": "  \n\n\t\n",
    "cp1251_head_as_utf8.csv": ("a;b\n" + "".join(f"{i};Привет\n" for i in range(20))).encode("cp1251"),
}


@dataclass(frozen=True)
class Refused:
    """A ReadError's two texts (the Python one and the CLI one)."""

    text: str
    cli: str | None


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except ReadError as exc:
        return Refused(str(exc), exc.cli)


def _chunks(path: Path, rows: int, **kw: Any) -> tuple[pd.DataFrame, Any, list[pd.DataFrame]]:
    ch = open_chunks(path, rows=rows, **kw)
    parts = list(ch)
    return pd.concat(parts), ch, parts


def assert_same_as_read(path: Path, **kw: Any) -> None:
    """For every chunk size: the chunks concatenated are read()'s frame, the attrs are read()'s,
    or both refuse the file with the same error."""
    expected = _outcome(lambda: read(path, **kw))
    for rows, least in itertools.product(SIZES, (1, chunked._MIN_READ)):
        with pytest.MonkeyPatch.context() as mp:  # least 1: the parser asked for `rows` at a time
            mp.setattr(chunked, "_MIN_READ", least)
            got = _outcome(lambda rows=rows: _chunks(path, rows, **kw))
        if isinstance(expected, Refused):
            assert got == expected, f"{path.name} rows={rows}"
            continue
        assert not isinstance(got, Refused), f"{path.name} rows={rows}: {got}"
        df, ch, parts = got
        pd.testing.assert_frame_equal(df, expected, obj=f"{path.name} rows={rows}")
        assert ch.attrs == expected.attrs, path.name
        assert ch.columns == list(expected.columns)
        assert all(len(p) <= max(rows, 5) for p in parts)
        assert all(p.index[0] > q.index[-1] for q, p in pairwise(parts))
        assert all(str(dt) == "str" for dt in df.dtypes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunks_are_read_cut_into_pieces(tmp_path, name):
    p = tmp_path / name
    content = CASES[name]
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    assert_same_as_read(p)


def test_example_and_generated_files(tmp_path):
    assert_same_as_read(EXAMPLES / "history.csv")
    big = big_csv(tmp_path / "big.csv", 400)
    assert_same_as_read(big)
    lines = big.read_text(encoding="utf-8").splitlines(keepends=True)
    body = "".join(lines[:150]) + "\n\n" + "".join(lines[150:300]) + "Итого;299;;;;;;\n;;;;;;;\n"
    (tmp_path / "footer.csv").write_text("Выгрузка чатов\n\n" + body, encoding="utf-8")
    ref = read(tmp_path / "footer.csv")
    assert ref.attrs["footer_rows"] == [{"row": 305, "text": "Итого | 299"}]
    assert ref.attrs["skipped_above_header"] == [{"row": 1, "text": "Выгрузка чатов"}]
    assert_same_as_read(tmp_path / "footer.csv")


def test_hostile_corpus(tmp_path):
    """Every CSV of the hostile-input drill: same frame or same error as read()."""
    files = {n: p for n, p in corpus(tmp_path).items() if n.endswith(".csv")}
    assert len(files) >= 15
    wide = files.pop("wide.csv")  # 5,000 columns: slow per chunk size, one is enough
    for path in files.values():
        assert_same_as_read(path)
    pd.testing.assert_frame_equal(pd.concat(list(open_chunks(wide, rows=3))), read(wide))


def test_arguments_as_read(tmp_path):
    """header_row, encoding and delimiter given: the same frame or the same refusal."""
    p = tmp_path / "h.csv"
    p.write_text("Report\nfrom 2026-10-01\n" + HEAD + _rows(20), encoding="utf-8")
    for kw in ({"header_row": 3}, {"header_row": 1}, {"header_row": 2}, {"header_row": 99}, {"header_row": 0},
               {"delimiter": ";"}, {"delimiter": "tab"}, {"delimiter": ";;"}, {"encoding": "utf-8"},
               {"encoding": "cp1251"}, {"encoding": "no-such-codec"}, {"encoding": "ascii"}):
        assert_same_as_read(p, **kw)
    ru = tmp_path / "ru.csv"
    ru.write_bytes(("a;b\n" + "".join(f"{i};Привет\n" for i in range(20))).encode("cp1251"))
    assert_same_as_read(ru, encoding="utf-8")
    assert_same_as_read(ru, encoding="cp1251")


def test_missing_and_unsupported_files(tmp_path):
    for name, content in (("none.csv", None), ("e.csv", b""), ("x.docx", b"x"), ("h.xls", b"x")):
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        assert _outcome(lambda p=p: open_chunks(p)) == _outcome(lambda p=p: read(p))
    assert _outcome(lambda: open_chunks(tmp_path)) == _outcome(lambda: read(tmp_path))
    xlsx = tmp_path / "h.xlsx"
    xlsx.write_bytes(b"PK\x03\x04")
    with pytest.raises(ReadError, match=r"h.xlsx: an xlsx workbook is read whole"):
        open_chunks(xlsx)
    with pytest.raises(ValueError, match="rows must be"):
        open_chunks(tmp_path / "none.csv", rows=0)


def test_footer_is_decided_with_the_whole_files_statistics(tmp_path):
    """The last rows hold 2 of 5 cells, numbers only: a footer by the whole file's median (5), not
    by the last chunk's own (2) — the chunk alone would keep them."""
    p = tmp_path / "f.csv"
    p.write_text(HEAD + _rows(40) + "".join(f";;;{k};{k}0\n" for k in range(7)), encoding="utf-8")
    ref = read(p)
    assert [e["row"] for e in ref.attrs["footer_rows"]] == list(range(44, 49))
    tail = pd.read_csv(p, sep=";", dtype=str).tail(5)
    assert len(tabular._drop_footer(tail)) == 5  # what the final chunk alone would decide
    assert_same_as_read(p)


def test_date_columns_are_judged_on_the_whole_file(tmp_path):
    """A last row with text only in the date column: not a note, since the column holds dates in
    the whole file, though the last few rows' dates are mostly text."""
    p = tmp_path / "d.csv"
    tail = "wa-1;c1;Ann;see above;\n" * 3 + ";;;see above;\n"
    p.write_text(HEAD + _rows(30) + tail, encoding="utf-8")
    ref = read(p)
    assert ref.attrs["footer_rows"] == [] and len(ref) == 34
    last = ref.tail(5).copy()
    assert len(tabular._drop_footer(last)) == 4  # judged alone, the last rows would lose one
    assert_same_as_read(p)


def test_odd_and_even_median(tmp_path):
    """Rows filling 3 or 5 cells in equal numbers (median 4): rows of 3 below it are footers only
    as read() says."""
    for extra in (0, 1):
        p = tmp_path / f"m{extra}.csv"
        body = "".join(
            f"wa-{i};c{i};Ann;;\n" if i % 2 else f"wa-{i};c{i};Ann;2026-10-01;t{i}\n"
            for i in range(20 + extra)
        )
        p.write_text(HEAD + body + "Total;3;;;\n12;;;;\n", encoding="utf-8")
        assert_same_as_read(p)


def _random_history(rng: random.Random) -> str:
    """A small ';' history with cells left empty at random, blank lines and a random footer."""
    names = ["Chat", "Client", "Author", "Date", "Text", "Files", "Note"][: rng.randint(2, 7)]
    out = [";".join(names)]
    for i in range(rng.randint(1, 60)):
        full = [f"wa-{i % 5}", f"c{i}", "Ann", f"2026-10-{1 + i % 28:02d} 10:00", f"text {i}", "f.jpg", "n"]
        cells = [v if rng.random() > rng.choice((0.05, 0.4, 0.7)) else "" for v in full[: len(names)]]
        out += [""] * (rng.random() < 0.1) + [";".join(cells)]
    footers = ["Итого;{n}", "Total", "{n};{n}", "Exported by admin", ";;see above", "12", ""]
    for _ in range(rng.randint(0, 6)):
        out.append(rng.choice(footers).format(n=rng.randint(1, 99)))
    return "\n".join(out) + "\n"


def test_random_histories(tmp_path):
    """Many random shapes (fill, blank lines, footers): chunks always concatenate to read()."""
    rng = random.Random(19)
    for k in range(40):
        p = tmp_path / f"r{k}.csv"
        p.write_text(_random_history(rng), encoding="utf-8")
        assert_same_as_read(p)


def test_late_ragged_record_is_named_when_reached(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(HEAD + _rows(3000) + "a;b;c;d;e;f\n", encoding="utf-8")
    expected = _outcome(lambda: read(p))
    assert "record 3002 has 6 fields but the header has fewer" in expected.text
    ch = open_chunks(p, rows=500)
    it = iter(ch)
    assert len(next(it)) == 494  # the first chunks come (499 records less 5 held back) …
    with pytest.raises(ReadError) as err:  # … the error with the chunk that has the record
        list(it)
    assert Refused(str(err.value), err.value.cli) == expected


def test_damaged_utf8_after_the_first_megabyte(tmp_path):
    """read()'s message for a UTF-8 file with a few bad bytes late, also when met in a late chunk."""
    body = "a;b\n" + "".join(f"{i};привет мир\n" for i in range(60_000))
    p = tmp_path / "late.csv"
    p.write_bytes(body.encode("utf-8") + "99;Пока\n".encode("cp1251"))
    ch = open_chunks(p, rows=20_000)
    assert ch.attrs["encoding"] == "utf-8"
    with pytest.raises(ReadError, match=r"late.csv: line 60002 has bytes that are not valid UTF-8"):
        list(ch)


@pytest.mark.parametrize(
    "tail",
    [b"wa-2;x;y\nwa-3;\xc0 broken\n", b"wa-3;\xc0 broken\nwa-2;x;y\n"],
    ids=["wide-record-first", "bad-bytes-first"],
)
def test_bad_record_and_bad_bytes_after_the_first_megabyte(tmp_path, tail):
    """As read(): the encoding problem is what is reported, whichever comes first."""
    p = tmp_path / "both.csv"
    p.write_bytes("Чат;Текст\n".encode() + ("wa-1;Привет, как дела?\n" * 40_000).encode() + tail)
    expected = _outcome(lambda: read(p))
    assert isinstance(expected, Refused) and "has bytes that are not valid UTF-8" in expected.text
    assert _outcome(lambda: list(open_chunks(p, rows=10_000))) == expected


def test_ascii_head_with_an_undecodable_tail(tmp_path):
    """As read(): the detector's verdict on the tail (here ascii, which the file is not)."""
    p = tmp_path / "quote.csv"
    p.write_bytes(b"chat;text\n" + b"wa-1;hello\n" * 120_000 + b'wa-2;"open\n\xff\n')
    with pytest.raises(ReadError, match=r"quote.csv: the file is not valid ascii"):
        list(open_chunks(p, rows=50_000))


def test_ascii_head_then_cp1251_gets_reads_error(tmp_path):
    """The first megabyte ASCII, then cp1251: read() detects from the first megabyte and refuses
    the file as not ascii; so does the chunked reader when it meets the bytes, with the same text."""
    p = tmp_path / "mixed.csv"
    tail = ("wa-2;Привет, как дела?\n" * 3000).encode("cp1251")
    p.write_bytes(("chat;text\n" + "wa-1;hello there\n" * 80_000).encode() + tail)
    expected = _outcome(lambda: read(p))
    assert isinstance(expected, Refused) and "not valid ascii (byte 49295)" in expected.text
    assert _outcome(lambda: list(open_chunks(p, rows=30_000))) == expected
    df, _, _ = _chunks(p, 30_000, encoding="cp1251")
    pd.testing.assert_frame_equal(df, read(p, encoding="cp1251"))


def test_utf8_head_then_another_encoding_that_reads_it_is_refused(tmp_path, monkeypatch):
    """The known difference: when detection names an encoding that reads the whole file, read()
    reads it all again in that encoding; chunks already given were UTF-8, so the chunked reader
    refuses the file and names the encoding to pass (the detector is forced here: on real files
    it picks from the first megabyte, which is UTF-8, and such a file ends as above)."""
    p = tmp_path / "mixed.csv"
    p.write_bytes(("chat;text\n" + "wa-1;hello there\n" * 80_000).encode() + "wa-2;Привет\n".encode("cp1251"))
    monkeypatch.setattr(chunked, "_detect_encoding", lambda path, head: "cp1251")
    with pytest.raises(ReadError, match=r"megabyte is UTF-8 but the rest of the file is cp1251.*'cp1251'"):
        list(open_chunks(p, rows=30_000))


def test_head_is_the_first_rows_of_read(tmp_path):
    p = big_csv(tmp_path / "big.csv", 3000)
    ref = read(p)
    ch = open_chunks(p, rows=700)
    for n in (1, 10, 699, 701, 2500, 10_000):
        got = ch.head(n)
        pd.testing.assert_frame_equal(got, ref[:n])
        assert got.attrs == ref.attrs
    totals = tmp_path / "t.csv"
    totals.write_text(HEAD + _rows(8) + "Итого;8;;;\n", encoding="utf-8")
    small = open_chunks(totals)
    assert small.attrs["footer_rows"] == []  # not known before the end is reached
    assert small.head().attrs == read(totals).attrs and len(small.head()) == 8
    assert small.attrs["footer_rows"] == [{"row": 10, "text": "Итого | 8"}]


def test_reader_options_are_parse_csvs(monkeypatch, tmp_path):
    """The chunked parser is asked exactly what tabular._parse_csv asks (plus chunksize)."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(pd, "read_csv", lambda path, **kw: seen.update(kw))
    tabular._parse_csv(tmp_path / "x.csv", ";", "cp1251", 3)
    assert seen == chunked._csv_options(";", "cp1251", 3)


def test_big_file_memory_and_row_numbers(tmp_path):
    """50,000 rows in chunks of 5,000: each chunk at most 5,000 rows, numbers consecutive across
    chunks; iterating holds about two chunks at most (traced peak), a fraction of read()'s."""
    p = big_csv(tmp_path / "big.csv", 50_000)
    ch = open_chunks(p, rows=5_000)
    assert ch.columns[:2] == ["Chat", "Client ID"] and ch.size == p.stat().st_size
    expected_next, count, biggest = 2, 0, 0
    tracemalloc.start()
    try:
        for chunk in ch:
            assert 0 < len(chunk) <= 5_000
            assert chunk.index.tolist() == list(range(expected_next, expected_next + len(chunk)))
            expected_next += len(chunk)
            count += 1
            biggest = max(biggest, int(chunk.memory_usage(deep=True).sum()))
            del chunk
        _, chunked_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = read(p)
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert expected_next == 50_002 and len(whole) == 50_000 and count <= 12
    assert chunked_peak < 2.5 * biggest, (chunked_peak, biggest)
    assert chunked_peak < whole_peak / 3, (chunked_peak, whole_peak)


def test_estimated_rows(tmp_path):
    p = big_csv(tmp_path / "big.csv", 100_000)
    est = estimated_rows(p)
    assert 80_000 <= est <= 120_000, est
    small = tmp_path / "s.csv"
    small.write_text(HEAD + _rows(12), encoding="utf-8")
    assert estimated_rows(small) == 12
    small.write_text(HEAD + _rows(12).rstrip("\n"), encoding="utf-8")
    assert estimated_rows(small) == 12
    with pytest.raises(ReadError, match="no such file"):
        estimated_rows(tmp_path / "none.csv")
