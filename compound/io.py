"""Files written whole or not at all, and JSON Lines read with their line numbers: one of each.

Every file compound writes that a crash must not leave half-written (run
configs, metrics snapshots, sample files, reference caches, checkpoints, saved
weights) goes through `atomic_file` or `atomic_folder`: the content is written
beside its destination under a temporary name and renamed into place, so a
reader sees the old version or the new one, never a mix. Every JSONL file
compound reads goes through `read_jsonl`, so a row's number is always its line
number in the file (lines are split on newlines only: a U+2028 inside a JSON
string does not start a row).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compound.diagnostics import error


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns `path`."""
    with atomic_file(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, value: Any) -> Path:
    """`value` as indented JSON, atomically (values JSON cannot hold are written as strings)."""
    return atomic_write(path, json.dumps(value, indent=2, default=str))


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; it replaces `path` (and everything in it) at the end.

    Between the two renames a reader may find no folder at all, never a half-written or mixed one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Line:
    """One non-blank line of a JSONL file: its number, and its value or why it is not JSON."""

    number: int
    value: Any = None
    problem: str | None = None


def read_jsonl(path: str | Path) -> list[Line]:
    """Every non-blank line of a JSONL file, numbered from 1 as an editor numbers them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error("row", f"cannot read {path}: not UTF-8 text") from None
    except OSError as e:
        raise error("row", f"cannot read {path}: {e.strerror or e}") from None
    lines = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            lines.append(Line(number, json.loads(raw)))
        except json.JSONDecodeError as e:
            lines.append(Line(number, problem=f"is not valid JSON: {e.msg} at column {e.colno}"))
    return lines


def load_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, value) of every row of a JSONL file; the first line that is not JSON is an error."""
    rows = []
    for line in read_jsonl(path):
        if line.problem is not None:
            raise error("row", f"{path} row {line.number} {line.problem}")
        rows.append((line.number, line.value))
    return rows
