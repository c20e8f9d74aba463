"""The exit statuses of a bulkimport command, in one place (the CLI exits with them, a job's
result says which one applies, docs/cli.md lists them)."""

from __future__ import annotations

#: every row sent (or, for validate / --dry-run, every row valid)
EXIT_OK = 0
#: finished with failed, invalid, unknown or pending rows (or the confirmation was declined)
EXIT_ROWS = 1
#: unusable input or configuration, or the portal refused the set-up / credentials mid-run
EXIT_INPUT = 2
#: interrupted (Ctrl-C): the journal is saved and the command to resume is printed
EXIT_INTERRUPTED = 130

__all__ = ["EXIT_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_ROWS"]
