"""Drill: hostile input files never crash or hang the tool; every row is accounted for exactly once.

Every case of :func:`drills.hostile.corpus` goes through ``bulkimport validate`` and ``bulkimport run
--dry-run``: the answer is either a summary with row-level codes (exit 0/1) or one ``Error:`` line with
exit 2 — never a traceback. The default suite drives the CLI in-process (fast); the slow drill runs
every case as a subprocess with a timeout (a hang fails it). Hypothesis then writes random hostile
CSVs and checks read → mapping → plan accounts for every record exactly once, text intact.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from drills.hostile import HEADER, corpus
from drills.kit import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bulkimport
from bulkimport.cli import main
from bulkimport.errors import ReadError

#: Cases that must be refused with one line (and words that line must contain).
REFUSED = {
    "empty.csv": "empty",
    "empty.xlsx": "empty",
    "whitespace.csv": "empty",
    "only_newlines.csv": "empty",
    "junk.xlsx": "xlsx",
    "junk_zip.xlsx": "xlsx",
    "truncated.xlsx": "xlsx",
    "encrypted.xlsx": "password",
    "empty_sheet.xlsx": "empty",
    # a stray NUL in a UTF-8 export: say so and where (not "not valid utf-16-be; pass encoding=")
    "nul_bytes.csv": "nul byte",
    # a header and nothing below it is not "0 rows, exit 0": the file is named and so is the reason
    "header_only.csv": "no data rows",
}
#: Cases that must be read and planned (row-level codes, exit 0 or 1).
PLANNED = {
    "big_cell.csv": 7, "wide.csv": 6, "dates.csv": 15, "emoji_rtl.csv": 5,
    "injection.csv": 6, "semicolon_bom.csv": 6, "utf16.csv": 6, "formulas.xlsx": 7, "merged.xlsx": 6,
    "mixed_types.xlsx": 3, "big_cell.xlsx": 7, "wide.xlsx": 6, "dup_headers.csv": 6,
    # title lines above the header: the header is found on line 3 and the lines above are reported
    "header_third_row.csv": 6,
}

COMMANDS = (["validate"], ["run", "--dry-run"])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus(tmp_path_factory.mktemp("hostile"))


def _check_answer(name: str, code: int, out: str, err: str) -> None:
    """Exit 0/1 with a summary, or exit 2 with exactly one ``Error:`` line; no traceback ever."""
    assert "Traceback" not in out + err, (name, err[-2000:])
    assert code in (0, 1, 2), (name, code, err[-500:])
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, err)
        assert name in lines[0] or "--" in lines[0] or "mapping" in lines[0], (name, lines[0])
        if name in REFUSED:
            assert REFUSED[name] in lines[0].lower().replace(name, ""), (name, lines[0])
    else:
        assert name not in REFUSED, (name, out[-500:])
        assert " rows" in out or "Plan:" in out, (name, out[-500:])
    if name in PLANNED:
        assert code in (0, 1), (name, code, err)
        rows = PLANNED[name]
        assert f"{rows} rows" in out, (name, out[-800:])


def test_corpus_in_process(files):
    """Every case, both commands, through the real click entry point (exceptions surface here)."""
    seen = set()
    for name, path in files.items():
        for cmd in COMMANDS:
            result = CliRunner().invoke(main, [*cmd, str(path)])
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise AssertionError(f"{name} {cmd}: unhandled {result.exception!r}") from result.exception
            _check_answer(name, result.exit_code, result.stdout, result.stderr)
        seen.add(name)
    assert set(REFUSED) | set(PLANNED) <= seen


@pytest.mark.slow
def test_corpus_as_subprocesses_with_timeout(files):
    """The same as a user runs it: a separate process per case and command, 60 s each at most."""
    for name, path in files.items():
        for cmd in COMMANDS:
            proc = subprocess.run(
                [sys.executable, "-m", "bulkimport", *cmd, str(path)], capture_output=True, text=True,
                timeout=60, cwd=ROOT, check=False,
            )
            _check_answer(name, proc.returncode, proc.stdout, proc.stderr)


def test_invalid_row_codes_name_the_problem(files):
    """Hostile rows are refused row by row, with catalogued codes, and the rest of the file goes on."""
    for name in ("dates.csv", "big_cell.csv", "formulas.xlsx", "merged.xlsx", "mixed_types.xlsx"):
        frame = bulkimport.read(files[name])
        p = bulkimport.plan(frame, bulkimport.Mapping.guess(frame))
        assert p.counts["invalid"] >= 1 and p.counts["valid"] >= 1, (name, p.counts)
        codes = set(p.failures.loc[p.failures["level"] == "error", "code"])
        assert codes and all(c.upper() in bulkimport.codes.CATALOGUE for c in codes), (name, codes)


def test_emoji_and_right_to_left_text_survive_unchanged(files):
    frame = bulkimport.read(files["emoji_rtl.csv"])
    p = bulkimport.plan(frame, bulkimport.Mapping.guess(frame))
    texts = {m["message"]["text"] for c in p.conversations for m in c.messages}
    assert "😀👍🏽 family: 👨‍👩‍👧‍👦" in texts and "مرحبا، كيف حالك؟" in texts
    assert "שלום \u202eevil\u202c" in texts
    names = {m["user"].get("name") for c in p.conversations for m in c.messages}
    assert "محمد" in names


def test_one_bad_byte_never_turns_a_utf8_file_into_mojibake(tmp_path):
    """A UTF-8 export with one broken byte must not be decoded as cp1251 as a whole (every Cyrillic
    message would silently become 'РџСЂРёРІРµС‚'): either the text is right or the line is named."""
    path = tmp_path / "history.csv"
    good = "\n".join(f"c1,u1,Анна,m{i},2025-01-02 10:{i:02d},Привет мир {i}" for i in range(40))
    path.write_bytes(f"{','.join(HEADER)}\n{good}\n".encode() + b"c1,u1,Anna,m99,2025-01-02 11:00,bad \xff\n")
    try:
        frame = bulkimport.read(path)
    except ReadError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        assert "line 42" in problem and "UTF-8" in problem, problem
        return
    assert "Привет мир 0" in set(frame["Text"]), frame["Text"].head().tolist()


# ------------------------------------------------------------------------------ hypothesis: read → plan
_hostile_text = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=30),
    st.sampled_from(['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-1+1", "a,b;c|d\te",
                     '"quoted" "twice"',
                     "line\nbreak", "😀👨‍👩‍👧", "مرحبا", "\u202eevil", "NaN", "None", "  "]),
)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[list[str]]]:
    n = draw(st.integers(1, 15))
    rows = []
    for i in range(n):
        chat = draw(st.sampled_from(["a", "b", "c", "", "=1"]))
        date = draw(st.sampled_from(["2025-01-02 10:00", "02.01.2025 10:01", "", "garbage", "1735812240"]))
        user = draw(st.sampled_from(["u1", "u2", ""]))
        rows.append([chat, user, "Ann", f"m{i}", date, draw(_hostile_text)])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    w.writerows(rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    return buf.getvalue().encode(encoding), rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(csv_files())
def test_property_every_record_accounted_exactly_once(tmp_path, data):
    raw, rows = data
    path = tmp_path / "h.csv"
    path.write_bytes(raw)
    frame = bulkimport.read(path)
    # every record is a row, numbered as the spreadsheet shows it (header = 1); nothing merged or lost
    assert len(frame) == len(rows), (len(frame), len(rows))
    assert list(frame["Message ID"]) == [r[3] for r in rows]
    p = bulkimport.plan(frame, bulkimport.Mapping.guess(frame))
    valid = [r for c in p.conversations for r in c.rows]
    invalid = set(p.failures.loc[p.failures["level"] == "error", "row"])
    assert len(valid) == len(set(valid))
    assert not set(valid) & invalid
    assert set(valid) | invalid == set(frame.index)
    by_row = {r: m for c in p.conversations for r, m in zip(c.rows, c.messages, strict=True)}
    for k, record in enumerate(rows):
        rid = frame.index[k]
        if rid in by_row:
            msg = by_row[rid]["message"]
            assert msg["id"] == record[3]
            assert msg["text"].strip() == record[5].strip()
