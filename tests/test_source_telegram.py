"""Telegram Desktop JSON exports as a source: shapes, text, sides, media, broken files, a sandbox import."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import bulkimport
from bulkimport.errors import InputError, ReadError
from bulkimport.sources import load
from bulkimport.sources.telegram import JsonStream, render_text
from tests.source_helpers import ROOT, assert_arrived_as_read, generator, import_into_sandbox

gen = generator()
OPS = {"Northwind Support": 7}
EXAMPLE = ROOT / "data_examples" / "telegram"


def write(tmp_path: Path, data: dict, name: str = "result.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_example_single_chat_rows_ids_sides_and_text():
    src = load(EXAMPLE, operators=OPS, timezone="Europe/Moscow")
    f = src.frame
    assert src.kind == "telegram" and f.index.name == "row" and f.index.is_unique
    assert list(f.index[:3]) == ["tg:5550001:101", "tg:5550001:102", "tg:5550001:103"]
    assert (f["message_id"] == f.index).all()  # message.id = dialog id + message id
    assert set(f["chat"]) == {"tg:5550001"}
    assert f.loc["tg:5550001:101", "side"] == "customer"
    assert f.loc["tg:5550001:102", "side"] == "operator" and f.loc["tg:5550001:102", "operator_id"] == "7"
    assert (f["user_id"] == "tg:user5550001").all()  # operator rows go into the customer's chat
    assert f.loc["tg:5550001:102", "text"] == "Hi Olga, [b]yes[/b], we have 4 left."
    assert f.loc["tg:5550001:105", "text"] == (
        "[i]In reply to Olga Smirnova: «Is it this one?»[/i]\n"
        "Exactly. The price list: [url=https://example.com/prices]our site[/url]"
    )
    assert f.loc["tg:5550001:104", "text"].startswith("[i]In reply to Olga Smirnova: «(attachment)»")
    assert f.loc["tg:5550001:108", "text"] == "[i]Forwarded from Ivan Petrov[/i]\nA friend recommended you:"
    assert f.loc["tg:5550001:103", "files"] == "photos/photo_1@04-03-2024_12-20-00.jpg"
    assert f.loc["tg:5550001:106", "files"] == "files/price list 2024.pdf"
    # the placeholder is a note and a warning, never a file
    assert pd.isna(f.loc["tg:5550001:109", "files"])
    assert "not included in the export" in f.loc["tg:5550001:109", "text"]
    assert src.notes["code"].tolist() == ["media-not-included"] and src.notes["row"].tolist() == [
        "tg:5550001:109"
    ]
    # the service message (a call) is skipped by default
    assert "tg:5550001:107" not in f.index and sum(src.skipped.values()) == 1
    # unix time kept, shown in the zone asked for
    assert f.loc["tg:5550001:101", "date"] == pd.Timestamp("2024-03-04 12:15", tz="Europe/Moscow")
    assert not src.needs_chat_group


def test_the_same_export_gives_the_same_ids_every_run():
    a = load(EXAMPLE, operators=OPS)
    b = load(EXAMPLE, operators=OPS)
    assert a.frame.index.equals(b.frame.index) and a.frame["message_id"].equals(b.frame["message_id"])


def test_old_export_without_date_unixtime_uses_the_timezone(tmp_path):
    folder = gen.write_telegram_single(tmp_path / "old", unixtime=False)
    src = load(folder, operators=OPS, timezone="Europe/Moscow")
    # the generator wrote local time at UTC+3; read in Moscow (UTC+3) it is the same instant
    assert src.frame.iloc[0]["date"] == pd.Timestamp("2024-03-04 09:15", tz="UTC")
    other = load(folder, operators=OPS, timezone="UTC")
    assert other.frame.iloc[0]["date"] == pd.Timestamp("2024-03-04 12:15", tz="UTC")


def test_full_export_takes_personal_chats_and_skips_the_rest(tmp_path):
    folder = gen.write_telegram_full(tmp_path / "full")
    src = load(folder, operators={"user5550100": 7})  # by from_id
    f = src.frame
    assert set(f["chat"]) == {"tg:5550001", "tg:5550009"}
    assert f.loc["tg:5550001:103", "files"] == "chats/chat_001/photos/photo_1@04-03-2024_12-20-00.jpg"
    # the exporter is the business side; the deleted account is a customer without a name
    assert (
        f.loc["tg:5550009:2", "side"] == "operator" and f.loc["tg:5550009:2", "user_id"] == "tg:user5550009"
    )
    assert f.loc["tg:5550009:1", "side"] == "customer" and pd.isna(f.loc["tg:5550009:1", "author"])
    skipped = " ".join(src.skipped)
    assert "channels" in skipped and "saved messages" in skipped and "left chats" in skipped
    assert "group" in skipped


def test_full_export_with_groups_is_one_conversation_needing_chat_group(tmp_path):
    folder = gen.write_telegram_full(tmp_path / "full")
    src = load(folder, operators={"Northwind Support": 7}, include_groups=True, include_left=False)
    g = src.frame[src.frame["chat"] == "tg:7770001"]
    assert g["side"].tolist() == ["customer", "customer", "operator"]
    assert g["user_id"].tolist()[:2] == ["tg:user5550002", "tg:user5550003"]
    assert src.needs_chat_group
    assert "CHAT_GROUP" in src.describe()


def test_a_business_author_without_an_employee_refuses_with_the_fix():
    with pytest.raises(InputError, match=r"Northwind Support.*--operator 'Northwind Support=<employee id>'"):
        load(EXAMPLE)
    src = load(EXAMPLE, strict=False)  # what `bulkimport mapping` shows
    assert src.problems and "NO EMPLOYEE" in src.describe()
    with pytest.raises(InputError):
        bulkimport.plan(src)


def test_text_entities_become_bb_codes():
    text = [
        "a ",
        {"type": "bold", "text": "b"},
        {"type": "italic", "text": "i"},
        {"type": "underline", "text": "u"},
        {"type": "strikethrough", "text": "s"},
        {"type": "code", "text": "x=1"},
        {"type": "text_link", "text": "here", "href": "https://e.com/a]b"},
        {"type": "text_link", "text": "bad", "href": "javascript:alert(1)"},
        {"type": "link", "text": "https://e.com"},
        {"type": "mention", "text": "@olga"},
    ]
    assert render_text(text) == (
        "a [b]b[/b][i]i[/i][u]u[/u][s]s[/s][code]x=1[/code][url=https://e.com/a%5Db]here[/url]bad"
        "https://e.com@olga"
    )
    assert render_text("plain") == "plain" and render_text(None) == ""


def test_service_messages_can_be_imported_as_notes():
    src = load(EXAMPLE, operators=OPS, include_service=True)
    assert src.frame.loc["tg:5550001:107", "text"] == "[i]Olga Smirnova: phone call, 65 s, hangup[/i]"


def test_zip_holding_the_export_folder(tmp_path):
    zpath = tmp_path / "Telegram Export.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in EXAMPLE.rglob("*"):
            if p.is_file():
                zf.write(p, "ChatExport_2024-03-05/" + p.relative_to(EXAMPLE).as_posix())
    src = load(zpath, operators=OPS)
    assert src.frame.loc["tg:5550001:103", "files"] == "photos/photo_1@04-03-2024_12-20-00.jpg"
    with src.open_attachment("photos/photo_1@04-03-2024_12-20-00.jpg") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_missing_attachment_is_a_note_and_a_warning(tmp_path):
    dialog, _ = gen.example_dialog()
    folder = tmp_path / "exp"
    folder.mkdir()
    write(folder, dialog)  # media files not copied
    src = load(folder, operators=OPS)
    assert "attachment-missing" in set(src.notes["code"])
    assert src.frame["files"].isna().all()


@pytest.mark.parametrize("cut", [10, 200, 900])
def test_truncated_json_is_a_one_line_read_error(tmp_path, cut):
    text = (EXAMPLE / "result.json").read_text(encoding="utf-8")
    path = tmp_path / "result.json"
    path.write_text(text[:cut], encoding="utf-8")
    with pytest.raises(
        ReadError, match=r"result\.json: the JSON ends early.*export the chat history again"
    ) as e:
        load(path, operators=OPS)
    assert "\n" not in str(e.value)


def test_broken_and_foreign_json(tmp_path):
    with pytest.raises(ReadError, match="not valid JSON"):
        load(_bad(tmp_path), operators=OPS)
    with pytest.raises(ReadError, match="not a Telegram Desktop export"):
        load(write(tmp_path, {"rows": [1, 2]}, "other.json"))
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(ReadError, match="the file is empty"):
        load(tmp_path / "empty.json")


def _bad(tmp_path: Path) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(
        '{"name": "x", "type": "personal_chat", "id": 1, "messages": [{"id": 1,, }]}', encoding="utf-8"
    )
    return p


def test_html_export_is_refused_with_the_json_hint(tmp_path):
    folder = tmp_path / "ChatExport"
    folder.mkdir()
    (folder / "messages.html").write_text("<html></html>", encoding="utf-8")
    with pytest.raises(ReadError, match="Telegram HTML export; export the chat again as JSON"):
        load(folder)
    with pytest.raises(ReadError, match="Machine-readable JSON"):
        load(folder / "messages.html")


def test_stream_reads_values_split_across_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(JsonStream, "CHUNK", 7)  # every value straddles a window edge
    src = load(EXAMPLE, operators=OPS)
    assert len(src.frame) == 9 and src.frame.loc["tg:5550001:110", "text"].endswith("[/i]")


def test_numeric_from_id_of_very_old_exports_and_unsupported_messages(tmp_path):
    t = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    msgs = [
        gen.tg_message(1, t, "Ann", "user1", "hi"),
        gen.tg_message(2, t, "Me", "user2", "hello"),
        {"id": 3, "type": "unsupported"},
    ]
    msgs[0]["from_id"] = 1
    path = write(tmp_path, {"name": "Ann", "type": "personal_chat", "id": 1, "messages": msgs})
    src = load(path, operators={"Me": 3})
    assert src.frame["side"].tolist() == ["customer", "operator"]
    assert src.skipped == {"unsupported messages": 1}


def test_end_to_end_into_the_sandbox(tmp_path):
    src = load(
        EXAMPLE, operators=OPS, timezone="Europe/Berlin", files_base_url="https://files.example.com/tg"
    )
    frame, stored, _ = import_into_sandbox(src, tmp_path)
    assert (frame["import_status"] == "sent").all() and len(stored) == 9
    assert_arrived_as_read(src, frame, stored)
    assert stored["message_id"].tolist() == list(src.frame.index)  # the export's order
    photo = json.loads(stored.loc[stored["message_id"] == "tg:5550001:103", "files"].iloc[0])
    assert photo == [
        {
            "url": "https://files.example.com/tg/photos/photo_1%4004-03-2024_12-20-00.jpg",
            "name": "photo_1@04-03-2024_12-20-00.jpg",
        }
    ]
    assert "media-not-included" in frame.loc["tg:5550001:109", "import_warnings"]
    # the report names each row by its Telegram id
    from bulkimport.reporting import write_report

    report = pd.read_excel(
        write_report(frame, tmp_path / "report.xlsx"), sheet_name=0, dtype=str, engine="openpyxl"
    )
    first = report[report.iloc[:, 0] == "tg:5550001:101"].iloc[0]
    # times in the report are in the import's zone to the second (no plan given: UTC); 10:15 at +01:00
    assert first["date"] == "2024-03-04 09:15:00" and first["import_status"] == "sent"


def test_end_to_end_group_shares_one_portal_chat(tmp_path):
    folder = gen.write_telegram_full(tmp_path / "full")

    def again():
        return load(folder, operators=OPS, include_groups=True, files_base_url="https://files.example.com/tg")

    src = again()
    frame, stored, _ = import_into_sandbox(src, tmp_path, again=again)  # a re-run sends nothing twice
    assert (frame["import_status"] == "sent").all()
    assert_arrived_as_read(src, frame, stored)
    group = stored[stored["chat_id"] == "tg:7770001"]
    assert len(group) == 3 and group["b24_chat_id"].nunique() == 1 and group["user_id"].nunique() == 2


def test_single_group_export_needs_the_business_side_named(tmp_path):
    t = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
    msgs = [
        gen.tg_message(1, t, "Mark", "user2", "hi"),
        gen.tg_message(2, t, "Sara", "user3", "yo"),
        gen.tg_message(3, t, "Desk", "user9", "hello both"),
    ]
    path = write(tmp_path, {"name": "Club", "type": "private_group", "id": 42, "messages": msgs})
    with pytest.raises(InputError, match="nobody in group 'Club' is on the business side"):
        load(path)
    src = load(path, operators={"user9": 3})
    assert src.frame["side"].tolist() == ["customer", "customer", "operator"] and src.needs_chat_group


def test_left_chats_only_when_asked(tmp_path):
    folder = gen.write_telegram_full(tmp_path / "full")
    src = load(folder, operators=OPS, include_groups=True, include_left=True, strict=False)
    assert "tg:9990001:1" in src.frame.index
    assert src.problems and "Old chat" in src.problems[0]  # a group with nobody on the business side


def test_an_unmapped_exporter_is_listed_once_over_all_chats(tmp_path):
    folder = gen.write_telegram_full(tmp_path / "full")
    with pytest.raises(InputError) as e:
        load(folder)
    assert str(e.value).count("'Northwind Support'") == 1 and "(5 messages)" in str(e.value)
