"""Generate the synthetic example histories (seeded, deterministic): run ``python data_examples/generate.py``.

Writes, next to this script:

* ``history.xlsx`` — English headers, Excel date cells, customer and operator rows (author column),
  Russian and English conversations, attachment URLs and a few deliberately bad rows;
  mapping: ``history_xlsx.toml``.
* ``history.csv`` — the same kind of history as a Russian Windows export: cp1251, ``;``-separated,
  date and time in two columns; mapping: ``history_csv.toml``.

Everything is invented; attachment URLs point at example.com (nothing is fetched).
:func:`big_csv` writes a large history for bench/bench_prepare.py.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 20261123

OPERATORS = {"Анна Смирнова": 12, "Oleg Ivanov": 15, "Mary Jones": 17}
RU_NAMES = [
    ("Иван", "Петров"),
    ("Мария", "Кузнецова"),
    ("Сергей", "Соколов"),
    ("Ольга", "Попова"),
    ("Дмитрий", "Лебедев"),
    ("Елена", "Козлова"),
    ("Алексей", "Новиков"),
    ("Наталья", "Морозова"),
    ("Андрей", "Волков"),
    ("Татьяна", "Павлова"),
    ("Пётр", "Семёнов"),
    ("Юлия", "Егорова"),
]
EN_NAMES = [
    ("John", "Smith"),
    ("Emily", "Clark"),
    ("Michael", "O'Brien"),
    ("Sarah", "Lee"),
    ("David", "Miller"),
    ("Laura", "Evans"),
    ("James", "Walker"),
    ("Anna-Maria", "Young"),
]
RU_CUSTOMER = [
    "Здравствуйте! Где мой заказ?",
    "Добрый день, хочу вернуть товар.",
    "Подскажите, есть ли доставка в Казань?",
    "Спасибо, всё получил 👍",
    "Можно оплатить картой при получении?",
    "Заказ №{n} пришёл не полностью",
    "Когда будет поступление?",
    "Пришлите, пожалуйста, счёт.",
    "Ок",
    "Вот фото упаковки",
]
RU_OPERATOR = [
    "Здравствуйте! Сейчас проверю.",
    "Ваш заказ №{n} передан в доставку.",
    "Да, оплата картой возможна.",
    "[b]Важно:[/b] возврат в течение 14 дней.",
    "Спасибо за обращение!\nХорошего дня.",
    "Уточните, пожалуйста, номер заказа.",
]
EN_CUSTOMER = [
    "Hi, where is my order?",
    "I'd like to return an item.",
    "Do you ship to Boston?",
    "Thanks, got it 🙂",
    "Can I pay on delivery?",
    "Order #{n} arrived incomplete",
    "Here is a photo",
]
EN_OPERATOR = [
    "Hello! Let me check.",
    "Your order #{n} has shipped.",
    "Yes, cash on delivery is fine.",
    "[i]Note:[/i] returns are accepted within 14 days.",
    "Thank you for contacting us!\nHave a nice day.",
]


def _conversations(rng: random.Random, n_conv: int) -> list[list[dict[str, Any]]]:
    """Synthetic conversations: lists of row dicts (customer and operator rows, time-ordered)."""
    out = []
    start = dt.datetime(2025, 3, 1, 9, 0)
    for c in range(n_conv):
        russian = c % 3 != 2
        first, last = rng.choice(RU_NAMES if russian else EN_NAMES)
        client_id = f"{rng.randint(1, 99999):06d}" if c % 5 else str(rng.randint(10**18, 9 * 10**18))
        phone = (
            f"+7 9{rng.randint(10, 99)} {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
            if russian
            else f"+1 202 555 {rng.randint(100, 199):04d}"
        )
        email = f"client{c}@example.com"
        operator = rng.choice(list(OPERATORS)[:1] if russian else list(OPERATORS)[1:])
        t = start + dt.timedelta(
            days=rng.randint(0, 400), hours=rng.randint(0, 9), minutes=rng.randint(0, 59)
        )
        rows = []
        for k in range(rng.randint(8, 24)):
            is_op = k % 2 == 1 and rng.random() < 0.9
            pool = (
                (RU_OPERATOR if is_op else RU_CUSTOMER)
                if russian
                else (EN_OPERATOR if is_op else EN_CUSTOMER)
            )
            text = rng.choice(pool).format(n=rng.randint(1000, 9999))
            files = ""
            if not is_op and rng.random() < 0.12:
                files = f"https://files.example.com/chat{c}/photo_{k}.jpg"
                if rng.random() < 0.3:
                    files += f"\nhttps://files.example.com/chat{c}/invoice%20{k}.pdf"
                if rng.random() < 0.3:
                    text = ""
            t += dt.timedelta(minutes=rng.randint(1, 180), seconds=rng.randint(0, 59))
            rows.append(
                {
                    "chat": f"wa-{c + 1:04d}",
                    "client_id": client_id,
                    "first": first,
                    "last": last,
                    "phone": phone,
                    "email": email,
                    "author": operator if is_op else f"{first} {last}",
                    "date": t,
                    "text": text,
                    "files": files,
                    "operator": is_op,
                }
            )
        out.append(rows)
    return out


def _break_some(rows: list[dict[str, Any]]) -> None:
    """Deliberately bad rows so the examples show validation at work (documented in docs/mapping.md)."""
    rows[3]["date"] = None  # missing-date
    rows[10]["date"] = "31.02.2025 10:00"  # bad-date
    rows[17]["text"], rows[17]["files"] = "", ""  # missing-content
    rows[24]["files"] = "C:\\Users\\op\\scan.png"  # bad-file-url
    rows[31]["phone"] = "12-34"  # bad-phone (warning)
    rows[38]["email"] = "not-an-email"  # bad-email (warning)
    rows[45]["first"] = "Maximilian-Alexander-Theodor"  # name-truncated (warning)


def _orphan_chat() -> list[dict[str, Any]]:
    """A chat with only operator rows and no client id: no-customer."""
    t = dt.datetime(2025, 6, 1, 12, 0)
    return [
        {
            "chat": "wa-9999",
            "client_id": "",
            "first": "",
            "last": "",
            "phone": "",
            "email": "",
            "author": "Oleg Ivanov",
            "date": t + dt.timedelta(minutes=i),
            "text": f"Follow-up {i}",
            "files": "",
            "operator": True,
        }
        for i in range(2)
    ]


def _rows(seed: int, n_conv: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    convs = _conversations(rng, n_conv)
    rows = [r for conv in convs for r in conv]
    rng.shuffle(rows)  # exports are rarely in conversation order; the plan sorts
    _break_some(rows)
    rows.extend(_orphan_chat())
    return rows


def write_xlsx(path: Path, seed: int = SEED, n_conv: int = 36) -> int:
    """history.xlsx: English headers, Excel datetime cells (a few as text), ids as text."""
    import openpyxl

    rows = _rows(seed, n_conv)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "History"
    ws.append(
        [
            "Chat ID",
            "Client ID",
            "First name",
            "Last name",
            "Phone",
            "E-mail",
            "Author",
            "Date",
            "Message",
            "Attachments",
        ]
    )
    for i, r in enumerate(rows):
        date: Any = r["date"]
        if isinstance(date, dt.datetime) and i % 50 == 7:
            date = date.strftime("%d.%m.%Y %H:%M")  # some dates typed as text
        ws.append(
            [
                r["chat"],
                r["client_id"] or None,
                r["first"] or None,
                r["last"] or None,
                r["phone"] or None,
                r["email"] or None,
                r["author"],
                date,
                r["text"] or None,
                r["files"] or None,
            ]
        )
        if isinstance(date, dt.datetime):
            ws.cell(row=ws.max_row, column=8).number_format = "yyyy-mm-dd hh:mm:ss"
    for cell in ws["B"]:
        cell.number_format = "@"  # ids are text: leading zeros and 19-digit ids survive
    fixed = dt.datetime(2026, 1, 1)
    wb.properties.created = wb.properties.modified = fixed  # same content on every run
    wb.save(path)
    return len(rows)


def write_csv(path: Path, seed: int = SEED + 1, n_conv: int = 32) -> int:
    """history.csv: a Russian Windows export — cp1251, ';', date and time in separate columns."""
    import csv

    rows = _rows(seed, n_conv)
    with path.open("w", encoding="cp1251", newline="", errors="replace") as fh:
        w = csv.writer(fh, delimiter=";", quoting=csv.QUOTE_MINIMAL)
        w.writerow(
            [
                "Чат",
                "ID клиента",
                "Имя",
                "Фамилия",
                "Телефон",
                "Почта",
                "Автор",
                "Дата",
                "Время",
                "Текст",
                "Вложения",
            ]
        )
        for r in rows:
            d = r["date"]
            if isinstance(d, dt.datetime):
                day, time = d.strftime("%d.%m.%Y"), d.strftime("%H:%M:%S")
            elif isinstance(d, str):
                day, time = d.split(" ")
            else:
                day, time = "", ""
            text = r["text"].encode("cp1251", "replace").decode("cp1251")  # emoji do not exist in cp1251
            w.writerow(
                [
                    r["chat"],
                    r["client_id"],
                    r["first"],
                    r["last"],
                    r["phone"],
                    r["email"],
                    r["author"],
                    day,
                    time,
                    text,
                    r["files"],
                ]
            )
    return len(rows)


MAPPING_XLSX = """\
# Mapping for history.xlsx (see docs/mapping.md)
[columns]
"chat.id" = "Chat ID"
"user.id" = "Client ID"
"user.name" = "First name"
"user.last_name" = "Last name"
"user.phone" = "Phone"
"user.email" = "E-mail"
"message.date" = "Date"
"message.text" = "Message"
"message.files" = "Attachments"

