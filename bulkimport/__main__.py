"""``python -m bulkimport`` — the same as the ``bulkimport`` command."""

import sys


def _run() -> None:
    """Import the CLI and run it; Ctrl-C while the modules are still loading is exit 130, not a traceback."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    _run()
