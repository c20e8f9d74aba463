"""The external ids of every planned row, kept in the journal so that read-back needs no input file.

Table ``row_ids`` (owned here, created on first use): row key → conversation, position, external
``chat.id``, ``user.id`` and ``message.id`` as the plan sends them. The sender records it at the
start of every run (one ``INSERT OR REPLACE`` per row), so ``bulkimport verify STATE`` and the
settling of unknown rows read what a row was sent as from the journal alone — the journal's meta
names the input file but not the mapping, sheet or options that made the plan.

Table ``row_identity`` (owned here): row key → the message's time (unix seconds) and a digest of
its body without the time (text, files, operator). Without a message-id column a row is known by
its chat, customer, time and occurrence (:data:`bulkimport.validation.ID_SCHEME`, kept in the
journal's meta ``id_scheme``); a journal written before has no such table (its generated ids hashed
the content: ``bi-``). The ``row_ids.mid`` of a row is the id it is (or was) sent with: a run sends
every journalled row with that id (:func:`adopt`), whatever the file's generated id is now.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..codes import MISSING
from ..journal import Journal, attached
from ..planning import Plan

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS row_ids (rid TEXT PRIMARY KEY, conv INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, chat TEXT NOT NULL, user TEXT NOT NULL, mid TEXT NOT NULL, digest TEXT)"
)


#: WITHOUT ROWID and a 12-digit body hash (pairing within one chat): the table costs a run's start
#: ~30 bytes per row, not twice that with a separate key index.
_IDENTITY = ("CREATE TABLE IF NOT EXISTS row_identity (rid TEXT PRIMARY KEY, date INTEGER, body TEXT) "
             "WITHOUT ROWID")


def _id(item: Any, block: str) -> str:
    """``item[block]["id"]`` as text, tolerating a malformed item (the portal rejects it anyway)."""
    value = item.get(block) if isinstance(item, dict) else None
    return str(value.get("id")) if isinstance(value, dict) else str(value)


def digest(item: Any) -> str:
    """A short hash of what a message says (text, files, date, operator): changed → changed content."""
    import hashlib
    import json

    m = item.get("message") if isinstance(item, dict) else None
    what = {k: m.get(k) for k in ("text", "files", "date", "user_id")} if isinstance(m, dict) else str(m)
    text = json.dumps(what, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def body(item: Any) -> str:
    """A short hash of a message's body without its time (text, files, operator): a row whose time
    was edited is recognised by it in the report."""
    import hashlib
    import json

    m = item.get("message") if isinstance(item, dict) else None
    what = {k: m.get(k) for k in ("text", "files", "user_id")} if isinstance(m, dict) else str(m)
    text = json.dumps(what, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _date(item: Any) -> int | None:
    m = item.get("message") if isinstance(item, dict) else None
    value = m.get("date") if isinstance(m, dict) else None
    return int(value) if isinstance(value, int) else None


#: ``planned`` rows: (rid, conv, seq, chat, user, mid, digest, date, body).
Planned = tuple[str, int, int, str, str, str, str, int | None, str]


def planned(plan: Plan) -> list[Planned]:
    """``(rid, conv, seq, chat, user, mid, digest, date, body)`` of every planned row, in plan order."""
    from ..journal import row_key
    from ..planning import Messages

    out: list[Planned] = []
    for ci, conv in enumerate(plan.conversations):
        if isinstance(conv.messages, Messages):  # from the plan's columns: the same values, faster
            out.extend(_from_columns(conv, ci))
            continue
        for seq, (rid, item) in enumerate(zip(conv.rows, conv.messages, strict=True)):
            out.append((row_key(rid), ci, seq, _id(item, "chat"), _id(item, "user"), _id(item, "message"),
                        digest(item), _date(item), body(item)))
    return out


def _from_columns(conv: Any, ci: int) -> list[Planned]:
    """:func:`planned` of one conversation read from its Messages' columns instead of building each
    item: the JSON :func:`digest` and :func:`body` hash is spelled as ``json.dumps`` spells the
    same dict (sorted keys, default separators) — tests/test_bigfile.py compares the two."""
    import hashlib
    import json

    from ..journal import row_key

    msgs = conv.messages
    cols, a = msgs._cols, msgs._start
    chat = str(cols.chats[cols.kcodes[a]].get("id"))
    files, ops = cols.files, cols.ops

    encode = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode
    string = json.encoder.encode_basestring  # what the encoder writes a str as (ensure_ascii=False)

    def text_of(v: Any) -> str:
        if v is None:
            return "null"
        if type(v) is str:
            return string(v)
        return str(v) if type(v) is int else encode(v)

    out: list[Planned] = []
    for seq, rid in enumerate(conv.rows):
        j = a + seq
        f = text_of(None if files is None else files[j])
        t = text_of(cols.text[j])
        u = text_of(None if ops is None else ops[j])
        date = cols.date[j]
        tail = f'"files": {f}, "text": {t}, "user_id": {u}}}'
        whole = f'{{"date": {text_of(date)}, {tail}'
        out.append((row_key(rid), ci, seq, chat, str(cols.users[cols.ucodes[j]].get("id")), str(cols.mid[j]),
                    hashlib.sha256(whole.encode()).hexdigest()[:20],
                    date if isinstance(date, int) else None,
                    hashlib.sha256(("{" + tail).encode()).hexdigest()[:12]))
    return out


def ensure(journal: Journal) -> None:
    """Create the tables if this journal has none yet."""
    journal.execute(_SCHEMA)
    journal.execute(_IDENTITY)


def adopt(journal: Journal, plan: Plan, rows: list[Planned] | None = None) -> list[Planned]:
    """Give every planned row the message id the journal recorded for it (the id it was or will be
    sent with), where the file now makes another: ids generated by an earlier scheme, or ones a
    re-run gave a new row so as not to reuse a sent row's id. Returns :func:`planned` with them."""
    from ..planning import set_message_ids

    rows = planned(plan) if rows is None else rows
    try:
        known = {str(r): (str(c), str(u), str(m)) for r, c, u, m in
                 journal.query("SELECT rid, chat, user, mid FROM row_ids")}
    except sqlite3.Error:
        return rows
    if not known:
        return rows
    ids: dict[int, dict[int, str]] = {}
    for k, r in enumerate(rows):
        was = known.get(r[0])
        if was is not None and was[2] != r[5] and was[:2] == (r[3], r[4]):
            ids.setdefault(r[1], {})[r[2]] = was[2]
            rows[k] = (*r[:5], was[2], *r[6:])  # type: ignore[assignment]
    for conv, changed in ids.items():
        set_message_ids(plan.conversations[conv], changed)
    return rows


