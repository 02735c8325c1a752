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

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compound.diagnostics import error
from compound.limits import DEFAULT, Limits


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


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """One JSON value per line (UTF-8, non-ASCII kept), atomically."""
    return atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def append_jsonl(path: str | Path, value: Any) -> None:
    """Append one JSON line, flushed: a log a crash may cut short by its last line only
    (`mend_jsonl` drops such a line before a resumed run appends again)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(value, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def mend_jsonl(path: str | Path) -> None:
    """Drop a last line a crash left without its newline, so that the next append starts a line."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write(path, data[: data.rfind(b"\n") + 1])


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


CHECKSUMS = "checksums.json"


def write_checksums(folder: Path) -> Path:
    """folder/checksums.json: the SHA-256 of every file below `folder`, so a reader can tell a damaged
    file (truncated, flipped bytes) from a sound one."""
    sums = {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CHECKSUMS
    }
    return write_json(folder / CHECKSUMS, sums)


def damaged(folder: Path) -> str | None:
    """Why a folder written with `write_checksums` is not as it was written; None if it is."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"its {CHECKSUMS} is missing or unreadable ({e.__class__.__name__})"
    if not isinstance(sums, dict):
        return f"its {CHECKSUMS} is not a table of files"
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != expected:
            return f"{name} is not as it was written (its checksum differs)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def decode(data: bytes, label: str) -> str:
    """UTF-8 text (a byte-order mark dropped); any other encoding is an error that says which it looks
    like and where the first byte that is not UTF-8 stands."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise error(
                "unreadable", f"cannot read {label}: it is {name} text (a byte-order mark); save it as UTF-8"
            )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        kind = "binary data" if b"\x00" in data[:8192] else "Latin-1 or Windows-1252 text?"
        raise error(
            "unreadable",
            f"cannot read {label}: not UTF-8 (byte 0x{data[e.start]:02x} at line {line}, column {column}; "
            f"{kind}); save it as UTF-8",
        ) from None


@dataclass(frozen=True)
class Line:
    """One non-blank line of a JSONL file: its number, and its value or why it is not JSON."""

    number: int
    value: Any = None
    problem: str | None = None


def read_jsonl(path: str | Path, limits: Limits = DEFAULT) -> list[Line]:
    """Every non-blank line of a JSONL file, numbered from 1 as an editor numbers them."""
    path = Path(path)
    try:
        if not path.is_file():
            raise error("row", f"cannot read {path}: not a file")
        text = decode(path.read_bytes(), str(path))
    except OSError as e:
        raise error("row", f"cannot read {path}: {e.strerror or e}") from None
    lines = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        if len(raw) > limits.line_bytes:
            lines.append(Line(number, problem=f"is {len(raw):,} characters long (Limits.line_bytes)"))
            continue
        try:
            lines.append(Line(number, json.loads(raw)))
        except json.JSONDecodeError as e:
            lines.append(Line(number, problem=f"is not valid JSON: {e.msg} at column {e.colno}"))
        except RecursionError:
            lines.append(Line(number, problem="nests its JSON too deep"))
    return lines


def read_table(path: str | Path, what: str, limits: Limits = DEFAULT) -> dict[str, Any]:
    """A TOML or YAML file of settings (a config or a scorer file) as a dict: a regular file of at most
    `Limits.config_bytes`, UTF-8, with no YAML aliases (a few bytes of them can stand for gigabytes);
    any mistake is an error naming the file and where in it."""
    path = Path(path)
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise error("config", f"{path}: use a .toml or .yaml {what}")
    try:
        if not path.is_file():
            raise error("config", f"cannot read the {what} {path}: not a file")
        size = path.stat().st_size
        if size > limits.config_bytes:
            raise error(
                "config",
                f"the {what} {path} is {size:,} bytes (Limits.config_bytes: {limits.config_bytes:,})",
            )
        text = decode(path.read_bytes(), str(path))
    except OSError as e:
        raise error("config", f"cannot read the {what} {path}: {e.strerror or e}") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            found: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise error("config", f"{path}: not valid TOML: {e}") from None
    else:
        found = _yaml(text, path)
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise error("config", f"{path}: a {what} holds a table of settings, not {_kind(found)}")
    return found


def _yaml(text: str, path: Path) -> Any:
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise error(
                    "config",
                    f"{path}:{mark.line + 1}:{mark.column + 1}: YAML aliases (*name) are not read in "
                    "settings files; write the value out",
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error("config", f"{where}: not valid YAML: {problem}") from None


def _kind(value: Any) -> str:
    names: dict[type, str] = {list: "a list", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


def load_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, value) of every row of a JSONL file; the first line that is not JSON is an error."""
    rows = []
    for line in read_jsonl(path):
        if line.problem is not None:
            raise error("row", f"{path} row {line.number} {line.problem}")
        rows.append((line.number, line.value))
    return rows
