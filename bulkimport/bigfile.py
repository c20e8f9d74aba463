"""A big delimited-text input planned within bounded memory, into a stored plan (issue #19).

A CSV of millions of rows is never held whole. It is read in chunks; each row goes, by a hash of
its conversation key (chat.id, else user.id), to one of ``parts`` spool files beside the journal,
so that every part holds whole conversations; each part is then planned in memory by the same
:func:`bulkimport.plan` as a small file (validation, customers, ids, order inside a conversation:
identical rules) and written to the stored plan (:mod:`bulkimport.planstore`), which finally puts
every conversation in send order. Memory is that of one part (~400,000 rows), whatever the size.

What a part cannot see: the few checks that compare rows of *different* conversations look within
their part only — ``user-id-merged`` (one user.id with two phones in two chats of two parts) and
``operator-unmapped`` (said once per part, an author writing to one customer in each of two parts
is not suspected). The authors table adds the parts' figures up (a customer writing in chats of
two parts counts twice in ``customers``).

The stored plan is a cache keyed by its *recipe*: the input's SHA-256 and size, the mapping, the
reading options and bulkimport's version. The same file and options again (a resume, or the run
after a ``--dry-run``) read it back in seconds instead of planning again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import planstore
from .codes import count_of
from .planning import plan as build_plan
from .settings import ENV_STORED_PLAN_ROWS
from .version import __version__

#: Inputs with at least this many rows (estimated from the file's size) get a stored plan.
DEFAULT_ROWS = 2_000_000
#: Rows of one part (planned in memory at once): ~0.5 GiB at the peak.
PART_ROWS = 400_000
#: Records read from the file at once.
CHUNK_ROWS = 200_000


def threshold(env: Any = None) -> int:
    """Rows from which an input gets a stored plan (``BULKIMPORT_STORED_PLAN_ROWS`` overrides)."""
    env = os.environ if env is None else env
    raw = env.get(ENV_STORED_PLAN_ROWS)
    if raw is None or not str(raw).strip():
        return DEFAULT_ROWS
    try:
        return max(1, int(str(raw).strip()))
    except ValueError:
        from .errors import ConfigError

        raise ConfigError(f"{ENV_STORED_PLAN_ROWS}={raw!r}: give a whole number of rows") from None


def wanted(path: Path, kind: str) -> bool:
    """Whether the input at ``path`` (``kind`` from sources.detect) gets a stored plan: a CSV/TSV/TXT
    file of at least :func:`threshold` rows. (An xlsx sheet holds at most 1,048,575 rows, and a
    messenger export one chat: both are planned in memory.)"""
    if kind != "csv" or path.suffix.lower() == ".xlsx":
        return False
    from .sources.chunked import estimated_rows

    rows, size = estimated_rows(path), path.stat().st_size
    if rows >= threshold():
        return True
    # an estimate from long first rows can be far under: count a big file's lines (~0.3 s per GB)
    return size >= 64 << 20 and _lines(path) >= threshold()


def _lines(path: Path, block: int = 8 << 20) -> int:
    """The file's number of lines (newlines), read once without hashing."""
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(block), b""))


def _digest_and_lines(path: Path, block: int = 8 << 20) -> tuple[str, int]:
    """SHA-256 of the file's bytes (~1–3 s per GB: a resumed run proves the input is the same) and
    its number of lines (what the parts are counted from, exactly: an estimate from the first MiB
    can be ten times off when the first rows are long)."""
    h = hashlib.sha256()
    lines = 0
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
            lines += chunk.count(b"\n")
    return h.hexdigest(), lines


