"""Which row of an edited file is which row of the journal (for :mod:`bulkimport.after.rebind`).

* A row with a message id of the input is the journalled row of the same ``(chat.id, message.id)``.
* A row whose id bulkimport generated (no message-id column) is known by its chat, customer and
  time (:data:`bulkimport.validation.ID_SCHEME`): among the journalled rows of the same chat,
  customer and time, first one with the same content (so a row inserted between messages of the
  same second does not take another's place), then the rows left between the same two matched
  ones, in order, when both sides have as many (those are edits: a changed text, files or
  operator; otherwise they stay a gone row and a new one). A row whose time was edited is another
  row: the old one is gone and the new one is sent; :func:`retimed` pairs them for the report.
* A journal written before that scheme (its generated ids hashed the content, and it kept no times)
  is matched by content (the digest of text, files, time and operator), then the rows left between
  the same two matched rows of the chat, when both sides have as many, are taken as their edits.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..validation import is_generated
from .identities import Planned


@dataclass(frozen=True)
class Old:
    """One row the journal recorded: its ids, content digests and place in the plan it was in."""

    rid: str
    chat: str
    user: str
    mid: str
    digest: str | None
    date: int | None  # None: a journal written before row_identity
    body: str | None
    conv: int
    seq: int
    status: str | None  # None: the row is in row_ids but not in rows


def match(old: list[Old], new: list[Planned]) -> dict[int, int]:
    """Index into ``new`` → index into ``old`` of the same row (see the module docstring)."""
    pairs: dict[int, int] = {}
    by_mid = {(o.chat, o.mid): k for k, o in enumerate(old) if not is_generated(o.mid)}
    for i, n in enumerate(new):
        if not is_generated(n[5]):
            k = by_mid.get((n[3], n[5]))
            if k is not None:
                pairs[i] = k
    gen_new = [i for i, n in enumerate(new) if is_generated(n[5])]
    dated = [k for k, o in enumerate(old) if is_generated(o.mid) and o.date is not None]
    _by_time(old, new, gen_new, dated, pairs)
    legacy = [k for k, o in enumerate(old) if is_generated(o.mid) and o.date is None]
    if legacy:
        rest = [i for i in gen_new if i not in pairs]
        _by_digest(old, new, rest, legacy, pairs)
        taken = set(pairs.values())
        _between_anchors(old, new, pairs, {k for k in legacy if k not in taken},
                         [i for i in rest if i not in pairs])
    return pairs


def _by_time(old: list[Old], new: list[Planned], gen_new: list[int], dated: list[int],
             pairs: dict[int, int]) -> None:
    """Generated ids of the current scheme: by (chat, customer, time), same content first."""
    groups_old: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for k in dated:
        o = old[k]
        groups_old[(o.chat, o.user, o.date)].append(k)
    groups_new: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i in gen_new:
        n = new[i]
        groups_new[(n[3], n[4], n[7])].append(i)
    for key, ns in groups_new.items():
        olds = groups_old.get(key)
        if not olds:
            continue
        free: dict[str | None, deque[int]] = defaultdict(deque)
        for k in olds:
            free[old[k].digest].append(k)
        left: list[int] = []
        used: set[int] = set()
        for i in ns:
            same = free.get(new[i][6])
            if same:
                pairs[i] = same.popleft()
                used.add(pairs[i])
            else:
                left.append(i)
        rest = {k for k in olds if k not in used}
        if left and rest:  # the rest between the same matched rows: edited content
            old_order = [("", k, k in used) for k in sorted(olds, key=lambda k: (old[k].conv, old[k].seq))]
            new_order = [("", pairs.get(i, i), i in pairs) for i in ns]
            _fill(_gaps(old_order), _gaps(new_order), pairs)


def _by_digest(old: list[Old], new: list[Planned], rest: list[int], legacy: list[int],
               pairs: dict[int, int]) -> None:
    """A journal of content-hashed ids: the same (chat, customer, content and time), in order."""
    free: dict[tuple[Any, ...], deque[int]] = defaultdict(deque)
    for k in legacy:
        o = old[k]
        free[(o.chat, o.user, o.digest)].append(k)
    for i in rest:
        n = new[i]
        same = free.get((n[3], n[4], n[6]))
        if same:
            pairs[i] = same.popleft()


def _gaps(order: Iterable[tuple[str, int | None, bool]]) -> dict[tuple[Any, ...], list[int]]:
    """Unmatched entries grouped by (chat, previous anchor, next anchor); ``order`` is
    ``(chat, index or None for an anchor's old index, is_anchor)`` in plan order, per chat."""
    out: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    chat_prev: dict[str, int | None] = {}
    waiting: dict[str, list[int]] = defaultdict(list)
    for chat, idx, anchor in order:
        if anchor:
            for w in waiting.pop(chat, []):
                out[(chat, chat_prev.get(chat), idx)].append(w)
            chat_prev[chat] = idx
        elif idx is not None:
            waiting[chat].append(idx)
    for chat, ws in waiting.items():
        for w in ws:
            out[(chat, chat_prev.get(chat), None)].append(w)
    return out


def _between_anchors(old: list[Old], new: list[Planned], pairs: dict[int, int], old_left: set[int],
                     new_left: list[int]) -> None:
    """Pair the unmatched old and new rows between the same two matched rows of their chat (edits the
    content-hashed ids of an old journal cannot follow)."""
    if not old_left or not new_left:
        return
    matched_old = set(pairs.values())
    by_place = sorted(range(len(old)), key=lambda k: (old[k].conv, old[k].seq))
    old_order = [(old[k].chat, k, k in matched_old) for k in by_place if k in matched_old or k in old_left]
    wanted = set(new_left)
    new_order = [(new[i][3], pairs.get(i, i), i in pairs)
                 for i in range(len(new)) if i in pairs or i in wanted]
    _fill(_gaps(old_order), _gaps(new_order), pairs)


def _fill(gaps_old: dict[tuple[Any, ...], list[int]], gaps_new: dict[tuple[Any, ...], list[int]],
          pairs: dict[int, int]) -> None:
    """Pair the unmatched rows of each gap between the same matched rows, in order, when both sides
    have as many (otherwise which is which cannot be told: they stay a gone and a new row)."""
    for place, ns in gaps_new.items():
        olds = gaps_old.get(place)
        if olds is not None and len(olds) == len(ns):
            pairs.update(zip(ns, olds, strict=True))


def retimed(old: list[Old], new: list[Planned], pairs: dict[int, int], sent: str) -> list[tuple[int, int]]:
    """(new, old) index pairs of sent rows whose time was edited: unmatched on both sides, same chat,
    customer and body (text, files, operator)."""
    taken = set(pairs.values())
    free: dict[tuple[Any, ...], deque[int]] = defaultdict(deque)
    for k, o in enumerate(old):
        if k not in taken and o.status == sent and o.body is not None and is_generated(o.mid):
            free[(o.chat, o.user, o.body)].append(k)
    out: list[tuple[int, int]] = []
    for i, n in enumerate(new):
        if i in pairs or not is_generated(n[5]):
            continue
        same = free.get((n[3], n[4], n[8]))
        if same:
            out.append((i, same.popleft()))
    return out


__all__ = ["Old", "match", "retimed"]
