"""The `compound` command line (typer + rich): the app, its commands and `main`.

The built-in commands live in `compound.commands`, one module each; installed
packages add theirs through the `compound.commands` entry-point group (the
demos' `compound demo`). Errors in a user's files print as `FILE:LINE:COL:
error: MESSAGE` with the source line and a caret, and exit with status 1; never
a traceback. Every command is wrapped by `guarded`, the one place a
`CompoundError` becomes that report.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Annotated, Any

import typer

from compound.commands.common import err, report
from compound.console import quiet
from compound.diagnostics import CompoundError

app = typer.Typer(
    name="compound",
    help="Compile, check, draw and align compound AI systems declared in .cmp files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
COMMANDS = "compound.commands"
#: The built-in commands, in the order `compound --help` lists them (module `compound.commands.NAME`).
BUILTIN = (
    "check",
    "compile",
    "train",
    "sample",
    "pairs",
    "label",
    "align",
    "optimize",
    "credit",
    "report",
    "view",
    "export",
)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose `CompoundError`s are reported compiler-style with exit status 1 (no traceback)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CompoundError as e:
            report(e.diagnostics, e.sources)
            raise typer.Exit(1) from None

    return run


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show the libraries' own bars, logs and warnings too.")
    ] = False,
) -> None:
    """Every command's console shows compound's own progress and messages; the libraries' bars, logs and
    warnings are off unless `--verbose` (or COMPOUND_VERBOSE=1) asks for them."""
    if verbose:
        os.environ["COMPOUND_VERBOSE"] = "1"
    quiet()


for _name in BUILTIN:
    app.command(_name)(guarded(import_module(f"compound.commands.{_name}").command))


def _plugin_commands() -> None:
    """Commands installed packages add through the `compound.commands` entry-point group (the demos'
    `compound demo` and `compound pretrain`); a built-in command's name cannot be taken."""
    for ep in entry_points(group=COMMANDS):
        if ep.name in BUILTIN:
            continue
        try:
            command = ep.load()
        except Exception as e:  # a broken plugin must not take the built-in commands down
            err.print(f"[yellow]warning:[/] command {ep.name!r} ({ep.value}) did not load: {e}")
            continue
        app.command(ep.name)(guarded(command))


_plugin_commands()


def main() -> None:
    """The `compound` command. A user's mistake, a missing or unwritable file, a full disk: an error
    message and exit status 1, never a traceback (COMPOUND_TRACEBACK=1 shows one, for a bug)."""
    import os
    import warnings

    from rich.markup import escape

    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices
    try:
        app()
    except CompoundError as e:
        report(e.diagnostics, e.sources)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as e:
        if os.environ.get("COMPOUND_TRACEBACK"):
            raise
        if isinstance(e, OSError):
            where = f": {e.filename}" if e.filename else ""
            err.print(f"[bold red]error:[/] {escape(str(e.strerror or e))}{escape(where)}")
        elif isinstance(e, MemoryError):
            err.print("[bold red]error:[/] out of memory")
        else:
            err.print(
                f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))}; this is a bug in "
                "compound, please report it (COMPOUND_TRACEBACK=1 shows where it happened)"
            )
    else:
        return
    raise SystemExit(1)
