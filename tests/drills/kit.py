"""Shared drill kit: a synthetic history file, a sandbox wired for the CLI, and store invariants.

The drills run ``python -m bulkimport`` as a user would (a subprocess), against a sandbox portal
that lives in the test process, so the sandbox outlives every kill of the CLI.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import requests

ROOT = Path(__file__).resolve().parents[2]
CONNECTOR = "bulkimport"
ICON = {"DATA_IMAGE": "data:image/svg+xml,%3Csvg%20xmlns%3D%22http://www.w3.org/2000/svg%22/%3E"}
HEADER = ["Chat ID", "Client ID", "Client name", "Message ID", "Date", "Text"]


class History:
    """What a generated history file holds: message ids per chat in time order, and by row id."""

    def __init__(self, want: dict[str, list[str]], by_row: dict[str, str]) -> None:
        self.want, self.by_row = want, by_row
        self.chat_of = {mid: chat for chat, ids in want.items() for mid in ids}

    @property
    def ids(self) -> set[str]:
        """Every message id of the file."""
        return set(self.by_row.values())


def write_history(
    path: Path, conversations: int, per_conversation: int, *, text: str = "message {c}.{i}"
) -> History:
    """A CSV of ``conversations`` × ``per_conversation`` valid messages, interleaved in file order
    (so the plan must regroup and sort them). Row ids are spreadsheet rows (header = 1)."""
    want: dict[str, list[str]] = {}
    rows: list[list[str]] = []
    for i in range(per_conversation):
        for c in range(conversations):
            chat, mid = f"chat{c:04d}", f"c{c}-m{i}"
            minute = c % 50 + i * 60  # distinct, increasing times per conversation
            date = pd.Timestamp("2025-01-01") + pd.Timedelta(minutes=minute)
            rows.append([chat, f"client{c}", "Ann", mid, date.strftime("%Y-%m-%d %H:%M:%S"),
                         text.format(c=c, i=i)])
            want.setdefault(chat, []).append(mid)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return History(want, {str(k + 2): r[3] for k, r in enumerate(rows)})


def register(portal: Any, connector: str = CONNECTOR, line: int = 1) -> None:
    """Register and activate the CLI's default connector on ``line`` (what `bulkimport setup` does)."""
    for method, params in (
        ("imconnector.register", {"ID": connector, "NAME": "History", "ICON": ICON,
                                  "PLACEMENT_HANDLER": "https://example.invalid/h"}),
        ("imconnector.activate", {"CONNECTOR": connector, "LINE": line, "ACTIVE": 1}),
    ):
        r = requests.post(portal.rest_url + method, json={**params, "auth": portal.access_token}, timeout=30)
        assert r.status_code == 200, r.text


def cli_env(portal: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI run against ``portal``: OAuth variables, a private token file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        BITRIX24_CLIENT_ID=portal.client_id,
        BITRIX24_CLIENT_SECRET=portal.client_secret,
        BITRIX24_ACCESS_TOKEN=portal.access_token,
        BITRIX24_REFRESH_TOKEN=portal.refresh_token,
        BITRIX24_OAUTH_URL=portal.oauth_url,
        BITRIX24_TOKEN_FILE=str(tmp_path / "tokens.json"),
    )
    env.update(extra)
    return env


def run_args(portal: Any, history: Path, tmp_path: Path, *more: str) -> list[str]:
    """``python -m bulkimport run HISTORY --portal URL --line 1 …`` with state and report in tmp_path."""
    return [
        sys.executable, "-m", "bulkimport", "run", str(history), "--portal", portal.url, "--line", "1",
        "--yes", "--accept-guessed-mapping", "--no-progress", "--state", str(tmp_path / "journal.db"),
        "--report", str(tmp_path / "report.csv"), *more,
    ]


def run_cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (a hang fails the drill through the timeout)."""
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=ROOT)


def journal_statuses(path: Path) -> dict[str, str]:
    """{row id: status} read straight from the journal's SQLite file (as a crashed run left it)."""
    if not path.exists():
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {str(rid): str(st) for rid, st in con.execute("select rid, status from rows")}
    finally:
        con.close()


def report_frame(path: Path) -> pd.DataFrame:
    """The CSV report (every input row with its status), as strings."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def check_store(portal: Any, want: dict[str, list[str]], status: dict[str, str],
                unknown_ok: Iterable[str] = ()) -> dict[str, int]:
    """The invariants every drill ends with, by message id:

    * no message stored twice, no conversation out of order (the sandbox's own checks, and ours:
      each chat's stored ids are a subsequence of the plan's order);
    * a ``sent`` row is stored exactly once; an ``unknown`` row at most once;
    * a row neither sent nor unknown is not stored at all (it was never sent, or was rejected).
    Returns the stored copies per message id."""
    stored = portal.store.messages()
    assert portal.store.duplicates().empty, portal.store.duplicates().to_string()
    assert portal.store.out_of_order().empty, portal.store.out_of_order().to_string()
    assert portal.store.counts()["duplicate_chats"] == 0
    copies = stored["message_id"].value_counts().to_dict()
    for chat, ids in want.items():
        got = stored.loc[stored["chat_id"] == chat, "message_id"].tolist()
        order = {mid: k for k, mid in enumerate(ids)}
        assert all(m in order for m in got), (chat, got)
        assert [order[m] for m in got] == sorted(order[m] for m in got), (chat, got)
    problems = []
    for mid, st in status.items():
        n = copies.get(mid, 0)
        allowed = {"sent": (1,), "unknown": (0, 1)}.get(st, (0,))
        if n not in allowed:
            problems.append((mid, st, n))
    assert not problems, problems[:20]
    assert set(copies) <= set(status), set(copies) - set(status)
    return copies
