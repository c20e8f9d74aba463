"""``python -m bulkimport`` — the same as the ``bulkimport`` command."""

from .cli import main

if __name__ == "__main__":
    main()
