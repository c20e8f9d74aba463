"""Reading: every input kind becomes the same text DataFrame, indexed by its source position.

One module per input kind; :func:`read` picks the reader. Today: :mod:`.tabular` (xlsx, csv, tsv,
txt). Adding a source = one module + one entry in :data:`READERS`.
"""

from __future__ import annotations

from .tabular import ATTR_DATE1904, ATTR_SOURCE, read, read_text_sample

__all__ = ["ATTR_DATE1904", "ATTR_SOURCE", "read", "read_text_sample"]
