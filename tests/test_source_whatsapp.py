"""WhatsApp chat exports as a source: locales, date orders, multi-line, system lines, media, groups."""

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
from bulkimport.sources.whatsapp import customer_from_name, decide_order
from tests.source_helpers import ROOT, assert_arrived_as_read, generator, import_into_sandbox

gen = generator()
OPS = {"Northwind Support": 7}
ANDROID = ROOT / "data_examples" / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt"
IOS = ROOT / "data_examples" / "whatsapp" / "WhatsApp Chat - Lena Fischer.zip"


def chat(tmp_path: Path, lines: list[str], name: str = "WhatsApp Chat with Anna.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def conversation(platform: str = "android", **fmt) -> list[str]:
    """Anna (customer) and Northwind Support over three weeks: enough dates to decide the order."""
    lines = []
    for i, day in enumerate([3, 9, 14, 20, 27]):
        when = dt.datetime(2024, 1, day, 9 + i, 5, 30)
        lines.append(gen.wa_line(when, "Anna", f"question {i}", platform, **fmt))
        lines.append(
            gen.wa_line(when + dt.timedelta(minutes=3), "Northwind Support", f"answer {i}", platform, **fmt)
        )
    return lines


def test_android_example_rows_sides_multiline_system_and_omitted_media():
    src = load(ANDROID, operators=OPS, timezone="Europe/Prague")
    f = src.frame
    assert src.kind == "whatsapp" and src.date_order == "dmy" and f.index.name == "row"
    assert list(f.index) == [2, 3, 4, 7, 8, 10, 11]  # the line each message starts on
    assert (
        f.loc[4, "text"]
        == "It left our warehouse on 25 January.\nTracking: NW-1043-XY\nIt should arrive tomorrow."
    )
    assert (
        f.loc[2, "side"] == "customer" and f.loc[3, "side"] == "operator" and f.loc[3, "operator_id"] == "7"
    )
    assert f["user_id"].nunique() == 1  # the operator's rows go into the customer's chat
    assert f.loc[7, "text"] == "(media not included in the export)" and pd.isna(f.loc[7, "files"])
    assert src.notes["code"].tolist() == ["media-not-included"]
    assert src.skipped == {
        "system lines (encryption notices, joins, subject changes)": 1,
        "deleted messages": 1,
    }
    assert f.loc[2, "date"] == pd.Timestamp("2024-01-28 18:03", tz="Europe/Prague")
    assert f.loc[11, "text"] == "Great, enjoy it \U0001f600"
    assert f["message_id"].is_unique and f["message_id"].str.startswith("wa:").all()


def test_ios_zip_with_media_12_hour_month_first():
    src = load(IOS, operators=OPS, timezone="America/New_York")
    f = src.frame
    assert src.date_order == "mdy" and len(f) == 6
    assert f.loc[3, "files"] == "00000003-PHOTO-2024-07-03-20-17-40.jpg" and pd.isna(f.loc[3, "text"])
    assert (
        f.loc[6, "files"] == "00000005-invoice 2291.pdf" and f.loc[6, "text"] == "invoice 2291.pdf • 1 page"
    )
    assert f.loc[2, "date"] == pd.Timestamp("2024-07-03 20:16:05", tz="America/New_York")  # 8:16:05 PM
    assert f.loc[8, "date"] == pd.Timestamp("2024-07-15 08:05:00", tz="America/New_York")
    assert f.loc[7, "text"] == "(media not included in the export)"
    with src.open_attachment("00000003-PHOTO-2024-07-03-20-17-40.jpg") as fh:
        assert fh.read(4) == b"\x89PNG"
    # the iOS encryption notice looks like Lena's message: it is a system line
    assert not f["text"].fillna("").str.contains("encrypted").any()


def test_ids_are_the_same_on_every_run_and_differ_between_chats(tmp_path):
    a, b = load(ANDROID, operators=OPS), load(ANDROID, operators=OPS)
    assert a.frame["message_id"].equals(b.frame["message_id"])
    other = load(
        chat(tmp_path, ANDROID.read_text(encoding="utf-8").splitlines(), "WhatsApp Chat with Eva.txt"),
        operators=OPS,
        customer="Pavel Novak",
    )
    assert not set(other.frame["message_id"]) & set(a.frame["message_id"])


@pytest.mark.parametrize(
    ("platform", "fmt", "order"),
    [
        ("android", {"order": "dmy", "sep": "/"}, "dmy"),
        ("android", {"order": "mdy", "sep": "/", "twelve": True}, "mdy"),
        ("android", {"order": "dmy", "sep": ".", "year_digits": 2}, "dmy"),  # ru / de
        (
            "android",
            {"order": "dmy", "sep": "/", "twelve": True, "year_digits": 4, "ampm": ("a. m.", "p. m.")},
            "dmy",
        ),  # es
        ("ios", {"order": "dmy", "sep": ".", "year_digits": 2}, "dmy"),  # de
        ("ios", {"order": "mdy", "sep": "/", "twelve": True}, "mdy"),  # en-US
        ("ios", {"order": "ymd", "sep": "/"}, "ymd"),  # zh
        ("android", {"order": "ymd", "sep": "-"}, "ymd"),
        ("ios", {"order": "dmy", "sep": "/", "twelve": True, "ampm": ("午前", "午後")}, "dmy"),
    ],
)
def test_locales_and_date_orders(tmp_path, platform, fmt, order):
    src = load(chat(tmp_path, conversation(platform, **fmt)), operators=OPS, timezone="UTC")
    f = src.frame
    assert src.date_order == order and len(f) == 10
    assert f["text"].tolist()[:2] == ["question 0", "answer 0"]
    assert f.iloc[0]["date"] == pd.Timestamp(
        "2024-01-03 09:05" + (":30" if platform == "ios" else ""), tz="UTC"
    )
    assert f.iloc[-2]["date"] == pd.Timestamp(
        "2024-01-27 13:05" + (":30" if platform == "ios" else ""), tz="UTC"
    )
    assert f["side"].tolist()[:2] == ["customer", "operator"]


def test_invisible_characters_are_removed(tmp_path):
    lines = [
        "\u200e[03/01/2024, 9:05:00\u202fAM] Anna: \u2068hello\u2069 there",
        "\u200e[03/01/2024, 9:06:00\u00a0PM] Northwind Support: \u200ehi",
        "[14/01/2024, 9:06:00 PM] Northwind Support: bye",
    ]
    f = load(chat(tmp_path, lines), operators=OPS, timezone="UTC").frame
    assert f["text"].tolist() == ["hello there", "hi", "bye"]
    assert f.iloc[1]["date"] == pd.Timestamp("2024-01-03 21:06", tz="UTC")


def test_finnish_klo_and_dotted_times(tmp_path):
    lines = ["[13.6.2018 klo 21.25.15] Anna: moi", "[14.6.2018 klo 9.01.00] Northwind Support: hei"]
    f = load(chat(tmp_path, lines), operators=OPS, timezone="UTC").frame
    assert f.iloc[0]["date"] == pd.Timestamp("2018-06-13 21:25:15", tz="UTC") and f["text"].tolist() == [
        "moi",
        "hei",
    ]


def test_android_attachments_and_localised_markers(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("IMG-20240103-WA0001.jpg", "report.pdf", "PTT-20240103-WA0002.opus"):
        (folder / name).write_bytes(b"x")
    lines = [
        "03/01/2024, 09:05 - Anna: IMG-20240103-WA0001.jpg (file attached)",
        "the broken part",
        "03/01/2024, 09:06 - Anna: report.pdf (file attached)",
        "report.pdf",
        "03/01/2024, 09:07 - Anna: PTT-20240103-WA0002.opus (файл добавлен)",
        "03/01/2024, 09:08 - Anna: VID-20240103-WA0003.mp4 (file attached)",
        "14/01/2024, 09:09 - Northwind Support: <Без медиафайлов>",
    ]
    src = load(chat(folder, lines), operators=OPS)
    f = src.frame
    assert f.loc[1, "files"] == "IMG-20240103-WA0001.jpg" and f.loc[1, "text"] == "the broken part"
    assert f.loc[3, "files"] == "report.pdf" and pd.isna(f.loc[3, "text"])  # the repeated name is dropped
    assert f.loc[5, "files"] == "PTT-20240103-WA0002.opus"
    assert pd.isna(f.loc[6, "files"]) and "VID-20240103-WA0003.mp4 is missing" in f.loc[6, "text"]
    assert f.loc[7, "text"] == "(media not included in the export)"
    assert src.notes.set_index("row")["code"].to_dict() == {6: "attachment-missing", 7: "media-not-included"}


def test_file_names_with_commas_stay_one_attachment(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "offer, final; v2.pdf").write_bytes(b"x")
    lines = [
        "03/01/2024, 09:05 - Anna: offer, final; v2.pdf (file attached)",
        "14/01/2024, 09:06 - Northwind Support: ok",
    ]
    src = load(chat(folder, lines), operators=OPS, files_base_url="https://files.example.com/wa/")
    assert src.frame.loc[1, "attachments"] == "offer, final; v2.pdf"
    assert src.attachments() == ["offer, final; v2.pdf"]
    item = bulkimport.plan(src).conversations[0].messages[0]["message"]
    assert item["files"] == [
        {"url": "https://files.example.com/wa/offer%2C%20final%3B%20v2.pdf", "name": "offer, final; v2.pdf"}
    ]


def test_system_lines_edits_and_deleted_messages(tmp_path):
    lines = [
        "03/01/2024, 09:00 - Messages and calls are end-to-end encrypted. No one outside can read them.",
        "03/01/2024, 09:01 - Anna: I added the photo below",
        "03/01/2024, 09:02 - Anna: fixed typo <This message was edited>",
        "03/01/2024, 09:03 - Anna: This message was deleted",
        "03/01/2024, 09:04 - Northwind Support: Missed voice call",
        "14/01/2024, 09:05 - Northwind Support: ok",
    ]
    src = load(chat(tmp_path, lines), operators=OPS)
    assert src.frame["text"].tolist() == ["I added the photo below", "fixed typo", "ok"]
    assert sum(src.skipped.values()) == 3


def test_group_chat_is_one_conversation_with_several_customers(tmp_path):
    t = dt.datetime(2024, 2, 1, 10, 0)
    lines = [
        gen.wa_line(t, None, 'Northwind Support created group "Kettle club"'),
        gen.wa_line(t, None, "Northwind Support added Anna"),
        gen.wa_line(t + dt.timedelta(minutes=1), "Anna", "hi all"),
        gen.wa_line(t + dt.timedelta(minutes=2), "+1 (555) 010-0199", "hello"),
        gen.wa_line(t + dt.timedelta(minutes=3), "Northwind Support", "welcome"),
        gen.wa_line(dt.datetime(2024, 2, 14, 10, 0), None, "Anna left"),
    ]
    src = load(chat(tmp_path, lines, "WhatsApp Chat with Kettle club.txt"), operators=OPS)
    f = src.frame
    assert f["side"].tolist() == ["customer", "customer", "operator"]
    assert f.iloc[1]["user_id"] == "wa:+15550100199" and f.iloc[1]["user_phone"] == "+1 (555) 010-0199"
    assert f["chat"].nunique() == 1 and src.needs_chat_group
    with pytest.raises(InputError, match="nobody in it is on the business side"):
        load(chat(tmp_path, lines, "WhatsApp Chat with Kettle club.txt"))


def test_ambiguous_dates_are_refused_and_the_override_works(tmp_path):
    lines = ["01/02/24, 10:00 - Anna: a", "01/02/24, 10:05 - Northwind Support: b"]
    path = chat(tmp_path, lines)
    with pytest.raises(InputError, match="--date-order dmy"):
        load(path, operators=OPS)
    f = load(path, operators=OPS, date_order="mdy", timezone="UTC").frame
    assert f.iloc[0]["date"] == pd.Timestamp("2024-01-02 10:00", tz="UTC")
    f = load(path, operators=OPS, date_order="dmy", timezone="UTC").frame
    assert f.iloc[0]["date"] == pd.Timestamp("2024-02-01 10:00", tz="UTC")
    with pytest.raises(ReadError, match="not a valid mdy date"):
        load(chat(tmp_path, ["13/02/24, 10:00 - Anna: a"], "WhatsApp Chat with Anna.txt"), date_order="mdy")


def test_date_order_from_which_part_goes_down_within_a_year():
    assert decide_order([(1, 2, 24), (3, 2, 24), (2, 3, 24)], ["1/2/24", "3/2/24", "2/3/24"], "x") == "dmy"
    assert decide_order([(2, 1, 24), (2, 3, 24), (3, 2, 24)], ["2/1/24", "2/3/24", "3/2/24"], "x") == "mdy"
    assert decide_order([(24, 1, 2)], ["2024/1/2"], "x") == "ymd"


def test_customer_from_the_file_name_in_several_languages():
    assert customer_from_name("WhatsApp Chat with Anna Berg") == "Anna Berg"
    assert customer_from_name("WhatsApp Chat - Anna Berg") == "Anna Berg"
    assert customer_from_name("Чат WhatsApp с контактом Анна") == "Анна"
    assert customer_from_name("WhatsApp-Chat mit Anna") == "Anna"
    assert customer_from_name("_chat") is None


def test_a_named_customer_who_never_wrote_still_owns_the_chat(tmp_path):
    lines = [
        "03/01/2024, 09:05 - Northwind Support: your order has shipped",
        "14/01/2024, 09:06 - Northwind Support: ?",
    ]
    src = load(chat(tmp_path, lines), operators=OPS)
    assert src.frame["side"].tolist() == ["operator", "operator"]
    assert set(src.frame["user_id"]) == {f"{src.frame['chat'].iloc[0]}:Anna"}
    with pytest.raises(InputError, match="Northwind Support"):
        load(chat(tmp_path, lines))


def test_the_file_name_says_who_the_customer_is(tmp_path):
    lines = ["03/01/2024, 09:05 - Bob: hello", "14/01/2024, 09:06 - Anna: hi Bob"]
    src = load(chat(tmp_path, lines), strict=False)  # "WhatsApp Chat with Anna.txt"
    assert src.frame["side"].tolist() == ["operator", "customer"]
    assert "'Bob' (1 messages) map to no Bitrix24 employee" in src.problems[0]


def test_unnamed_two_person_chat_needs_the_business_side(tmp_path):
    lines = ["03/01/2024, 09:05 - Anna: a", "14/01/2024, 09:06 - Bob: b"]
    path = chat(tmp_path, lines, "_chat.txt")
    with pytest.raises(InputError, match="cannot tell the customer"):
        load(path)
    src = load(path, operators={"Bob": 5})
    assert src.frame["side"].tolist() == ["customer", "operator"]
    with pytest.raises(InputError, match=r"'Bob' \(1 messages\).*--operator 'Bob=<employee id>'"):
        load(path, customer="Anna")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "the file is empty"),
        (b"hello\nthis is not a chat\n", "no line starts with a WhatsApp date and time"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_broken_text_files(tmp_path, content, match):
    path = tmp_path / "WhatsApp Chat with Anna.txt"
    path.write_bytes(content)
    with pytest.raises(ReadError, match=match) as e:
        load(path)
    assert "\n" not in str(e.value) and path.name in str(e.value)


def test_broken_zips(tmp_path):
    empty = tmp_path / "WhatsApp Chat - Anna.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    with pytest.raises(ReadError, match="the zip is empty"):
        load(empty)
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("IMG-1.jpg", b"x")
    with pytest.raises(ReadError, match="holds no chat file"):
        load(other)


def test_end_to_end_android_into_the_sandbox(tmp_path):
    src = load(ANDROID, operators=OPS, timezone="Europe/Prague")
    frame, stored, _ = import_into_sandbox(src, tmp_path)
    assert (frame["import_status"] == "sent").all() and len(stored) == 7
    assert_arrived_as_read(src, frame, stored)
    assert stored["message_id"].tolist() == src.frame["message_id"].tolist()


def test_end_to_end_ios_zip_with_media_into_the_sandbox(tmp_path):
    def again():
        return load(IOS, operators=OPS, timezone="UTC", files_base_url="https://files.example.com/wa")

    src = again()
    frame, stored, _ = import_into_sandbox(src, tmp_path, again=again)  # a re-run sends nothing twice
    assert (frame["import_status"] == "sent").all() and len(stored) == 6
    assert_arrived_as_read(src, frame, stored)
    files = json.loads(stored.loc[stored["message_id"] == src.frame.loc[6, "message_id"], "files"].iloc[0])
    assert files == [
        {
            "url": "https://files.example.com/wa/00000005-invoice%202291.pdf",
            "name": "invoice 2291.pdf",  # the name without iOS's counter (the URL keeps the path)
        }
    ]


def test_end_to_end_group_into_one_portal_chat(tmp_path):
    t = dt.datetime(2024, 2, 1, 10, 0)
    lines = [gen.wa_line(t, None, 'Northwind Support created group "Kettle club"')]
    for i in range(6):
        who = ["Anna", "Mark", "Northwind Support"][i % 3]
        lines.append(gen.wa_line(t + dt.timedelta(minutes=i), who, f"line {i}\nsecond line {i}"))
    lines.append(gen.wa_line(dt.datetime(2024, 2, 14, 10, 0), "Anna", "bye"))
    src = load(chat(tmp_path, lines, "WhatsApp Chat with Kettle club.txt"), operators=OPS)
    frame, stored, _ = import_into_sandbox(src, tmp_path)
    assert (frame["import_status"] == "sent").all() and len(stored) == 7
    assert_arrived_as_read(src, frame, stored)
    assert stored["b24_chat_id"].nunique() == 1 and stored["user_id"].nunique() == 2


def test_wall_times_across_daylight_saving_changes(tmp_path):
    lines = [
        "31/03/2024, 02:30 - Anna: in the skipped hour",
        "27/10/2024, 02:30 - Northwind Support: in the repeated hour",
    ]
    f = load(chat(tmp_path, lines), operators=OPS, timezone="Europe/Berlin").frame
    assert f.iloc[0]["date"] == pd.Timestamp("2024-03-31 01:00", tz="UTC")  # moved forward to 03:00
    assert f.iloc[1]["date"] == pd.Timestamp("2024-10-27 00:30", tz="UTC")  # the first 02:30 (summer time)
