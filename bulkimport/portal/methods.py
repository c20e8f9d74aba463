"""The REST method names bulkimport's send path calls, spelled once (reference §4, §5).

A leaf: the governor budgets by these names, the client posts to them and the sender builds its
commands with them.
"""

from __future__ import annotations

#: Delivers a chunk of messages to an open line through a connector (one call per conversation).
SEND_METHOD = "imconnector.send.messages"
#: Runs up to 50 commands in one HTTP request.
BATCH_METHOD = "batch"