def recipe(source: Path, mapping: Any, reading: dict[str, Any], chunk_size: int, digest: str) -> str:
    """What makes the stored plan: change any of it and the input is planned again."""
    what = {
        "schema": planstore.SCHEMA_VERSION, "version": __version__, "sha256": digest,
        "size": source.stat().st_size, "mapping": mapping.to_dict(), "reading": reading,
        "chunk_size": chunk_size,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def cached(store_path: Path, made_by: str) -> planstore.PlanStore | None:
    """The complete stored plan at ``store_path`` if it was made by ``made_by`` (a recipe)."""
    store = planstore.PlanStore.open(store_path)
    if store is not None and store.meta().get("recipe") != made_by:
        store.close()
        return None
    return store


def build(
    chunks: Any, mapping: Any, store_path: Path, made_by: str, *, chunk_size: int = 50,
    notify: Callable[[str], None] = lambda _t: None, progress: Any = None, lines: int | None = None,
) -> planstore.PlanStore:
    """Plan every row of ``chunks`` (a :class:`~bulkimport.sources.chunked.TextChunks`) into a new
    stored plan at ``store_path``: split into parts of whole conversations, plan each part."""
    from .sources.chunked import estimated_rows

    rows = estimated_rows(Path(chunks.path)) if lines is None else max(0, lines - 1)  # less the header
    parts = max(1, math.ceil(rows / PART_ROWS))
    spool = store_path.with_name(store_path.name + ".spool")
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir()
    started = time.monotonic()
    notify(f"Planning {chunks.attrs.get('source')} (about {count_of(rows, 'row')}) in "
           f"{count_of(parts, 'part')} of whole conversations, on disk beside the journal …")
    new = store_path.with_name(store_path.name + ".new")
    store: planstore.PlanStore | None = None
    try:
        read, dayfirst = _split(chunks, mapping, spool, parts, _bar(progress, rows, "reading"))
        if dayfirst is not None:  # what planning the file whole would decide, for every part
            mapping = mapping.with_options(dayfirst=dayfirst)
        store = planstore.PlanStore.create(new)
        totals = _plan_parts(store, spool, parts, chunks.attrs, mapping, chunk_size,
                             _bar(progress, read, "planning"))
    except BaseException:  # a bad row's refusal, Ctrl-C, a full disk: no half-written plan is left
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
        new.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    totals["authors"] = _authors_json(totals.pop("authors_parts"))
    store.finish({"recipe": made_by,
                  "counts": json.dumps(totals["counts"]), "authors": totals["authors"],
                  "crm": "1" if mapping.options.get("disable_crm", True) else "0"})
    store.close()
    os.replace(store.path, store_path)  # a complete file, or none
    notify(f"Planned {count_of(totals['counts']['rows'], 'row')} in {time.monotonic() - started:.0f} s.")
    opened = planstore.PlanStore.open(store_path)
    assert opened is not None
    return opened


def _bar(progress: Any, total: int, what: str) -> Any:
    """A start-up bar (tqdm.auto: a widget in Jupyter, a bar on a terminal), None when off."""
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="row", unit_scale=True, disable=None, leave=False)


def _split(chunks: Any, mapping: Any, spool: Path, parts: int, bar: Any) -> tuple[int, bool | None]:
    """Rows of ``chunks`` into ``parts`` spool files by a hash of their conversation key (pickled
    frames: written and read back by this process only, then deleted). Returns the rows read and
    the date order the whole file decides (see _DateOrder)."""
    from .validation import conversation_keys

    files = [(spool / f"{b}.pkl").open("wb") for b in range(parts)]
    read = 0
    evidence = _DateOrder(chunks, mapping)
    try:
        for chunk in chunks:
            evidence.add(chunk)
            keys = conversation_keys(chunk, mapping).fillna("")
            part = pd.util.hash_pandas_object(keys, index=False).to_numpy() % np.uint64(parts)
            for b in np.unique(part).tolist():
                pickle.dump(chunk[part == b], files[b], protocol=pickle.HIGHEST_PROTOCOL)
            read += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        for fh in files:
            fh.close()
        if bar is not None:
            bar.close()
    return read, evidence.decided()


class _DateOrder:
    """Whether D/M/Y dates are day-first, decided from the whole file as planning it whole would
    (:func:`bulkimport.values.dmy_evidence`), for a mapping that does not say: each part must
    read ``03/04/2024`` alike, whatever dates it happens to hold."""

    def __init__(self, chunks: Any, mapping: Any) -> None:
        column = mapping.columns.get("message.date")
        column = column[0] if isinstance(column, list) else column
        self.column = column if mapping.options.get("dayfirst") is None else None
        self.day = self.month = False

    def add(self, chunk: pd.DataFrame) -> None:
        if self.column is not None and self.column in chunk and not (self.day and self.month):
            from .values import dmy_evidence

            day, month = dmy_evidence(chunk[self.column])
            self.day, self.month = self.day or day, self.month or month

    def decided(self) -> bool | None:
        """True: day-first, False: month-first, None: nothing decides (or the mapping did)."""
        return None if self.day == self.month else self.day


def _pieces(path: Path) -> Iterator[pd.DataFrame]:
    with path.open("rb") as fh:
        while True:
            try:
                yield pickle.load(fh)  # noqa: S301 (this process's own spool file, see _split)
            except EOFError:
                return


