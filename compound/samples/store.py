"""Sampled rows on disk: DIR/samples.jsonl and its images, written, read back and grouped by input.

`compound sample` writes DIR/samples.jsonl (one sampled row per line:
`{"id", "input": {...}, "values": {...}, "score"?}`), images saved as PNG under
DIR/images/ and referred to by path relative to DIR. `compound pairs` reads it
back, scores the rows (`compound.samples.score`) and pairs them
(`compound.samples.pairing`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compound import ir
from compound.diagnostics import error
from compound.io import read_jsonl, write_jsonl


@dataclass
class Sample:
    id: str
    input: dict[str, Any]
    values: dict[str, Any]
    score: float | None = None

    @property
    def row(self) -> dict[str, Any]:
        return {**self.input, **self.values}


def split(
    system: ir.System,
    inputs: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    per_input: int,
    first: int = 0,
) -> list[Sample]:
    """Sampled rows (n per input row, in order) as Samples: the whole input row (its declared inputs and
    any other column, such as a reference answer a scorer reads) apart from the generated values."""
    declared = {n.base for n in system.nodes if isinstance(n, ir.InputNode)}
    return [
        Sample(
            id=f"{first + k // per_input}-{k % per_input}",
            input=dict(inputs[k // per_input]),
            values={key: v for key, v in row.items() if key not in declared},
        )
        for k, row in enumerate(rows)
    ]


def write(samples: Sequence[Sample], folder: str | Path, name: str = "samples.jsonl") -> Path:
    """Save samples as JSONL; PIL images become PNG files beside it, referred to by relative path."""
    folder = Path(folder).resolve()
    (folder / "images").mkdir(parents=True, exist_ok=True)

    def plain(value: Any, stem: str) -> Any:
        if hasattr(value, "save") and hasattr(value, "mode"):
            value.save(folder / "images" / f"{stem}.png")
            return f"images/{stem}.png"
        if isinstance(value, str) and value.endswith(".png") and Path(value).is_relative_to(folder.resolve()):
            return str(Path(value).relative_to(folder.resolve()))
        if isinstance(value, list):
            return [plain(v, f"{stem}-{j}") for j, v in enumerate(value)]
        return value

    records = []
    for s in samples:
        record: dict[str, Any] = {
            "id": s.id,
            "input": s.input,
            "values": {k: plain(v, f"{s.id}-{k}") for k, v in s.values.items()},
        }
        if s.score is not None:
            record["score"] = s.score
        records.append(record)
    return write_jsonl(folder / name, records)


def read(folder: str | Path, name: str = "samples.jsonl") -> list[Sample]:
    """Samples written by `write`, with image paths made absolute."""
    folder = Path(folder).resolve()
    path = folder / name
    if not path.is_file():
        raise error("config", f"no {name} in {folder}: run `compound sample` first")

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("images/") and value.endswith(".png"):
            return str(folder / value)
        return [absolute(v) for v in value] if isinstance(value, list) else value

    samples = []
    for line in read_jsonl(path):
        record = line.value
        if (
            line.problem is not None
            or not isinstance(record, dict)
            or not {"id", "input", "values"} <= set(record)
        ):
            problem = line.problem or "is not a sample (an object with id, input and values)"
            raise error("row", f"{path} row {line.number} {problem}")
        samples.append(
            Sample(
                record["id"],
                record["input"],
                {k: absolute(v) for k, v in record["values"].items()},
                record.get("score"),
            )
        )
    return samples


def by_input(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(json.dumps(s.input, sort_keys=True, ensure_ascii=False), []).append(s)
    return groups
