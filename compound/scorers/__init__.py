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

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from compound.diagnostics import CompoundError, error
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
    if name.endswith((".toml", ".yaml", ".yml")):
        return _from_file(Path(name), options)
    if name == "weighted":
        return _weighted(options.pop("scorers", None), **options)
    factory = SCORERS.get(name) or (_plugins()[name].load() if name in _plugins() else None)
    if factory is None:
        known = ", ".join([*SCORERS, "weighted", *sorted(_plugins())])
        raise error("config", f"no scorer named {name!r} (scorers: {known})")
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise error("config", f"scorer {name!r}: {e}") from None


def _weighted(members: Any, **extra: Any) -> Scorer:
    if extra:
        raise error("config", f"scorer 'weighted' takes only scorers, not {', '.join(sorted(extra))}")
    if not isinstance(members, Sequence) or isinstance(members, str) or not members:
        raise error("config", "scorer 'weighted' needs scorers: a list of {name = ..., weight = ..., ...}")
    found = []
    for k, member in enumerate(members):
        if not isinstance(member, Mapping) or "name" not in member:
            raise error("config", f"scorer 'weighted', member {k + 1}: give its name (and weight, options)")
        options = dict(member)
        name, weight = str(options.pop("name")), options.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise error("config", f"scorer 'weighted', member {k + 1} ({name}): weight must be a number")
        found.append((scorer(name, **options), float(weight)))
    return Weighted(found)


def _from_file(path: Path, overrides: Mapping[str, Any]) -> Scorer:
    """A scorer declared in a TOML or YAML file: its `name` and options (paths relative to the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise error("config", f"cannot read the scorer file {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            spec: Any = tomllib.loads(text)
        else:
            import yaml

            spec = yaml.safe_load(text)
    except Exception as e:  # tomllib's and yaml's errors both carry the position
        raise error("config", f"{path}: {e}") from None
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise error("config", f"{path}: a scorer file gives name = ... and the scorer's options")
    options = _relative(dict(spec), path.parent)
    name = str(options.pop("name"))
    try:
        return scorer(name, **{**options, **overrides})
    except CompoundError as e:
        raise error("config", f"{path}: {e.diagnostics[0].message}") from None


def _relative(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """`path` options (and members' paths) made relative to the scorer file's folder."""
    found = dict(options)
    if isinstance(found.get("path"), str) and not Path(found["path"]).is_absolute():
        found["path"] = str(base / found["path"])
    if isinstance(found.get("scorers"), list):
        found["scorers"] = [_relative(m, base) if isinstance(m, dict) else m for m in found["scorers"]]
    return found