def _plan_parts(
    store: planstore.PlanStore, spool: Path, parts: int, attrs: dict[str, Any], mapping: Any,
    chunk_size: int, bar: Any,
) -> dict[str, Any]:
    """Plan each part in memory and store it; the counts and the authors' figures added up."""
    from .after.identities import planned
    from .validation import authors, check_side_operators, prepare

    counts: dict[str, int] = {}
    tables: list[pd.DataFrame] = []
    said: set[str] = set()  # authors an operator-unmapped warning named in an earlier part
    for b in range(parts):
        pieces = list(_pieces(spool / f"{b}.pkl"))
        (spool / f"{b}.pkl").unlink()
        if not pieces:
            continue
        df = pd.concat(pieces) if len(pieces) > 1 else pieces[0]
        del pieces
        df.attrs.update({k: v for k, v in attrs.items() if k != "footer_rows"})
        prep = prepare(df, mapping)
        part = build_plan(df, mapping, chunk_size, prepared=prep)
        check_side_operators(part.failures, mapping, str(attrs.get("source", "")))
        part.failures = _once_per_author(part.failures, said)
        part.counts["warnings"] = int((part.failures["level"] == "warning").sum())
        store.write_bucket(b, part, planned(part))
        store.write_failures(part.failures)
        tables.append(authors(df, mapping, prepared=prep))
        for k, v in part.counts.items():
            counts[k] = counts.get(k, 0) + int(v)
        if bar is not None:
            bar.update(len(df))
        del df, prep, part
    if bar is not None:
        bar.close()
    return {"counts": counts, "authors_parts": tables}


def _once_per_author(failures: pd.DataFrame, said: set[str]) -> pd.DataFrame:
    """``operator-unmapped`` once per author over all parts (each part names an author on its first
    row there), as for a file planned whole."""
    hit = failures["code"] == "operator-unmapped"
    if not bool(hit.any()):
        return failures
    who = failures["value"].astype(str).str.casefold()
    again = hit & who.isin(said)
    said.update(who[hit].tolist())
    return failures[~again.to_numpy()]


def _authors_json(tables: list[pd.DataFrame]) -> str:
    """The parts' authors tables added up (see the module doc), as JSON records."""
    from .validation import AUTHOR_COLUMNS, MANY_CUSTOMERS

    tables = [t for t in tables if len(t)]
    if not tables:
        return ""
    every = pd.concat(tables, ignore_index=True)
    every["key"] = every["author"].astype(str).str.casefold()
    g = every.groupby("key", sort=False)
    table = pd.DataFrame({
        "author": g["author"].first(), "messages": g["messages"].sum(),
        "conversations": g["conversations"].sum(), "customers": g["customers"].sum(),
        "operator_id": g["operator_id"].max(), "side": g["side"].agg(
            lambda s: "operator" if (s == "operator").any() else "customer"),
    })
    table["likely_operator"] = (table["side"] == "customer") & (table["customers"] >= MANY_CUSTOMERS)
    table = table.sort_values(["messages", "author"], ascending=[False, True], kind="stable")
    out = table.reset_index(drop=True)[AUTHOR_COLUMNS]
    out["operator_id"] = out["operator_id"].astype("Int64")
    return out.to_json(orient="records", force_ascii=False)


# ---------------------------------------------------------------------- an ImportJob's side
def source_for(job: Any, kind: str) -> Any | None:
    """For a big CSV (or ``job.plan_on_disk``): a Source holding the file's first rows only (what
    the mapping is guessed from and shown with), the chunked reader kept on ``job._chunks``;
    None: read it whole."""
    path = Path(job.source)
    if job.plan_on_disk is False or job.sheet is not None:
        return None
    if job.plan_on_disk is None and not wanted(path, kind):
        return None
    if kind != "csv" or path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        from .errors import ConfigError

        raise ConfigError(f"{path.name}: only a CSV, TSV or TXT file is planned on disk (plan_on_disk=True)")
    from .sources import Source
    from .sources.chunked import open_chunks

    chunks = open_chunks(job.source, encoding=job.encoding, delimiter=job.delimiter,
                         header_row=job.header_row, rows=CHUNK_ROWS)
    job._chunks = chunks
    return Source(path=Path(job.source), kind="csv", frame=chunks.head(), mapping=None)


def _refuse_options(job: Any, mapping: Any) -> None:
    """The options a stored plan cannot honour yet (given on the command line or in the mapping),
    refused before anything is read (exit 2)."""
    from .errors import ConfigError

    why = (f"from {threshold():,} rows an input is planned on disk, in parts; "
           f"BULKIMPORT_STORED_PLAN_ROWS above its rows plans it in memory, with the option")
    if mapping.options.get("files_upload") == "disk" and not job.upload_files:
        raise ConfigError(f"files_upload = \"disk\" (the mapping's) is not available for "
                          f"{Path(job.source).name} yet ({why}); publish the files, set files_base_url")
    if mapping.options.get("missing_files") == "skip" and job.missing_files != "skip":
        raise ConfigError(f"missing_files = \"skip\" (the mapping's) is not available for "
                          f"{Path(job.source).name} yet ({why}); use \"note\" or \"fail\"")
    if job.update_changed:
        raise ConfigError(f"--update-changed is not available for {Path(job.source).name} yet ({why}); "
                          "it compares every row with the journal in memory")
    if job.upload_files:
        raise ConfigError(f"--upload-files is not available for {Path(job.source).name} yet ({why}); "
                          "publish the files and pass --files-base-url URL instead")
    if job.missing_files == "skip":
        raise ConfigError(f"--missing-files skip is not available for {Path(job.source).name} yet ({why}); "
                          "use --missing-files note or fail")


