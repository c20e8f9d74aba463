"""Sending: a Plan → requests → journal → per-row outcomes (see docs/sending.md).

Modules, each importing only those below it: ``sender`` (the Sender and ``send()``) → ``loop``
(the run loop) → ``outcome``, ``state``, ``workers``, ``progress``, ``summary`` → ``scheduling``.
"""

from __future__ import annotations

from .progress import CallbackProgress, NullProgress, ProgressCollector, TqdmProgress
from .sender import Sender, send
from .summary import STATUS_COLUMNS, SendOutcome, SendSummary

__all__ = [
    "STATUS_COLUMNS",
    "CallbackProgress",
    "NullProgress",
    "ProgressCollector",
    "SendOutcome",
    "SendSummary",
    "Sender",
    "TqdmProgress",
    "send",
]
