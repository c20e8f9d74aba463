"""``bulkimport sandbox``: placeholder until the sandbox lands (issue 2)."""

import click


@click.command()
def sandbox() -> None:
    """Run the local sandbox portal (not built yet)."""
    raise click.ClickException("the sandbox portal is not built yet")
