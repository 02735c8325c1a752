"""Inputs files: one JSON object per line, a system's input values and any other columns (a reference
answer a scorer reads), read by one function for `compound sample`, `align` and `credit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compound.diagnostics import error
from compound.io import read_jsonl


def read_inputs(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an inputs file; a line that is not a JSON object, or a file without one, is an error."""
    rows = []
    for line in read_jsonl(Path(path)):
        if line.problem is not None:
            raise error("row", f"{path} row {line.number} {line.problem}")
        if not isinstance(line.value, dict):
            raise error("row", f"{path} row {line.number} is not an object of input values")
        rows.append(line.value)
    if not rows:
        raise error("row", f"{path} holds no inputs")
    return rows
