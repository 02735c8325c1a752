"""Preference data: read, map onto a system, and validate before any training.

A file holds one comparison per row, in one of three formats:

- `{"input": {...}, "chosen": {...}, "rejected": {...}}`: node names to
  values; inputs once, outputs and intermediates per side;
- `{"input": {...}, "ranked": [{...}, {...}, ...]}`: two or more outputs of the
  input, best first (trained with the Plackett-Luce loss, `compound.loss`);
- TRL's `{"prompt": ..., "chosen": ..., "rejected": ...}`, for a system of
  one text input and one sampled text node.

A pair may leave out intermediate text nodes (on both sides alike) and give
only the inputs and outputs: it trains with SysDPO-Sampling, through the
marginal over candidates of what it leaves out (`compound.estimators.marginal`).

JSONL is read directly (a row's number is its line number); Parquet, JSON,
CSV, a `datasets` folder or a hub id go through `datasets.load_dataset` (a
row's number is its position, from 1). Images are file paths, relative to the
data file, or images a dataset decodes. Every row is validated up front: each
bad row is reported with its number, node and reason, and nothing is dropped
silently (with `skip_invalid` bad rows are left out and counted).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compound import ir
from compound.diagnostics import CompoundError, Diagnostic, error, suggest
from compound.interpret.given import given_values, problems
from compound.io import read_jsonl
from compound.limits import DEFAULT, Limits
from compound.reference import row_key
from compound.values import as_row, check_marginal, clashes, row_error


@dataclass(frozen=True)
class Pair:
    """One comparison: its row number in the source, and both sides as rows of node values; a ranked
    list's outputs below its best two in `rest`, best first."""

    row: int
    chosen: dict[str, Any]
    rejected: dict[str, Any]
    rest: tuple[dict[str, Any], ...] = ()

    @property
    def ranked(self) -> tuple[dict[str, Any], ...]:
        """Every output, best first."""
        return (self.chosen, self.rejected, *self.rest)


@dataclass
class Preferences:
    """Validated pairs; the rows left out as invalid (with `skip_invalid`), and what is suspicious
    but allowed (repeated rows, computed nodes given, images outside the data's folder), with counts."""

    source: str
    pairs: list[Pair]
    invalid: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of the data's content (keys cached reference scores to it)."""
        digest = hashlib.sha256()
        for pair in self.pairs:
            digest.update(row_key(pair.chosen, pair.rejected).encode())
            for item in pair.rest:
                digest.update(row_key(item, {}).encode())
        return digest.hexdigest()[:16]


def load_preferences(
    system: ir.System, source: str | Path, skip_invalid: bool = False, limits: Limits = DEFAULT
) -> Preferences:
    """Read and validate preference data for `system`; raise `CompoundError` listing every bad row."""
    label = str(source)
    records, base = _records(source, limits)
    pairs: list[Pair] = []
    invalid: list[Diagnostic] = []
    bad_rows = 0
    for number, record in records:
        found = _check(system, record, f"{label} row {number}", base, limits)
        if isinstance(found, list):
            invalid += found
            bad_rows += 1
        else:
            pairs.append(Pair(number, found[0], found[1], tuple(found[2:])))
    if invalid and not skip_invalid:
        summary = Diagnostic(
            "error",
            "row",
            f"{bad_rows} of {len(records)} rows of {label} are invalid; fix "
            "them, or leave them out with --skip-invalid",
        )
        raise CompoundError([*invalid, summary], _sources(system))
    if not pairs:
        raise error("row", f"{label} holds no valid preference pair")
    return Preferences(label, pairs, invalid, _warnings(system, pairs, label, base))


def _warnings(system: ir.System, pairs: list[Pair], label: str, base: Path) -> list[Diagnostic]:
    """What is allowed but probably not meant, counted over the whole file."""
    found: list[Diagnostic] = []
    seen: dict[str, int] = {}
    repeats = []
    for pair in pairs:
        key = row_key(pair.chosen, pair.rejected) + "".join(row_key(r, {}) for r in pair.rest)
        if key in seen:
            repeats.append(f"row {pair.row} repeats row {seen[key]}")
        seen.setdefault(key, pair.row)
    if repeats:
        found.append(_warning(f"{len(repeats)} rows of {label} repeat an earlier row ({_first(repeats)})"))
    differ = [
        f"'{name}' in row {p.row}" for p in pairs for side in p.ranked for name in _recomputed(system, side)
    ]
    if differ:
        found.append(
            _warning(
                f"{len(differ)} values of computed nodes in {label} differ from what their arguments give "
                f"({_first(differ)}): compound computes them and ignores the given values"
            )
        )
    images = {n.base for n in system.nodes if n.type == "image"}
    outside = [
        f"row {p.row}: {path}"
        for p in pairs
        for side in p.ranked
        for key, value in side.items()
        if key.split("[")[0] in images
        for path in (value if isinstance(value, list) else [value])
        if isinstance(path, str) and not Path(path).resolve().is_relative_to(base.resolve())
    ]
    if outside:
        found.append(
            _warning(
                f"{len(outside)} image paths of {label} lie outside its folder {base} ({_first(outside)})"
            )
        )
    return found


