"""``python -m bulkimport`` — the same as the ``bulkimport`` command."""

import os
import sys


def _run() -> None:
    """Import the CLI and run it; Ctrl-C while the modules are still loading is exit 130, not a traceback."""
    try:
        from .cli import main

        main()  # inside: a Ctrl-C in click's own start-up, before the command's handler, is 130 too
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.stderr.flush()
        # Not SystemExit: an interrupt that passed through C-level code run during an extension
        # module's import leaves CPython's "unhandled KeyboardInterrupt" flag set, and the
        # interpreter would then end by re-raising SIGINT (exit -2) instead of exiting with 130.
        os._exit(130)


if __name__ == "__main__":
    _run()
