"""Scorers: one number for a whole sampled row, to pair samples into preferences and pick best-of-N.

A scorer is any callable `row -> float` (higher is better), where a row is what
`CompiledSystem.sample` returns: node names to values, plates as lists, images
as PIL images or paths. It may also have `score_group(rows) -> list[float]`,
scoring the samples of one input together (a pairwise judge must; a model
batches), and `details(row) -> dict` for reports.

Built in: by rule, `progression` and `exact_match` (`rules`); models from local
folders, `reward_model`, `judge`, `similarity` and `clip_similarity`
(`models`); and `weighted`, a weighted sum of others (`combine`). Then the
`compound.scorers` entry-point group, whose entry points name a class or
factory called with the scorer's options:

    # pyproject.toml of your package
    [project.entry-points."compound.scorers"]
    length = "my_package.scoring:Length"

    # my_package/scoring.py
    class Length:
        def __init__(self, field: str = "final"):
            self.field = field
        def __call__(self, row) -> float:
            return -len(row[self.field])

    $ compound pairs samples/ --scorer length --option field=answer --out prefs.jsonl

A scorer is declared by name and options on the command line (`--scorer
reward_model --option path=models/rm`) or in a TOML or YAML file given in
place of the name (`--scorer scorer.toml`):

    name = "weighted"
    [[scorers]]
    name = "reward_model"
    path = "models/rm"
    weight = 1.0
    [[scorers]]
    name = "similarity"
    path = "models/minilm"
    reference = "answer"
    weight = 0.5

Paths in a file are relative to it. Options are plain values; nothing in them is
run or reaches a Python attribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from compound.diagnostics import CompoundError, error
from compound.io import read_table
from compound.scorers.combine import Weighted, group_scores
from compound.scorers.rules import MEASURES, ExactMatch, Progression, area, brightness, x, y

__all__ = [
    "MEASURES",
    "SCORERS",
    "ExactMatch",
    "Progression",
    "Scorer",
    "area",
    "brightness",
    "group_scores",
    "scorer",
    "x",
    "y",
]

ENTRY_POINT_GROUP = "compound.scorers"


class Scorer(Protocol):
    def __call__(self, row: Mapping[str, Any]) -> float: ...


def _model(name: str) -> Callable[..., Scorer]:
    """A model scorer's class, imported when first asked for (it brings transformers)."""

    def make(**options: Any) -> Scorer:
        from compound.scorers import models

        found: Scorer = getattr(models, name)(**options)
        return found

    return make


SCORERS: dict[str, Callable[..., Scorer]] = {
    "progression": Progression,
    "exact_match": ExactMatch,
    "reward_model": _model("RewardModel"),
    "judge": _model("Judge"),
    "similarity": _model("TextSimilarity"),
    "clip_similarity": _model("ImageTextSimilarity"),
}


@cache
def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in SCORERS}


def scorer(name: str, **options: Any) -> Scorer:
    """The scorer called `name` (or declared in the TOML or YAML file `name`), made with `options`; a
    clear error for an unknown name or option."""
    return _make(name, options, ())


def _make(name: str, options: Mapping[str, Any], files: tuple[Path, ...]) -> Scorer:
    """A scorer by name or file; `files`: the scorer files being read, outermost first (to resolve a
    member file from its parent's folder, and to refuse a file that includes itself)."""
    if name.endswith((".toml", ".yaml", ".yml")):
        path = Path(name) if Path(name).is_absolute() or not files else files[-1].parent / name
        return _from_file(path, options, files)
    if name == "weighted":
        extra = {k: v for k, v in options.items() if k != "scorers"}
        return _weighted(options.get("scorers"), extra, files)
    factory = SCORERS.get(name) or (_plugins()[name].load() if name in _plugins() else None)
    if factory is None:
        known = ", ".join([*SCORERS, "weighted", *sorted(_plugins())])
        raise error("config", f"no scorer named {name!r} (scorers: {known})")
    if name in SCORERS:
        _check_options(name, options)
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise error("config", f"scorer {name!r}: {e}") from None