def _recomputed(system: ir.System, row: dict[str, Any]) -> list[str]:
    """The computed nodes a row gives with a value other than their function computes."""
    if not any(isinstance(n, ir.ComputeNode) and (n.base in row or n.name in row) for n in system.nodes):
        return []
    try:
        values = given_values(system, row, "row")
    except CompoundError:  # a SysDPO-Sampling row: its intermediates are missing
        return []
    recomputed = as_row(system, values)
    names = dict.fromkeys(n.base for n in system.nodes if isinstance(n, ir.ComputeNode))
    return [name for name in names if name in row and recomputed.get(name) != row[name]]


def _warning(message: str) -> Diagnostic:
    return Diagnostic("warning", "row", message)


def _first(items: list[str]) -> str:
    return f"first: {items[0]}" if len(items) > 1 else items[0]


def _check(
    system: ir.System, record: Any, where: str, base: Path, limits: Limits
) -> tuple[dict[str, Any], ...] | list[Diagnostic]:
    """The outputs of a valid record, best first, or everything wrong with it."""
    try:
        sides = _sides(system, record, where, base, limits)
        names = ("chosen", "rejected") if len(sides) == 2 else [f"ranked[{k}]" for k in range(len(sides))]
        seen: dict[str, int] = {}
        for k, side in enumerate(sides):
            earlier = seen.setdefault(row_key(side, {}), k)
            if earlier != k:
                what = (
                    "the chosen and the rejected side are the same"
                    if len(sides) == 2
                    else f"ranked[{k}] repeats ranked[{earlier}]"
                )
                raise error("row", f"{where}: {what}; the comparison teaches nothing")
        gone = [
            {n.name for n in check_marginal(system, side, f"{where}, {name}")}
            for side, name in zip(sides, names, strict=True)
        ]
        if any(g != gone[0] for g in gone):
            raise error(
                "row",
                f"{where}: the chosen and the rejected side leave out different nodes; "
                "SysDPO-Sampling needs both to give the same ones",
            )
        if gone[0] and len(sides) > 2:
            raise error(
                "row",
                f"{where}: a ranked list of more than two outputs must give every sampled node "
                f"(it leaves out {', '.join(sorted(gone[0]))})",
            )
    except CompoundError as e:
        return list(e.diagnostics)
    skip = frozenset(gone[0])
    found = [
        d
        for side, name in zip(sides, names, strict=True)
        for d in problems(system, side, f"{where}, {name}", skip, limits)
    ]
    inputs = [node for node in system.nodes if isinstance(node, ir.InputNode)]
    for node in inputs if not found else []:
        if any(s[node.base] != sides[0][node.base] for s in sides):
            message = (
                "differs between the chosen and the rejected side; a pair shares its inputs"
                if len(sides) == 2
                else "differs between the ranked outputs; they share their inputs"
            )
            found += row_error(where, node, message).diagnostics
    return found or sides


def _sources(system: ir.System) -> dict[str, str]:
    try:
        return {system.file: Path(system.file).read_text(encoding="utf-8")}
    except OSError:
        return {}


def _records(source: str | Path, limits: Limits) -> tuple[list[tuple[int, Any]], Path]:
    """(row number, record) pairs, and the folder relative image paths start from."""
    path = Path(source)
    if path.suffix == ".jsonl" and path.is_file():
        lines = read_jsonl(path, limits)
        return [(n.number, n.value if n.problem is None else _Broken(n.problem)) for n in lines], path.parent
    if path.suffix == ".jsonl":
        raise error("row", f"no data file at {path}")
    from datasets import load_dataset, load_from_disk

    kinds = {".parquet": "parquet", ".json": "json", ".csv": "csv"}
    try:
        if path.is_file() and path.suffix in kinds:
            dataset = load_dataset(kinds[path.suffix], data_files=str(path), split="train")
        elif path.is_dir() and (path / "dataset_info.json").is_file():  # `Dataset.save_to_disk`
            dataset = load_from_disk(str(path))
        else:
            dataset = load_dataset(str(source), split="train")
    except Exception as e:  # datasets raises many kinds; all mean the same to the user
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error("row", f"cannot read preference data {source}: {reason}") from None
    if hasattr(dataset, "keys") and "train" in dataset:  # a DatasetDict saved to disk
        dataset = dataset["train"]
    rows = [(number, _given(record)) for number, record in enumerate(dataset, 1)]
    return rows, (path.parent if path.is_file() else Path.cwd())


