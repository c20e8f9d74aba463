"""``bulkimport sandbox``: serve the local sandbox portal, or (with ``--show``) inspect what it received.

``bulkimport sandbox`` serves until Ctrl-C and prints the portal URL and the credentials of the
sandbox's own pre-installed (fake) application. ``bulkimport sandbox --db PATH --show messages``
prints what a persistent sandbox database holds, without starting a server.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from .faults import KINDS, SYSTEM_ERRORS, parse_spec

#: Leaky bucket (X, Y) per plan (reference §3); the operating limit is 480 s on both.
PLANS = {"standard": (50.0, 2.0), "enterprise": (250.0, 5.0)}

SHOW = ("counts", "lines", "connectors", "chats", "users", "sessions", "messages", "duplicates",
        "out-of-order", "chat-messages", "downloads", "lost")


def _show(db: str, what: str, chat: str | None, line: int | None, fmt: str) -> None:
    from .store import Store

    if not Path(db).exists():
        raise click.BadParameter(f"{db} does not exist; pass the --db of a sandbox that ran",
                                 param_hint="--db")
    store = Store(db)
    try:
        if what == "counts":
            counts = store.counts()
            if fmt == "json":
                click.echo(json.dumps(counts, indent=2))
            else:
                for key, value in counts.items():
                    click.echo(f"{key:20} {value}")
            return
        if what == "messages":
            frame = store.messages(chat_id=chat, line=line)
        elif what == "out-of-order":
            frame = store.out_of_order()
        elif what == "chat-messages":
            frame = store.chat_messages()
        else:
            frame = getattr(store, what)()
        if fmt == "csv":
            click.echo(frame.to_csv(index=False), nl=False)
        elif fmt == "json":
            click.echo(frame.to_json(orient="records", force_ascii=False, indent=2))
        elif frame.empty:
            click.echo(f"(no {what})")
        elif what == "messages":
            click.echo(_readable_messages(frame))
        else:
            click.echo(_with_times(frame).to_string(index=False, max_colwidth=60))
    finally:
        store.close()


def _readable_messages(frame: Any) -> str:
    """One line per message as a person reads a chat: time (UTC, to the second), chat, side and
    author, a text excerpt and the message id (``--format csv|json`` gives every column)."""
    from datetime import UTC, datetime

    import pandas as pd

    lines = ["time (UTC)           chat                side                 text  (id)"]
    for row in frame.itertuples(index=False):
        dated = not pd.isna(row.date)
        when = datetime.fromtimestamp(int(row.date), UTC).strftime("%Y-%m-%d %H:%M:%S") if dated else "?"
        if pd.isna(row.author_id):  # no message.user_id: the customer wrote it
            side = f"customer {row.user_id}"
        elif int(row.author_id) == 0:  # message.user_id 0: an operator's reply as the system user
            side = "operator (system)"
        else:
            side = f"operator {int(row.author_id)}"
        text = " ".join(str(row.text).split()) if isinstance(row.text, str) else ""
        files = "" if str(row.files) in ("[]", "None", "nan") else " [files]"
        excerpt = text if len(text) <= 70 else text[:69] + "…"
        gone = "[deleted] " if not pd.isna(getattr(row, "deleted", None)) else ""
        shown = f"{gone}{excerpt}{files}"
        lines.append(f"{when}  chat {row.chat_id:<14} {side:<20} {shown}  (id {row.message_id})")
    return "\n".join(lines)


def _count(count: int, noun: str) -> str:
    """``"1 message"``, ``"3 messages"`` (the sandbox shares no code with the client)."""
    return f"{count:,} {noun if count == 1 else noun + 's'}"


#: columns of the sandbox's tables that hold unix times (shown as UTC times in the table format)
_TIME_COLUMNS = ("created", "received", "updated", "deleted", "finished", "started", "lost_at", "at")


def _with_times(frame: Any) -> Any:
    """``frame`` with its unix-time columns as ``YYYY-MM-DD HH:MM:SS UTC`` text (table format only)."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if column in _TIME_COLUMNS and pd.api.types.is_numeric_dtype(out[column]):
            when = pd.to_datetime(out[column], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S UTC")
            out[column] = when.where(out[column].notna(), "")
    return out


def _lose(db: str, n: int, seed: int, chat: str | None, fmt: str) -> None:
    """Delete ``n`` stored messages silently (drawn with ``seed``), then print which."""
    from .store import Store

    if not Path(db).exists():
        raise click.BadParameter(f"{db} does not exist; pass the --db of a sandbox that ran",
                                 param_hint="--db")
    store = Store(db)
    try:
        frame = store.lose_messages(n, seed=seed, chat_id=chat)
    finally:
        store.close()
    if fmt == "json":
        click.echo(frame.to_json(orient="records", force_ascii=False, indent=2))
    elif fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    else:
        click.echo(f"Lost {_count(len(frame), 'message')} silently (see --show lost):")
        if not frame.empty:
            click.echo(frame[["seq", "chat_id", "message_id", "b24_chat_id"]].to_string(index=False))


def _write_credentials(path: str, credentials: dict[str, Any]) -> None:
    """Write the sandbox's credentials atomically with mode 0600 (they are secrets, if fake ones)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(credentials, fh, indent=2)
    os.replace(tmp, target)


@click.command(epilog=(
    "Fault specs are KIND[:RATE[:COUNT]][@method,method]; KIND is one of "
    + ", ".join(k for k in KINDS if k not in SYSTEM_ERRORS)
    + ", or a Bitrix24 error code (" + ", ".join(SYSTEM_ERRORS) + ") which is then answered.\n\n"
    "\b\nExamples:\n"
    "  bulkimport sandbox --time-scale 60 --fault 503:0.1\n"
    "  bulkimport sandbox --db portal.db --fault drop-after:1:2@imconnector.send.messages\n"
    "  bulkimport sandbox --db portal.db --show messages --chat 12345\n"
    "  bulkimport sandbox --db portal.db --lose 3 --seed 7\n\n"
    "See docs/sandbox.md."))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback).")
@click.option("--port", default=0, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite file keeping the portal's state across restarts (default: a temporary file).")
@click.option("--time-scale", default=1.0, show_default=True, type=float,
              help="Virtual portal seconds per real second (100: an hour of limits in 36 s).")
@click.option("--token-lifetime", default=3600.0, show_default=True, type=float,
              help="Access token lifetime in virtual seconds.")
@click.option("--no-limits", is_flag=True, help="Disable the leaky bucket and the operating-time limit.")
@click.option("--plan", "plan_name", type=click.Choice(sorted(PLANS)), default="standard", show_default=True,
              help="Leaky bucket of the plan: standard X=50, Y=2/s; enterprise X=250, Y=5/s.")
@click.option("--cost-per-call", default=0.7, show_default=True, type=float,
              help="Simulated server seconds per executed method (0 for client-overhead benchmarks).")
@click.option("--cost-per-message", default=0.5, show_default=True, type=float,
              help="Simulated server seconds per message of imconnector.*.messages.")
@click.option("--max-messages", default=100, show_default=True, type=int,
              help="Most MESSAGES per imconnector.*.messages call (0: no limit).")
@click.option("--fault", "faults", multiple=True, metavar="SPEC", help="Inject a fault (repeatable).")
@click.option("--fault-delay", default=10.0, show_default=True, type=float,
              help="Virtual seconds a 'slow' fault holds the answer.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the fault injection.")
@click.option("--credentials", "credentials_file", type=click.Path(dir_okay=False), default=None,
              help="Also write URL and credentials as JSON to this file (mode 0600).")
@click.option("--show", type=click.Choice(SHOW), default=None,
              help="Do not serve: print what the --db portal received, then exit.")
@click.option("--lose", type=click.IntRange(min=0), default=None, metavar="N",
              help="Do not serve: silently delete N stored messages of the --db portal (drawn with --seed; "
                   "--chat: only that external chat), as if the portal lost them; print which, then exit.")
@click.option("--chat", default=None, help="With --show messages or --lose: only this external chat id.")
@click.option("--line", default=None, type=int, help="With --show messages: only this open line.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format of --show.")
def sandbox(host: str, port: int, db: str | None, time_scale: float, token_lifetime: float, no_limits: bool,
            plan_name: str, cost_per_call: float, cost_per_message: float, max_messages: int,
            faults: tuple[str, ...], fault_delay: float, seed: int, credentials_file: str | None,
            show: str | None, lose: int | None, chat: str | None, line: int | None, fmt: str) -> None:
    """Run the local sandbox Bitrix24 portal until Ctrl-C, inspect one with --show, or make it lose
    messages with --lose."""
    if lose is not None:
        if db is None:
            raise click.UsageError("--lose needs --db PATH (the database of the sandbox to damage)")
        _lose(db, lose, seed, chat, fmt)
        return
    if show is not None:
        if db is None:
            raise click.UsageError("--show needs --db PATH (the database of the sandbox to inspect)")
        _show(db, show, chat, line, fmt)
        return
    specs: list[dict[str, Any]] = []
    for spec in faults:
        try:
            specs.append(parse_spec(spec))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fault") from None
    if time_scale <= 0:
        raise click.BadParameter("must be positive", param_hint="--time-scale")
    if cost_per_call < 0 or cost_per_message < 0:
        raise click.BadParameter("costs cannot be negative", param_hint="--cost-per-call/--cost-per-message")
    from . import Sandbox

    bucket_size, drain_rate = PLANS[plan_name]
    portal = Sandbox(db=db, host=host, port=port, time_scale=time_scale, token_lifetime=token_lifetime,
                     bucket_size=bucket_size, drain_rate=drain_rate, limits=not no_limits, seed=seed,
                     max_messages=max_messages or None, cost_per_call=cost_per_call,
                     cost_per_message=cost_per_message)
    for parsed in specs:
        portal.faults.add(delay=fault_delay, **parsed)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _stop)
    portal.start()
    try:
        creds = portal.credentials()
        click.echo(f"Sandbox Bitrix24 portal: {creds['url']}")
        click.echo(f"  REST endpoint:   {creds['rest_url']}")
        click.echo(f"  OAuth server:    {creds['oauth_url']}")
        click.echo(f"  client_id:       {creds['client_id']}")
        click.echo(f"  client_secret:   {creds['client_secret']}")
        click.echo(f"  access_token:    {creds['access_token']}")
        click.echo(f"  refresh_token:   {creds['refresh_token']}")
        click.echo(f"  member_id:       {creds['member_id']}")
        click.echo(f"  webhook:         {creds['webhook_url']}")
        click.echo(f"  database:        {portal.db_path}{'' if db else ' (temporary)'}")
        click.echo(f"  time scale:      {time_scale:g}; limits {'off' if no_limits else plan_name}"
                   + (f"; faults: {', '.join(faults)}" if faults else ""))
        if credentials_file:
            _write_credentials(credentials_file, creds)
            click.echo(f"  credentials:     {credentials_file}")
        click.echo("Serving; press Ctrl-C to stop.", nl=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        counts = portal.store.counts()
        portal.stop()
        got = f"{_count(counts['messages'], 'message')} in {_count(counts['chats'], 'chat')}"
        click.echo(f"Stopped. Received {got}.")
