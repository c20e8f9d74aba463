"""docs/codes.md and docs/commands.md are generated (catalogue, click commands) and must not be stale."""

from __future__ import annotations

from pathlib import Path

from bulkimport import codes
from bulkimport.docs import codes_markdown, commands_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_codes_md_is_up_to_date():
    on_disk = (ROOT / "docs" / "codes.md").read_text(encoding="utf-8")
    assert on_disk == codes_markdown(), "docs/codes.md is stale: run `python -m bulkimport.docs`"


def test_every_code_and_status_is_documented_with_its_hint():
    text = codes_markdown()
    for entry in codes.CATALOGUE.values():
        assert f"| `{entry.code}` |" in text
        assert " ".join(entry.hint.split()).replace("|", "\\|") in text
    for status in codes.STATUSES:
        assert f"| `{status}` |" in text


def test_commands_md_is_the_help_of_every_command():
    on_disk = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert on_disk == commands_markdown(), "docs/commands.md is stale: run `python -m bulkimport.docs`"


def test_commands_md_shows_every_command_and_option():
    from bulkimport.cli import main

    text = commands_markdown()
    for name, command in main.commands.items():
        assert f"## `bulkimport {name}`" in text
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, f"{name} {opt}"
