"""bulkimport — migrate chat history into Bitrix24 Open Lines, exactly once and in order.

The public surface, in pipeline order::

    df = bulkimport.read("history.xlsx")               # files → DataFrame (row numbers kept)
    mapping = bulkimport.Mapping.guess(df)             # or Mapping.load("mapping.toml")
    failures = bulkimport.validate(df, mapping)         # tidy frame: row, field, code, message …
    plan = bulkimport.plan(df, mapping)                 # conversations → MESSAGES chunks, ETA
    out = bulkimport.send(plan, portal=..., line=1, connector="history_import")
    bulkimport.write_report(out, "history.report.xlsx")

    with bulkimport.Sandbox() as portal: ...           # a local Bitrix24 portal for rehearsals

or the whole run at once, as ``bulkimport run`` does it::

    result = bulkimport.ImportJob("history.xlsx", mapping="m.toml", sandbox=True).run()
    result.exit_code, result.next_steps()

Names are imported lazily so ``import bulkimport`` (and the CLI's ``--help``) stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "read": "bulkimport.sources",
    "load": "bulkimport.sources",
    "detect": "bulkimport.sources",
    "Source": "bulkimport.sources",
    "Mapping": "bulkimport.mapping",
    "validate": "bulkimport.validation",
    "plan": "bulkimport.planning",
    "Plan": "bulkimport.planning",
    "Conversation": "bulkimport.planning",
    "Estimate": "bulkimport.planning",
    "send": "bulkimport.sending",
    "write_report": "bulkimport.reporting",
    "ImportJob": "bulkimport.job",
    "JobResult": "bulkimport.job",
    "Sender": "bulkimport.sending",
    "SendSummary": "bulkimport.sending",
    "Sandbox": "bulkimport.sandbox",
    "PortalLimits": "bulkimport.limits",
    "STANDARD": "bulkimport.limits",
    "ENTERPRISE": "bulkimport.limits",
    "codes": "bulkimport.codes",
    # the exception hierarchy (drawn in bulkimport.errors)
    "BulkImportError": "bulkimport.errors",
    "InputError": "bulkimport.errors",
    "ReadError": "bulkimport.errors",
    "MappingError": "bulkimport.errors",
    "ConfigError": "bulkimport.errors",
    "JournalMismatchError": "bulkimport.errors",
    "PortalError": "bulkimport.errors",
    "RetryableError": "bulkimport.errors",
    "RateLimitedError": "bulkimport.errors",
    "OperatingLimitError": "bulkimport.errors",
    "TokenExpiredError": "bulkimport.errors",
    "FatalError": "bulkimport.errors",
    "AuthError": "bulkimport.errors",
    "SetupError": "bulkimport.errors",
    "BlockedError": "bulkimport.errors",
    "TlsError": "bulkimport.errors",
    "RequestRejectedError": "bulkimport.errors",
    "AmbiguousError": "bulkimport.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bulkimport' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "codes" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import codes as codes
    from .errors import *  # noqa: F403
    from .job import ImportJob as ImportJob
    from .job import JobResult as JobResult
    from .limits import ENTERPRISE as ENTERPRISE
    from .limits import STANDARD as STANDARD
    from .limits import PortalLimits as PortalLimits
    from .planning import Conversation as Conversation
    from .planning import Estimate as Estimate
    from .planning import Plan as Plan
