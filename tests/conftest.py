"""Shared fixtures: a started sandbox portal on a fast virtual clock, and small REST helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bulkimport.sandbox import Sandbox

#: Virtual seconds per real second in tests: a 0.7 s simulated call sleeps 7 ms; tokens live 36 s.
FAST = 100.0

ICON = {"DATA_IMAGE": "data:image/svg+xml,%3Csvg%20xmlns%3D%22http://www.w3.org/2000/svg%22/%3E"}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started sandbox with a fast time scale (limits on, default lines)."""
    with Sandbox(time_scale=FAST) as portal:
        yield portal


def call(portal: Sandbox, method: str, token: str | None = None, **params: Any) -> requests.Response:
    """POST a JSON call with the portal's initial access token (or ``token``)."""
    body = dict(params)
    body["auth"] = token if token is not None else portal.access_token
    return requests.post(portal.rest_url + method, json=body, timeout=30)


def register(portal: Sandbox, connector: str = "hist_import", line: int = 1, chat_group: bool = False) -> str:
    """Register and activate a connector on a line; returns its id."""
    r = call(
        portal,
        "imconnector.register",
        ID=connector,
        NAME="History import",
        ICON=ICON,
        PLACEMENT_HANDLER="https://example.com/settings",
        CHAT_GROUP=chat_group,
    )
    assert r.status_code == 200 and r.json()["result"] == {"result": True}, r.text
    r = call(portal, "imconnector.activate", CONNECTOR=connector, LINE=line, ACTIVE=1)
    assert r.status_code == 200 and r.json()["result"] is True, r.text
    return connector


def msg(
    i: int,
    chat: str = "c1",
    user: str = "u1",
    date: int | None = None,
    *,
    u: dict[str, Any] | None = None,
    m: dict[str, Any] | None = None,
    c: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One MESSAGES item; ``u``/``m``/``c`` add fields to its user/message/chat blocks."""
    return {
        "user": {"id": user, "name": "Ann", **(u or {})},
        "message": {
            "id": f"{chat}-m{i}",
            "date": 1_700_000_000 + i if date is None else date,
            "text": f"text {i}",
            **(m or {}),
        },
        "chat": {"id": chat, **(c or {})},
    }


@pytest.fixture
def connector(sandbox: Sandbox) -> str:
    """A connector registered and active on line 1 of ``sandbox``."""
    return register(sandbox)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No BITRIX24_* settings leak in from the machine; tokens go to a temporary file (test files
    that talk to a portal use it for every test: ``pytestmark = pytest.mark.usefixtures(...)``)."""
    for name in list(os.environ):
        if name.startswith("BITRIX24_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BITRIX24_TOKEN_FILE", str(tmp_path / "tokens.json"))
