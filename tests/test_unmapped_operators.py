"""--unmapped-operators: refuse (default) or send operator-side rows as the system user (user_id 0)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bulkimport.errors import ConfigError, InputError
from bulkimport.exits import EXIT_OK
from bulkimport.job import ImportJob
from bulkimport.sandbox import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "data_examples"


@pytest.fixture
def telegram(tmp_path) -> Path:
    target = tmp_path / "ChatExport"
    shutil.copytree(EXAMPLES / "telegram", target)
    return target


def test_refuse_is_the_default_and_names_the_authors(telegram):
    with pytest.raises(InputError, match="Northwind Support"):
        ImportJob(telegram, sandbox=True, progress=False).plan()
    with pytest.raises(ConfigError, match="--unmapped-operators 'maybe'"):
        ImportJob(telegram, unmapped_operators="maybe")


def test_system_sends_the_unmapped_operators_rows_with_user_id_0(telegram, tmp_path):
    job = ImportJob(
        telegram, sandbox=True, progress=False, unmapped_operators="system",
        files_base_url="https://files.example.com/tg",
    )
    plan = job.plan()
    ops = [m["message"].get("user_id") for c in plan.conversations for m in c.messages]
    assert ops.count(0) == 4 and ops.count(None) == 5  # the 4 business-side rows, as the system user
    result = job.run()
    assert result.exit_code == EXIT_OK, result.summary
    assert "--unmapped-operators" in result.command and "system" in result.command
    with Sandbox(db=tmp_path / "sandbox-ChatExport.db") as sb:
        stored = sb.store.messages()
    assert len(stored) == 9
    assert int((stored["author_id"] == 0).sum()) == 4  # the portal shows them as the system user


def test_a_spreadsheet_operator_id_0_is_the_system_user_only_when_asked(tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text(
        "chat,user,op,date,text\nc1,u1,,2024-01-02T10:00:00+00:00,hi\nc1,u1,0,2024-01-02T10:01:00+00:00,answer\n",
        encoding="utf-8",
    )
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[columns]\n"chat.id" = "chat"\n"user.id" = "user"\n"message.user_id" = "op"\n'
        '"message.date" = "date"\n"message.text" = "text"\n',
        encoding="utf-8",
    )
    refused = ImportJob(csv, mapping=mapping).plan()
    assert refused.counts["invalid"] == 1 and "bad-operator-id" in set(refused.failures["code"])
    system = ImportJob(csv, mapping=mapping, unmapped_operators="system").plan()
    assert system.counts["invalid"] == 0
    assert [m["message"].get("user_id") for m in system.conversations[0].messages] == [None, 0]
