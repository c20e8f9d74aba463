"""``python -m bulkimport`` — the same as the ``bulkimport`` command."""

import os
import sys


def _run() -> None:
    """Import the CLI and run it; Ctrl-C while the modules are still loading is exit 130, not a traceback."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.stderr.flush()
        # Not SystemExit: an interrupt that passed through C-level code run during an extension
        # module's import leaves CPython's "unhandled KeyboardInterrupt" flag set, and the
        # interpreter would then end by re-raising SIGINT (exit -2) instead of exiting with 130.
        os._exit(130)
    main()


if __name__ == "__main__":
    _run()