def plan_for(job: Any, mapping: Any) -> planstore.StoredPlan:
    """The job's stored plan: read back when made before from the same bytes and options (a resume,
    the run after a dry run), else planned now into ``<journal>.plan``."""
    _refuse_options(job, mapping)
    source = Path(job.source)
    store_path = planstore.path_for(Path(job.state))
    reading = {"encoding": job.encoding, "delimiter": job.delimiter, "header_row": job.header_row}
    digest, lines = _digest_and_lines(source)
    made_by = recipe(source, mapping, reading, 50, digest)
    store = cached(store_path, made_by)
    if store is None:
        with _planning(store_path):  # one planner at a time; it may have finished meanwhile
            store = cached(store_path, made_by) or build(
                job._chunks, mapping, store_path, made_by, notify=job.notify, progress=job.progress,
                lines=lines)
    else:
        job.notify(f"Plan read back from {store_path} (made before from the same file and options).")
    return planstore.stored_plan(store, mapping, source.name, 50)


@contextlib.contextmanager
def _planning(store_path: Path) -> Iterator[None]:
    """Hold ``<plan>.lock`` while planning: a second process planning the same file into the same
    place (a dry run started while a run plans) is refused instead of sharing its spool files."""
    from .errors import ConfigError

    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(f"{store_path}.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"another bulkimport is planning into {store_path} (the same file and journal); wait for "
                "it to finish (or stop it), then run again: it reads the plan back"
            ) from None
        yield


def check_journal(job: Any, plan: planstore.StoredPlan) -> None:
    """Refuse, before the portal is set up, a journal written for another version of the file."""
    from .errors import JournalMismatchError
    from .journal import Journal
    from .sending.sender import rebind_advice

    state = Path(job.state)
    if not state.is_file():
        return
    journal = Journal.open(state)
    try:
        bound = journal.meta().get("fingerprint")
        if not bound or bound == plan.fingerprint or plan.matches(journal):
            return  # new, the same plan, or the same rows planned before (the sender rebinds it)
    finally:
        journal.close()
    raise JournalMismatchError(rebind_advice(state, plan))


def left_to_send(journal: Any, plan: planstore.StoredPlan, retry_failed: bool, retry_unknown: bool
                 ) -> tuple[int, list[int], dict[str, int]]:
    """(rows sent, messages still to send per conversation, what the run leaves alone) of a stored
    plan, from the schedule the sender would build (no frame of every journalled row)."""
    from .sending.scheduling import build_schedule_sorted

    convs = build_schedule_sorted(plan.store.heads(), planstore.marks(journal), retry_failed, retry_unknown)
    left = [len(convs[i].queue) for i in range(len(convs))]
    counts = dict(journal.query("SELECT status, COUNT(*) FROM rows WHERE conv IS NOT NULL GROUP BY status"))
    alone = {
        "failed": 0 if retry_failed else int(counts.get("failed", 0)),
        "unknown": 0 if retry_unknown else int(counts.get("unknown", 0)) + int(counts.get("inflight", 0)),
        "held": sum(len(c.rest) for c in convs.values() if c.held),
    }
    return int(counts.get("sent", 0)), left, alone


def say_start(job: Any, plan: Any) -> None:
    """Before the first run of a stored plan: its rows and ids are copied into the journal first
    (~4 s per million rows), which no progress bar shows — say it."""
    if not planstore.is_stored(plan):
        return
    state = Path(job.state)
    if state.is_file():
        from .journal import Journal

        with Journal.open(state) as journal:
            if journal.meta().get("ids_fingerprint") == plan.fingerprint:
                return
    rows = count_of(int(plan.counts.get("valid", 0)), "row")
    job.notify(f"Journalling {rows} and their ids from the stored plan before the first request "
               f"(once per plan; about {max(1, round(plan.counts.get('valid', 0) / 250_000))} s) …")


def authors_of(plan: Any) -> pd.DataFrame | None:
    """The authors table a stored plan added up from its parts (None for an in-memory plan)."""
    return getattr(plan, "authors", None) if planstore.is_stored(plan) else None


__all__ = [
    "DEFAULT_ROWS", "authors_of", "build", "cached", "check_journal", "left_to_send",
    "plan_for", "recipe", "say_start", "source_for", "threshold", "wanted",
]