def record(journal: Journal, plan: Plan, keep: frozenset[str] = frozenset()) -> int:
    """Store the external ids, content digest, time and body of every planned row (replacing a
    previous run's; the rows in ``keep`` — sent, content changed since — keep the digest of what
    was sent). The plan's rows first take the ids the journal holds for them (:func:`adopt`)."""
    from ..validation import ID_SCHEME

    ensure(journal)
    meta = journal.meta()
    if _unchanged_since_recorded(meta, ID_SCHEME):
        return 0
    base = planned(plan)
    rows = adopt(journal, plan, list(base))
    keep = keep | {str(r[0]) for r in journal.query(
        "SELECT rid FROM rows WHERE code = 'changed-after-sent' AND status = 'sent'")}
    journal.executemany(
        "INSERT OR REPLACE INTO row_ids (rid, conv, seq, chat, user, mid, digest) VALUES "
        "(?, ?, ?, ?, ?, ?, COALESCE((SELECT digest FROM row_ids WHERE rid = ? AND ? = 1), ?))",
        [(*r[:6], r[0], int(r[0] in keep), r[6]) for r in rows],
    )
    # an upsert that writes only what differs: a resumed run rewrites no page of an unchanged table
    journal.executemany(
        "INSERT INTO row_identity (rid, date, body) VALUES (?, ?, ?) ON CONFLICT (rid) DO UPDATE SET "
        "date = excluded.date, body = CASE WHEN ? THEN row_identity.body ELSE excluded.body END "
        "WHERE row_identity.date IS NOT excluded.date OR (NOT ? AND row_identity.body IS NOT excluded.body)",
        [(r[0], r[7], r[8], k, k) for r in rows for k in (int(r[0] in keep),)],
    )
    journal.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('id_scheme', ?)", (ID_SCHEME,))
    adopted = sum(1 for r, b in zip(rows, base, strict=True) if r[5] != b[5])  # ids the file did not give
    journal.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [("ids_fingerprint", meta.get("fingerprint", "")),
                         ("ids_adopted", str(adopted))])
    return len(rows)


