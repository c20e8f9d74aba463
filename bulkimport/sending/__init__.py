"""Sending: a Plan → requests → journal → per-row outcomes (see docs/sending.md)."""

from __future__ import annotations

from .sender import STATUS_COLUMNS, Sender, SendOutcome, SendSummary, send

__all__ = ["STATUS_COLUMNS", "SendOutcome", "SendSummary", "Sender", "send"]