#: What the built-in scorers' options take: text, a whole number of at least 1, or one of at least 0, or a
#: finite number of at least 0 (anything else is the scorer's own to check).
_OPTIONS: dict[str, str] = {
    "path": "text",
    "field": "text",
    "measure": "text",
    "direction": "text",
    "answer": "text",
    "prompt": "text",
    "template": "text",
    "reference": "text",
    "verdicts": "text",
    "gguf_file": "text",
    "image": "text",
    "text": "text",
    "chat": "flag",
    "batch_size": "count",
    "max_length": "count",
    "label": "index",
    "tolerance": "number",
}


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse a built-in scorer's option of the wrong type, or a number that is not finite or is
    negative: each would fail deep inside the scorer, or score every sample alike."""
    for key, value in options.items():
        kind = _OPTIONS.get(key)
        if kind is not None and not _TAKES[kind][1](value):
            raise error("config", f"scorer {name!r}: {key}= takes {_TAKES[kind][0]}, not {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: What each kind of option takes, and its test.
_TAKES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "text": ("a string", lambda v: isinstance(v, str)),
    "flag": ("true or false", lambda v: isinstance(v, bool)),
    "count": ("a whole number of at least 1", lambda v: _number(v) and v == int(v) and v >= 1),
    "index": ("a whole number of at least 0", lambda v: _number(v) and v == int(v) and v >= 0),
    "number": ("a finite number of at least 0", lambda v: _number(v) and v >= 0),
}


def _weighted(members: Any, extra: Mapping[str, Any], files: tuple[Path, ...]) -> Scorer:
    if extra:
        raise error("config", f"scorer 'weighted' takes only scorers, not {', '.join(sorted(extra))}")
    if not isinstance(members, Sequence) or isinstance(members, str) or not members:
        raise error("config", "scorer 'weighted' needs scorers: a list of {name = ..., weight = ..., ...}")
    found = []
    for k, member in enumerate(members):
        if not isinstance(member, Mapping) or not isinstance(member.get("name"), str):
            raise error("config", f"scorer 'weighted', member {k + 1}: give its name (and weight, options)")
        options = dict(member)
        name, weight = str(options.pop("name")), options.pop("weight", 1.0)
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight == 0:
            raise error(
                "config", f"scorer 'weighted', member {k + 1} ({name}): weight must be a finite number, not 0"
            )
        found.append((_make(name, options, files), float(weight)))
    return Weighted(found)


def _from_file(path: Path, overrides: Mapping[str, Any], files: tuple[Path, ...]) -> Scorer:
    """A scorer declared in a TOML or YAML file: its `name` and options (paths relative to the file)."""
    if path.resolve() in {f.resolve() for f in files}:
        chain = " -> ".join(str(f) for f in (*files, path))
        raise error("config", f"the scorer file {path} includes itself ({chain})")
    spec = read_table(path, "scorer file")
    if not isinstance(spec.get("name"), str):
        raise error("config", f"{path}: a scorer file gives name = ... and the scorer's options")
    options = _relative(dict(spec), path.parent)
    name = str(options.pop("name"))
    try:
        return _make(name, {**options, **overrides}, (*files, path))
    except CompoundError as e:
        message = e.diagnostics[0].message
        raise error("config", message if message.startswith(str(path)) else f"{path}: {message}") from None


def _relative(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """`path` options (and members' paths) made relative to the scorer file's folder."""
    found = dict(options)
    if isinstance(found.get("path"), str) and not Path(found["path"]).is_absolute():
        found["path"] = str(base / found["path"])
    if isinstance(found.get("scorers"), list):
        found["scorers"] = [_relative(m, base) if isinstance(m, dict) else m for m in found["scorers"]]
    return found