def record_stored(journal: Journal, plan: Any) -> int:
    """:func:`record` for a plan stored on disk (:mod:`bulkimport.planstore`): the same tables,
    copied in SQL from the identities the store kept per row. Such a plan is never matched to an
    edited file (the sender refuses that), so every row keeps the id the store gives it."""
    from ..validation import ID_SCHEME

    ensure(journal)
    meta = journal.meta()
    if _unchanged_since_recorded(meta, ID_SCHEME):
        return 0
    with attached(journal, plan.store.path, "plan") as cur:
        join = ("FROM plan.convs c JOIN plan.msgs m ON m.bucket = c.bucket AND m.bconv = c.bconv "
                "ORDER BY c.conv, m.seq")
        cur.execute("INSERT OR REPLACE INTO row_ids (rid, conv, seq, chat, user, mid, digest) SELECT "
                    f"CAST(m.rid AS TEXT), c.conv, m.seq, c.key, m.uid, m.mid, m.digest {join}")
        done = cur.rowcount
        cur.execute("INSERT OR REPLACE INTO row_identity (rid, date, body) SELECT CAST(m.rid AS TEXT), "
                    f"m.date, m.body {join}")
        cur.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [("id_scheme", ID_SCHEME), ("ids_fingerprint", meta.get("fingerprint", "")),
                         ("ids_adopted", "0")])
    return int(done)


def _unchanged_since_recorded(meta: dict[str, str], scheme: str) -> bool:
    """True when the tables already hold exactly this plan's rows: the journal is bound to the same
    plan (fingerprint) they were recorded for, under the same id scheme, and no row's id differs
    from the file's — then a resumed run skips re-recording every row (at 10M rows, minutes and
    gigabytes of start-up). Any edit rebinds the journal to a new fingerprint: recorded again."""
    return (
        bool(meta.get("fingerprint"))
        and meta.get("ids_fingerprint") == meta.get("fingerprint")
        and meta.get("id_scheme") == scheme
        and meta.get("ids_adopted") == "0"
    )


class JournalIds:
    """``of(conv, seq)`` → the external (chat, user, message) ids a journal recorded."""

    def __init__(self, journal: Journal) -> None:
        try:
            rows = journal.query("SELECT conv, seq, chat, user, mid FROM row_ids")
        except sqlite3.Error:  # a journal written before read-back existed has no table
            rows = []
        self.ids = {(int(c), int(s)): (str(ch), str(u), str(m)) for c, s, ch, u, m in rows}

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, conv: int, seq: int) -> tuple[str, str, str]:
        """External (chat.id, user.id, message.id) of the row at ``conv``, ``seq``."""
        return self.ids[(conv, seq)]


def missing_count(journal: Journal) -> int:
    """Rows verify marked ``missing`` (the next run sends them again)."""
    return int(journal.query("SELECT COUNT(*) FROM rows WHERE status = ?", (MISSING,))[0][0])


__all__ = [
    "JournalIds", "Planned", "adopt", "body", "digest", "ensure", "missing_count", "planned", "record",
    "record_stored",
]
