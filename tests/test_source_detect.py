"""Detection of the input kind by content, and load() for every kind (tabular files unchanged)."""

from __future__ import annotations

import shutil
import zipfile

import pytest

import bulkimport
from bulkimport.errors import ReadError
from bulkimport.sources import detect, load
from tests.source_helpers import ROOT

EX = ROOT / "data_examples"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (EX / "history.xlsx", "xlsx"),
        (EX / "history.csv", "csv"),
        (EX / "telegram", "telegram"),
        (EX / "telegram" / "result.json", "telegram"),
        (EX / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt", "whatsapp"),
        (EX / "whatsapp" / "WhatsApp Chat - Lena Fischer.zip", "whatsapp"),
    ],
)
def test_examples_are_detected(path, kind):
    assert detect(path) == kind


def test_detection_looks_at_the_content_not_only_the_name(tmp_path):
    renamed = tmp_path / "export.dat"
    shutil.copy(EX / "telegram" / "result.json", renamed)
    assert detect(renamed) == "telegram"
    chat = tmp_path / "notes.txt"
    shutil.copy(EX / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt", chat)
    assert detect(chat) == "whatsapp"
    tsv = tmp_path / "history.txt"
    tsv.write_text("Date\tClient\tText\n2024-01-01 10:00\tc1\thello\n", encoding="utf-8")
    assert detect(tsv) == "csv"
    zipped = tmp_path / "whatever.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(EX / "telegram" / "result.json", "result.json")
    assert detect(zipped) == "telegram"
    folder = tmp_path / "wa"
    folder.mkdir()
    shutil.copy(EX / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt", folder / "_chat.txt")
    assert detect(folder) == "whatsapp"


def test_tabular_files_load_as_before():
    src = load(EX / "history.xlsx")
    assert src.kind == "xlsx" and src.mapping is None and not src.needs_chat_group
    assert src.frame.equals(bulkimport.read(EX / "history.xlsx"))
    assert "xlsx file" in src.describe()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: (p / "x").mkdir() or p / "x", "folder without result.json"),
        (lambda p: p / "missing.json", "no such file or folder"),
        (
            lambda p: (p / "messages.html").write_text("<html/>") and p / "messages.html",
            "Telegram HTML export",
        ),
        (lambda p: (p / "e.zip").write_bytes(b"PK\x03\x04broken") and p / "e.zip", "not a valid zip"),
        (lambda p: (p / "z.txt").write_bytes(b"") or p / "z.txt", "the file is empty"),
    ],
)
def test_unusable_inputs_are_one_line_read_errors(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(ReadError, match=match) as e:
        load(path)
    assert "\n" not in str(e.value)


def test_describe_names_kind_conversations_authors_sides_and_skips():
    src = load(
        EX / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt",
        operators={"Northwind Support": 7},
        timezone="Europe/Prague",
    )
    text = src.describe()
    assert "whatsapp export, 7 message(s)" in text and "date order dmy" in text and "Europe/Prague" in text
    assert "Pavel Novak: 4 message(s), customer" in text
    assert "Northwind Support: 3 message(s), operator → employee 7" in text
    assert "1 deleted messages" in text and "media-not-included" in text


def test_options_are_checked(tmp_path):
    path = EX / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt"
    with pytest.raises(bulkimport.InputError, match="--date-order"):
        load(path, date_order="dym")
    with pytest.raises(bulkimport.InputError, match="not a known time zone"):
        load(path, timezone="Mars/Olympus")
    with pytest.raises(bulkimport.InputError, match="not a Bitrix24 employee id"):
        load(path, operators={"Northwind Support": "seven"})
