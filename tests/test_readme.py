"""The README documents every command and option, and its test command is the one CI runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest

from bulkimport.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "bulkimport") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = [(prefix, group)]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix} {name}")
        else:
            out.append((f"{prefix} {name}", cmd))
    return out


COMMANDS = _commands(main)
OPTIONS = sorted(
    {
        (path, opt)
        for path, cmd in COMMANDS
        for param in cmd.params
        if isinstance(param, click.Option)
        for opt in param.opts + param.secondary_opts
        if opt.startswith("--") and opt != "--help"
    }
)


@pytest.mark.parametrize(("path", "cmd"), COMMANDS[1:], ids=[p for p, _ in COMMANDS[1:]])
def test_every_command_is_in_the_readme(path, cmd):
    assert f"`{path}" in README, f"README does not mention `{path}`"


@pytest.mark.parametrize(("path", "option"), OPTIONS, ids=[f"{p} {o}" for p, o in OPTIONS])
def test_every_option_is_in_the_readme(path, option):
    assert re.search(rf"`{re.escape(option)}[` ,=]", README), f"README does not document {path} {option}"


def _first_code_block() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "the README has no bash code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_the_two_commands():
    assert _first_code_block() == [
        "pip install . && bulkimport run data_examples/history.xlsx"
        " --mapping data_examples/history_xlsx.toml --sandbox",
        'pip install -e ".[test]" && pytest -q',
    ]


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip().startswith("pip install -e")]
    assert ci_commands == [_first_code_block()[1]]


def test_every_runtime_dependency_is_explained():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    deps = [*project["dependencies"], *extras["test"], *extras["notebook"]]
    for dep in deps:
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0]
        assert f"`{name}`" in README, f"README does not say why {name} is a dependency"


def test_relative_links_point_at_files_that_exist():
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", README):
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_quick_start_example_files_exist():
    assert (ROOT / "data_examples" / "history.xlsx").exists()
    assert (ROOT / "data_examples" / "history_xlsx.toml").exists()


def _table_options() -> list[tuple[str, str]]:
    """(table, option) for every ``--option`` in the first cell of a README options table row;
    the table is ``sandbox`` for "option of `bulkimport sandbox`", else the commands' table."""
    out: list[tuple[str, str]] = []
    table = None
    for line in README.splitlines():
        if line.startswith("| option"):
            table = "sandbox" if "bulkimport sandbox" in line else "commands"
            continue
        if not line.startswith("|"):
            table = None
            continue
        if table is None or line.startswith("|---"):
            continue
        first = line.split("|")[1]
        out += [(table, opt) for opt in re.findall(r"`(--[a-z][a-z0-9-]*)", first)]
    return out


TABLE_OPTIONS = _table_options()


def test_the_readme_has_option_tables():
    assert {t for t, _ in TABLE_OPTIONS} == {"sandbox", "commands"}


@pytest.mark.parametrize(("table", "option"), TABLE_OPTIONS, ids=[f"{t} {o}" for t, o in TABLE_OPTIONS])
def test_every_option_of_the_readme_tables_exists(table, option):
    on = {path for path, opt in OPTIONS if opt == option}
    if table == "sandbox":
        assert "bulkimport sandbox" in on, f"the README's sandbox table lists {option}: no such option"
    else:
        assert on, f"the README's options table lists {option}: no command has it"


def test_no_option_is_listed_twice_in_the_commands_table():
    seen = [(t, o) for t, o in TABLE_OPTIONS if t == "commands"]
    twice = sorted({x for x in seen if seen.count(x) > 1})
    assert not twice, f"listed twice in the README's tables: {twice}"
