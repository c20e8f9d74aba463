"""The REST method names bulkimport's send path calls, spelled once (reference §4, §5).

A leaf: the governor budgets by these names, the client posts to them and the sender builds its
commands with them.
"""

from __future__ import annotations

#: Delivers a chunk of messages to an open line through a connector (one call per conversation).
SEND_METHOD = "imconnector.send.messages"
#: Runs up to 50 commands in one HTTP request.
BATCH_METHOD = "batch"
#: Ends an open-line session (any user with dialog permissions; reference 2 §3b).
FINISH_METHOD = "imopenlines.operator.another.finish"
#: Deletes connector messages by the ids they were sent with (reference 2 §3c).
DELETE_METHOD = "imconnector.delete.messages"
#: Reads / changes an open line's settings (welcome message, vote, auto-close, CRM, queue).
CONFIG_GET_METHOD = "imopenlines.config.get"
CONFIG_UPDATE_METHOD = "imopenlines.config.update"
