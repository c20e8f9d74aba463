"""The ``bulkimport`` command line: a thin click layer over the library.

Every command parses options, calls library functions and prints; behaviour lives in the library.
User errors (:class:`bulkimport.errors.InputError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import InputError


class _Group(click.Group):
    """Turns InputError into a one-line message and exit code 2 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulkimport")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Migrate chat history (xlsx, csv) into Bitrix24 Open Lines."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_sandbox() -> None:
    from .sandbox.command import sandbox

    main.add_command(sandbox)


_register_sandbox()
