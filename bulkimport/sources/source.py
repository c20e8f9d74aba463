"""The :class:`Source`: what :func:`bulkimport.sources.load` found in an input, ready for planning.

It carries the canonical frame, the mapping a messenger reader builds for its own columns (None
for tabular files: theirs is guessed or loaded), the conversations and authors with their sides,
what was skipped and why, the warnings found while reading (attachments not in the export) and
the problems that stop an import (business-side authors without an employee id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import codes
from ..errors import InputError
from .common import CUSTOMER, MAPPING_COLUMNS, OPERATOR, Author, Container, Conversation, Rows, finish
from .common import unmapped_message as _unmapped_message

NOTE_COLUMNS = ["row", "field", "code", "level", "message", "value"]  # = validation.FAILURE_COLUMNS


@dataclass
class Source:
    """One input read: ``bulkimport.plan(source)`` plans its ``frame`` with its ``mapping``."""

    path: Path
    kind: str  # "xlsx", "csv", "telegram", "whatsapp"
    frame: pd.DataFrame
    mapping: Any = None  # bulkimport.mapping.Mapping for messenger exports, None for tabular files
    conversations: list[Conversation] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NOTE_COLUMNS))
    problems: list[str] = field(default_factory=list)
    timezone: str | None = None
    date_order: str | None = None
    container: Container | None = None

    @property
    def needs_chat_group(self) -> bool:
        """Whether a conversation has several customers: the connector needs ``CHAT_GROUP=Y``
        (without it the portal splits a group's messages into one chat per user)."""
        return any(c.group and self._customers(c.key) > 1 for c in self.conversations)

    def _customers(self, key: str) -> int:
        return sum(1 for a in self.authors if a.conversation == key and a.side == CUSTOMER and a.messages)

    def check(self) -> None:
        """Raise InputError (one line: who and the fix) if the source cannot be imported as read."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
            raise InputError(self.problems[0] + more)

    def with_notes(self, failures: pd.DataFrame) -> pd.DataFrame:
        """``failures`` (validation's tidy frame) plus the reader's own warnings, in the same columns,
        so they reach ``import_warnings`` and the report (:func:`bulkimport.plan` and
        :func:`bulkimport.validate` call it when given a Source)."""
        if self.notes.empty:
            return failures
        return pd.concat([failures, self.notes], ignore_index=True)

    def attachments(self) -> list[str]:
        """Every attachment path of the frame (relative to the export root), in row order."""
        col = "attachments"
        files = self.frame[col].dropna() if col in self.frame.columns else pd.Series(dtype="str")
        return [p for cell in files for p in str(cell).split("\n") if p]

    def open_attachment(self, rel: str) -> Any:
        """The bytes of attachment ``rel`` as a binary file object (from the folder or the zip)."""
        if self.container is None:
            raise InputError(f"{self.path.name}: a {self.kind} file has no attachments of its own")
        return self.container.open(rel)

    def describe(self) -> str:
        """What was detected: kind, conversations, authors with message counts and sides, skips."""
        n = len(self.frame)
        lines = [f"{self.path.name}: {self.kind} export, {n:,} message(s)"]
        if self.kind in ("xlsx", "csv"):
            lines[0] = f"{self.path.name}: {self.kind} file, {n:,} row(s)"
            return "\n".join(lines)
        zone = f"time zone {self.timezone}" if self.timezone else ""
        order = f", date order {self.date_order}" if self.date_order else ""
        lines.append(f"  dates: {zone}{order}")
        lines.append(f"  conversations: {len(self.conversations)}")
        for c in self.conversations[:20]:
            kind = "group" if c.group else c.type
            lines.append(f"    {c.key}  {c.name!r} ({kind}), {c.messages:,} message(s)")
            for a in sorted(
                (a for a in self.authors if a.conversation == c.key and a.messages), key=lambda a: -a.messages
            )[:15]:
                who = a.name or "(deleted account)"
                side = (
                    a.side
                    if a.side == CUSTOMER
                    else (
                        f"operator → employee {a.operator_id}" if a.operator_id else "operator → NO EMPLOYEE"
                    )
                )
                ident = f" [{a.author_id}]" if a.author_id != a.name else ""
                lines.append(f"      {who}{ident}: {a.messages:,} message(s), {side}")
        if len(self.conversations) > 20:
            lines.append(f"    … and {len(self.conversations) - 20} more")
        if self.skipped:
            lines.append("  skipped: " + "; ".join(f"{v:,} {k}" for k, v in self.skipped.items()))
        if not self.notes.empty:
            top = self.notes["code"].value_counts()
            lines.append("  warnings: " + ", ".join(f"{v:,} {k}" for k, v in top.items()))
        if self.needs_chat_group:
            lines.append("  group chat: the connector must be registered with CHAT_GROUP=Y (setup does it)")
        lines.extend(f"  PROBLEM: {p}" for p in self.problems)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def build(
    *,
    path: Path,
    kind: str,
    rows: Rows,
    conversations: list[Conversation],
    authors: list[Author],
    unmapped: list[Author],
    problems: list[str],
    zone: str,
    container: Container,
    files_base_url: str | None,
    strict: bool,
    date_order: str | None = None,
) -> Source:
    """A reader's rows → :class:`Source` with its frame, mapping, notes and problems."""
    from ..mapping import Mapping

    problems = list(problems)
    if unmapped:
        problems.insert(0, _unmapped_message(path.name, unmapped))
    options: dict[str, Any] = {"timezone": zone}
    if files_base_url is not None:
        options["files_base_url"] = files_base_url
    mapping = Mapping(columns=dict(MAPPING_COLUMNS), options=options, source=f"{kind} export")
    frame = finish(rows, zone, path.name, files_base_url)
    frame.attrs["source_path"] = str(path)
    frame.attrs["kind"] = kind
    src = Source(
        path=path,
        kind=kind,
        frame=frame,
        mapping=mapping,
        conversations=[c for c in conversations if c.messages],
        authors=authors,
        skipped=dict(rows.skipped.most_common()),
        notes=_notes(rows),
        problems=problems,
        timezone=zone,
        date_order=date_order,
        container=container,
    )
    if strict:
        src.check()
    return src


def _notes(rows: Rows) -> pd.DataFrame:
    if not rows.notes:
        return pd.DataFrame(columns=NOTE_COLUMNS)
    out = []
    for key, code, value in rows.notes:
        entry = codes.get(code)
        out.append(
            {
                "row": key,
                "field": "message.files",
                "code": entry.code,
                "level": entry.level,
                "message": entry.render(field="message.files"),
                "value": value,
            }
        )
    return pd.DataFrame(out, columns=NOTE_COLUMNS)


__all__ = ["NOTE_COLUMNS", "OPERATOR", "Source", "build"]