[options]
timezone = "Europe/Moscow"
dayfirst = true
disable_crm = true
author = "Author"

[operators]
"Анна Смирнова" = 12
"Oleg Ivanov" = 15
"Mary Jones" = 17
"""

MAPPING_CSV = """\
# Mapping for history.csv (cp1251, ';', date and time in two columns; see docs/mapping.md)
[columns]
"chat.id" = "Чат"
"user.id" = "ID клиента"
"user.name" = "Имя"
"user.last_name" = "Фамилия"
"user.phone" = "Телефон"
"user.email" = "Почта"
"message.date" = ["Дата", "Время"]
"message.text" = "Текст"
"message.files" = "Вложения"

[constants]
"chat.name" = "WhatsApp (архив)"

[options]
timezone = "Europe/Moscow"
dayfirst = true
author = "Автор"
phone_region = "RU"

[operators]
"Анна Смирнова" = 12
"Oleg Ivanov" = 15
"Mary Jones" = 17
"""


def big_csv(path: Path, rows: int, seed: int = 1, conversations: int | None = None) -> Path:
    """A large synthetic UTF-8 ';' history for benchmarks (vectorised with numpy: ~1 s per million rows)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_conv = conversations or max(1, rows // 20)
    conv = np.sort(rng.integers(0, n_conv, rows))
    # conversations 7 hours apart, closer when there are so many that the last would pass 2099
    # (validation refuses dates after 2099: 10M rows at 7 hours made 8M rows invalid)
    base = 1_740_000_000 + conv * min(3600 * 7, (4_000_000_000 - 1_740_000_000) // n_conv)
    ts = base + rng.integers(0, 86_400, rows)
    is_op = rng.random(rows) < 0.45
    texts = np.array(
        [
            "Здравствуйте! Где мой заказ?",
            "Hi, where is my order?",
            "Спасибо, всё получил 👍",
            "Your order has shipped.",
            "Уточните номер заказа, пожалуйста.",
            "[b]Важно:[/b] возврат 14 дней",
        ]
    )
    authors = np.array(["Анна Смирнова", "Oleg Ivanov"])
    frame = pd.DataFrame(
        {
            "Chat": pd.Series(conv).map(lambda c: f"wa-{c:07d}")
            if rows < 1000
            else "wa-" + pd.Series(conv).astype(str).str.zfill(7),
            "Client ID": pd.Series(conv).astype(str).str.zfill(9),
            "Name": np.where(conv % 2 == 0, "Иван Петров", "John Smith"),
            "Phone": "+7916" + pd.Series(conv % 10_000_000).astype(str).str.zfill(7),
            "Author": np.where(is_op, authors[conv % 2], "client"),
            "Date": pd.to_datetime(ts, unit="s").strftime("%d.%m.%Y %H:%M:%S"),
            # every text distinct, as in a real history (repeated texts would flatter the per-value cache)
            "Text": pd.Series(texts[rng.integers(0, len(texts), rows)])
            + " #"
            + pd.Series(np.arange(rows)).astype(str),
            "Attachments": np.where(rng.random(rows) < 0.05, "https://files.example.com/a/photo.jpg", ""),
        }
    )
    frame.to_csv(path, sep=";", index=False, encoding="utf-8")
    return path


BIG_MAPPING = {
    "columns": {
        "chat.id": "Chat",
        "user.id": "Client ID",
        "user.name": "Name",
        "user.phone": "Phone",
        "message.date": "Date",
        "message.text": "Text",
        "message.files": "Attachments",
    },
    "options": {"timezone": "Europe/Moscow", "dayfirst": True, "author": "Author"},
    "operators": OPERATORS,
}


def main(argv: list[str] | None = None) -> None:
    """Write the example files next to this script."""
    out = Path(argv[0]) if argv else HERE
    out.mkdir(parents=True, exist_ok=True)
    n_x = write_xlsx(out / "history.xlsx")
    n_c = write_csv(out / "history.csv")
    (out / "history_xlsx.toml").write_text(MAPPING_XLSX, encoding="utf-8")
    (out / "history_csv.toml").write_text(MAPPING_CSV, encoding="utf-8")
    print(f"history.xlsx: {n_x} rows; history.csv: {n_c} rows; mappings history_xlsx.toml, history_csv.toml")


if __name__ == "__main__":
    main(sys.argv[1:])
