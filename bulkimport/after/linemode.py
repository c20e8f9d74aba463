"""Keep imported chats quiet: read the line's settings, warn, switch the noisy ones off and back.

An imported conversation starts a session like a new customer writing in, so the line's
automations run on it: a welcome message, a rating request, auto-close or no-answer texts, a CRM
lead, a place in an operator's queue. :func:`warnings` says which of them are on (preflight);
:func:`enter_import_mode` (``bulkimport setup --import-mode``) switches the message-producing ones
off with ``imopenlines.config.update`` and keeps their previous values in a JSON file (by default
beside the journal: ``<journal>.line-settings.json``); :func:`restore` (``setup --restore``) puts
exactly those values back and removes the file. CRM and the queue are only warned about: they are
the business's own set-up (the run sends ``disable_crm`` when the mapping asks, and finishing the
sessions empties the queue).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..portal.methods import CONFIG_GET_METHOD, CONFIG_UPDATE_METHOD

#: Message-producing settings and the value that switches each off (import mode changes these).
QUIET: dict[str, str] = {
    "WELCOME_MESSAGE": "N",
    "VOTE_MESSAGE": "N",
    "AGREEMENT_MESSAGE": "N",
    "WELCOME_BOT_ENABLE": "N",
    "USE_WELCOME_FORM": "N",
    "AUTO_CLOSE_RULE": "none",
    "CLOSE_RULE": "none",
    "NO_ANSWER_RULE": "none",
}
#: What each setting would do to every imported chat (the preflight warning).
EFFECT: dict[str, str] = {
    "WELCOME_MESSAGE": "a welcome message is added to every imported chat",
    "VOTE_MESSAGE": "a rating request is sent when each imported session is finished",
    "AGREEMENT_MESSAGE": "a consent (agreement) message is added to every imported chat",
    "WELCOME_BOT_ENABLE": "a chat-bot joins every imported chat",
    "USE_WELCOME_FORM": "a welcome form is added to every imported chat",
    "AUTO_CLOSE_RULE": "an auto-close text, form or bot message is added when a session auto-closes",
    "CLOSE_RULE": "a closing text, form or bot message is added when a session is finished",
    "NO_ANSWER_RULE": "a no-answer text, form or bot message is added when nobody answers",
}
_OFF = frozenset({"", "N", "none", "0", "None"})


def line_config(client: Any, line: int) -> dict[str, Any]:
    """The line's settings (``imopenlines.config.get``); ConfigError for a missing line."""
    found = client.call(CONFIG_GET_METHOD, {"CONFIG_ID": int(line), "WITH_QUEUE": "Y"})
    if not isinstance(found, Mapping):
        raise ConfigError(f"--line {line}: the portal has no open line with that id")
    return dict(found)


def _on(value: Any) -> bool:
    return value is not None and str(value) not in _OFF


def warnings(config: Mapping[str, Any]) -> list[str]:
    """One line per setting that would add messages, leads or work to imported chats."""
    out = [
        f"{key}={config[key]}: {EFFECT[key]} (`bulkimport setup --import-mode` switches it off)"
        for key in QUIET
        if key in config and _on(config[key])
    ]
    if _on(config.get("CRM")) and str(config.get("CRM_CREATE", "")) not in _OFF:
        out.append(
            f"CRM=Y, CRM_CREATE={config.get('CRM_CREATE')}: a CRM {config.get('CRM_CREATE')} may be "
            "created for every imported customer unless the messages carry disable_crm=Y (the mapping's "
            "disable_crm option, on by default; the plan's mapping shows it)"
        )
    if str(config.get("AUTO_CLOSE_TIME", "0")) not in _OFF and _on(config.get("AUTO_CLOSE_RULE")):
        out.append(
            f"AUTO_CLOSE_TIME={config['AUTO_CLOSE_TIME']}: imported sessions auto-close with a message"
        )
    queue = config.get("QUEUE")
    if queue:
        out.append(
            f"QUEUE ({len(queue)} operator(s)): every imported session lands in their queue until it is "
            "finished (the run finishes them unless --keep-open)"
        )
    return out


def settings_path(state: str | Path | None, given: str | Path | None = None) -> Path:
    """Where import mode keeps the line's previous values: ``given``, else beside the journal."""
    if given:
        return Path(given)
    if not state:
        raise ConfigError("setup --import-mode/--restore: pass --state (the journal) or --settings-file PATH")
    return Path(f"{state}.line-settings.json")


def enter_import_mode(client: Any, line: int, path: Path, *, portal: str | None = None) -> dict[str, str]:
    """Switch the message-producing settings off; keep their values in ``path``; returns the changes."""
    if path.exists():
        raise ConfigError(
            f"{path} already holds the line's settings from an earlier --import-mode: run "
            "`bulkimport setup --restore` first (overwriting it would lose the values to put back)"
        )
    config = line_config(client, line)
    previous = {k: config[k] for k in QUIET if k in config and str(config[k]) != QUIET[k]}
    record = {"portal": portal, "line": int(line), "previous": previous}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)  # kept before anything changes: a failed update can still be restored
    changes = {k: QUIET[k] for k in previous}
    if changes:
        _update(client, line, changes)
    return changes


def restore(client: Any, line: int, path: Path) -> dict[str, Any]:
    """Put back the values ``path`` kept, check them with config.get, remove the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: no saved line settings (was `bulkimport setup --import-mode` run?)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        previous = dict(record["previous"])
        saved_line = int(record["line"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a line-settings file of bulkimport") from None
    if saved_line != int(line):
        raise ConfigError(
            f"{path} holds the settings of line {saved_line}, not {line}: pass --line {saved_line}"
        )
    if previous:
        _update(client, line, previous)
        now = line_config(client, line)
        wrong = [k for k, v in previous.items() if now.get(k) != v]
        if wrong:
            raise ConfigError(f"line {line}: {', '.join(wrong)} did not take the saved value; {path} is kept")
    path.unlink()
    return previous


def _update(client: Any, line: int, params: Mapping[str, Any]) -> None:
    if client.call(CONFIG_UPDATE_METHOD, {"CONFIG_ID": int(line), "PARAMS": dict(params)}) is not True:
        raise ConfigError(f"line {line}: imopenlines.config.update did not accept the change")


__all__ = ["QUIET", "enter_import_mode", "line_config", "restore", "settings_path", "warnings"]
