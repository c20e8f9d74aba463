"""Messenger exports on the command line: mapping PATH, run with --operator/--timezone/--files-base-url."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "data_examples"
WHATSAPP_ZIP = EXAMPLES / "whatsapp" / "WhatsApp Chat - Lena Fischer.zip"
WHATSAPP_TXT = EXAMPLES / "whatsapp" / "WhatsApp Chat with Pavel Novak.txt"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["BITRIX24_TOKEN_FILE"] = str(cwd / "tokens.json")
    return subprocess.run(
        [sys.executable, "-m", "bulkimport", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False,
    )


@pytest.fixture
def telegram(tmp_path) -> Path:
    target = tmp_path / "ChatExport"
    shutil.copytree(EXAMPLES / "telegram", target)
    return target


def test_mapping_of_an_export_lists_authors_with_counts_and_sides(telegram, tmp_path):
    proc = _cli("mapping", str(telegram), cwd=tmp_path)
    # the export cannot be imported as it is: exit 2, the problem on one line (and listed above)
    assert proc.returncode == 2, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: ") and "Northwind Support" in errors[0]
    assert "telegram export, 9 message(s)" in proc.stdout
    assert "Olga Smirnova [user5550001]: 5 message(s), customer" in proc.stdout
    assert "Northwind Support [user5550100]: 4 message(s), operator → NO EMPLOYEE" in proc.stdout
    assert "--operator 'Northwind Support=<employee id>'" in proc.stdout
    named = _cli("mapping", str(telegram), "--operator", "Northwind Support=12", cwd=tmp_path)
    assert "operator → employee 12" in named.stdout and "PROBLEM" not in named.stdout
    assert named.returncode == 0, named.stderr


def test_run_refuses_an_export_whose_operators_map_to_no_employee(telegram, tmp_path):
    proc = _cli("run", str(telegram), "--sandbox", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Northwind Support" in lines[0] and "--operator" in lines[0]
    assert not (tmp_path / "sandbox-ChatExport.db").exists()  # refused before any portal was set up


@pytest.mark.parametrize("bad", ["Anna", "Anna=", "=12", "Anna=x", "Anna=0"])
def test_a_malformed_operator_option_is_one_line(bad, tmp_path):
    proc = _cli("mapping", str(WHATSAPP_TXT), "--operator", bad, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "use AUTHOR=EMPLOYEE_ID" in proc.stderr


def test_a_telegram_export_imports_into_the_sandbox_with_its_files(telegram, tmp_path):
    args = ["--operator", "Northwind Support=12", "--files-base-url", "https://files.example.com/tg"]
    proc = _cli("run", str(telegram), "--sandbox", "--no-progress", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Rows: sent 9 (of 9)" in proc.stdout
    assert "--operator 'Northwind Support=12'" not in proc.stdout  # nothing left to resume
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "sandbox-ChatExport.db") as sb:
        stored = sb.store.messages()
    assert len(stored) == 9 and stored["message_id"].is_unique
    operators = stored[stored["author_id"].notna() & (stored["author_id"] != 0)]
    assert set(operators["author_id"]) == {12} and len(operators) == 4
    files = "".join(stored["files"].astype(str))
    assert "https://files.example.com/tg/photos/" in files


def test_a_whatsapp_zip_imports_with_the_zone_given(tmp_path):
    export = tmp_path / WHATSAPP_ZIP.name
    shutil.copy(WHATSAPP_ZIP, export)
    args = ["--operator", "Northwind Support=7", "--timezone", "Europe/Berlin", "--files-base-url", "https://f.example"]
    dry = _cli("run", str(export), "--dry-run", *args, cwd=tmp_path)
    assert "time zone Europe/Berlin" in dry.stdout, dry.stdout + dry.stderr
    proc = _cli("run", str(export), "--sandbox", "--no-progress", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Rows: sent 6 (of 6)" in proc.stdout
    again = _cli("run", str(export), "--sandbox", "--no-progress", *args, cwd=tmp_path)
    assert again.returncode == 0 and "Resuming" in again.stdout, again.stdout + again.stderr
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / f"sandbox-{export.stem}.db") as sb:
        stored, duplicates = sb.store.messages(), sb.store.duplicates()
    assert len(stored) == 6 and duplicates.empty


def test_a_group_chat_export_sets_the_connector_up_with_chat_group(tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from messengers import write_telegram_full
    finally:
        sys.path.remove(str(EXAMPLES))
    folder = tmp_path / "full"
    write_telegram_full(folder)
    args = ["--operator", "Northwind Support=12", "--files-base-url", "https://f.example", "--no-progress"]
    without = _cli("mapping", str(folder), "--operator", "Northwind Support=12", cwd=tmp_path)
    assert "Kettle owners" not in without.stdout  # groups only when asked
    proc = _cli("run", str(folder), "--sandbox", "--include-groups", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "sandbox-full.db") as sb:
        stored = sb.store.messages()
        connectors = sb.store.connectors()
    group = stored[stored["chat_id"].str.contains("7770001")]
    assert len(group) == 3 and group["b24_chat_id"].nunique() == 1  # one chat for the whole group
    assert bool(connectors.loc[connectors["connector"] == "bulkimport", "chat_group"].iloc[0])


def test_first_run_notes_on_the_command_line(tmp_path):
    csv = tmp_path / "export.csv"
    csv.write_text(
        "Support export\n\nChat;Client;Date;Message;Unused\n"
        "c1;u1;2024-01-02 10:00;hello;x\nc1;u1;2024-01-02 10:01;again;y\n",
        encoding="cp1251",
    )
    proc = _cli("run", str(csv), "--sandbox", "--line", "2", "--no-progress", cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode in (0, 1), out + proc.stderr
    assert "fields separated by 'semicolon'" in out  # what reading decided, said
    assert "rows above the header" in out and "Columns not used: 'Unused'" in out
    assert "Assumed (timezone-not-set)" in out
    assert "Estimate for a real portal:" in out
    assert "open line 2" in out  # --line is honoured in a sandbox run (not silently line 1)


def test_a_misspelt_operator_is_said(tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text("Chat,Client,Date,Message,Author\nc1,u1,2024-01-02 10:00,hi,Olga Smirnova\n",
                   encoding="utf-8")
    proc = _cli("validate", str(csv), "--operator", "Olga Smirnovaa=4", cwd=tmp_path)
    said = proc.stdout + proc.stderr
    assert "the operator 'Olga Smirnovaa' matches no author in the file" in said, said
