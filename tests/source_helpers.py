"""Helpers shared by the messenger-source tests: the example generator and a sandbox import."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pandas as pd

import bulkimport
from bulkimport.clock import for_sandbox
from bulkimport.portal.auth import Auth
from bulkimport.portal.client import Client
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR = "msg_import"
ICON = {"DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%2F%3E"}


def generator() -> Any:
    """data_examples/messengers.py as a module (the fixtures' generator, reused by the tests)."""
    name = "bulkimport_messenger_examples"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_examples" / "messengers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_into_sandbox(
    src: Any, tmp_path: Path, again: Any = None, **plan_kw: Any
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """load() → plan → send into a fresh sandbox (connector registered with CHAT_GROUP when the
    source needs it); returns (outcome frame, what the sandbox stored, the plan). ``again``: a
    function that loads the export anew — then a second run on the same journal must send nothing."""
    plan = bulkimport.plan(src, **plan_kw)
    with Sandbox(time_scale=200.0, seed=11) as portal:
        clock = for_sandbox(portal)
        auth = Auth(
            client_id=portal.client_id,
            client_secret=portal.client_secret,
            access_token=portal.access_token,
            refresh_token=portal.refresh_token,
            oauth_url=portal.oauth_url,
            token_file=tmp_path / "tokens.json",
            clock=clock,
            env={},
        )
        client = Client(portal.url, auth, clock=clock, timeout=(2.0, 10.0))
        params = {
            "ID": CONNECTOR,
            "NAME": "Messenger import",
            "ICON": ICON,
            "PLACEMENT_HANDLER": "https://example.invalid/handler",
        }
        if src.needs_chat_group:
            params["CHAT_GROUP"] = "Y"
        client.call("imconnector.register", params, retries=3)
        client.call("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": 1, "ACTIVE": 1}, retries=3)
        out = Sender(
            plan, line=1, connector=CONNECTOR, state=tmp_path / "journal.db", progress=False, client=client
        ).run()
        if again is not None:
            second = Sender(
                bulkimport.plan(again(), **plan_kw),
                line=1,
                connector=CONNECTOR,
                state=tmp_path / "journal.db",
                progress=False,
                client=client,
            ).run()
            assert second.summary.sent_this_run == 0
            assert (second.frame["import_status"] == out.frame["import_status"]).all()
        stored = portal.store.messages()
        assert portal.store.duplicates().empty
        assert portal.store.out_of_order().empty
    return out.frame, stored, plan


def assert_arrived_as_read(src: Any, frame: pd.DataFrame, stored: pd.DataFrame) -> None:
    """Every valid row arrived once, in source order per chat, on its side, with its text."""
    sent = frame[frame["import_status"] == "sent"]
    assert len(stored) == len(sent)
    by_id = stored.set_index("message_id")
    assert by_id.index.is_unique
    for chat, rows in sent.groupby("chat", sort=False):
        got = stored.loc[stored["chat_id"] == chat, "message_id"].tolist()
        assert got == rows.sort_values("date", kind="stable")["message_id"].tolist()
    for rid, row in sent.iterrows():
        got = by_id.loc[row["message_id"]]
        want_text = row["text"] if isinstance(row["text"], str) else None
        got_text = got["text"] if isinstance(got["text"], str) and got["text"] else None
        assert got_text == want_text, rid
        if row["side"] == "operator":
            assert int(got["author_id"]) == int(row["operator_id"]), rid
        else:
            assert pd.isna(got["author_id"]) and got["user_id"] == row["user_id"], rid
