"""The built-in commands of `compound`, one module each, registered by `compound.cli`.

Each module's `command` is a typer function that parses its flags and calls the
stage it runs (imported when it runs, so that `compound check` starts without
torch); `common` holds what several share: the console, compiler-style error
reports, NAME=VALUE flags and the training flags of `train` and `align`. A
command raises `CompoundError` for a user's mistake; `cli.guarded` reports it.
"""