def _given(record: Any) -> Any:
    """A dataset row as the values its file gives: a table holds every column in every row, and the
    fields its rows lack (a pair's `ranked`, a ranked list's `chosen`, a node one row leaves out) as
    None, which no row can mean (a value is text, an image or a list)."""
    if not isinstance(record, dict):
        return record

    def kept(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [kept(v) for v in value]
        return value

    return {k: kept(v) for k, v in record.items() if v is not None}


@dataclass(frozen=True)
class _Broken:
    reason: str


def _sides(
    system: ir.System, record: Any, where: str, base: Path, limits: Limits = DEFAULT
) -> tuple[dict[str, Any], ...]:
    """The outputs of one record as rows of node values, best first (image paths made absolute)."""
    if isinstance(record, _Broken):
        raise error("row", f"{where} {record.reason}")
    if not isinstance(record, dict):
        raise error("row", f"{where} is not an object")
    if isinstance(record.get("input"), dict):
        clashes(system, record["input"], f"{where}, input")
    if "ranked" in record and ({"chosen", "rejected"} & set(record)):
        raise error(
            "row",
            f"{where} gives both ranked and chosen/rejected: a row is a ranked list or a pair; split it "
            "into two rows",
        )
    if set(record) >= {"input", "ranked"} and isinstance(record["input"], dict):
        ranked = record["ranked"]
        if not isinstance(ranked, list) or not all(isinstance(item, dict) for item in ranked):
            raise error("row", f"{where}: ranked must be a list of objects of node values, best first")
        if len(ranked) < 2:
            raise error("row", f"{where}: ranked holds {len(ranked)} output; a ranking needs two or more")
        if len(ranked) > limits.ranked_outputs:
            raise error(
                "row",
                f"{where}: ranked holds {len(ranked):,} outputs "
                f"(Limits.ranked_outputs: {limits.ranked_outputs:,})",
            )
        _known_names(system, record, where, [f"ranked[{k}]" for k in range(len(ranked))], ranked)
        sides = tuple({**record["input"], **item} for item in ranked)
    elif {"input", "chosen", "rejected"} <= set(record) and all(
        isinstance(record[k], dict) for k in ("input", "chosen", "rejected")
    ):
        _known_names(system, record, where, ["chosen", "rejected"], [record["chosen"], record["rejected"]])
        sides = ({**record["input"], **record["chosen"]}, {**record["input"], **record["rejected"]})
    elif {"prompt", "chosen", "rejected"} <= set(record):
        sides = _trl(system, record, where)
    else:
        raise error(
            "row",
            f"{where} has neither the keys input, chosen, rejected "
            "(each an object of node values), input and ranked, nor TRL's prompt, chosen, rejected",
        )
    images = {n.base for n in system.nodes if n.type == "image"}
    return tuple(_absolute(side, images, base) for side in sides)


def _known_names(
    system: ir.System, record: dict[str, Any], where: str, parts: list[str], sides: list[dict[str, Any]]
) -> None:
    """Every key of an output names a node: a misspelt intermediate would otherwise turn a Direct pair
    into a SysDPO-Sampling one without a word. (`input` may hold more than the inputs, such as a
    reference answer a scorer reads.)"""
    names = {n.base for n in system.nodes} | {n.name for n in system.nodes}
    for part, side in zip(parts, sides, strict=True):
        for key in side:
            if key not in names:
                hint = suggest(str(key), names)
                shown = ", ".join(sorted({n.base for n in system.nodes})[:12])
                raise error(
                    "row",
                    f"{where}, {part}: '{key}' is not a node of the system"
                    + (f"; did you mean '{hint}'?" if hint else f" (nodes: {shown})"),
                )


def _trl(system: ir.System, record: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    inputs = [n for n in system.nodes if isinstance(n, ir.InputNode)]
    sampled = [n for n in system.nodes if isinstance(n, ir.SampleNode)]
    if len(inputs) != 1 or len(sampled) != 1 or inputs[0].type != "text" or sampled[0].type != "text":
        raise error(
            "row",
            f"{where}: TRL's prompt/chosen/rejected rows fit a system "
            "of one text input and one sampled text node; use input/chosen/rejected",
        )
    values = [record["prompt"], record["chosen"], record["rejected"]]
    if not all(isinstance(v, str) for v in values):
        raise error(
            "row",
            f"{where}: prompt, chosen and rejected must be strings "
            "(conversational rows are not supported yet)",
        )
    prompt, node = inputs[0].base, sampled[0].base
    return {prompt: values[0], node: values[1]}, {prompt: values[0], node: values[2]}


def _absolute(row: dict[str, Any], images: set[str], base: Path) -> dict[str, Any]:
    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute():
            return str(base / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return {k: fix(v) if k.split("[")[0] in images else v for k, v in row.items()}
