"""Sampled rows on disk, contact sheets, and preference pairs built from scored samples.

`compound sample` writes DIR/samples.jsonl (one sampled row per line:
`{"id", "input": {...}, "values": {...}, "score"?}`, images saved as PNG under
DIR/images/ and referred to by path relative to DIR), DIR/contact.png and
DIR/contact.html. `compound pairs` reads it back, scores the rows, and pairs the
samples of each input (best against worst, or every better-worse pair whose
score gap is at least `min_gap` and whose preferred sample scores at least
`min_chosen`) into DESIGN.md's preference rows.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compound import ir
from compound.diagnostics import CompoundError, Diagnostic
from compound.scorers import Scorer


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
    system: ir.System, rows: Sequence[Mapping[str, Any]], per_input: int, first: int = 0
) -> list[Sample]:
    """Sampled rows (n per input, in order) as Samples: inputs apart from the generated values."""
    inputs = {n.base for n in system.nodes if n.kind == "input"}
    return [
        Sample(
            id=f"{first + k // per_input}-{k % per_input}",
            input={key: v for key, v in row.items() if key in inputs},
            values={key: v for key, v in row.items() if key not in inputs},
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

    lines = []
    for s in samples:
        record = {
            "id": s.id,
            "input": s.input,
            "values": {k: plain(v, f"{s.id}-{k}") for k, v in s.values.items()},
        }
        if s.score is not None:
            record["score"] = s.score
        lines.append(json.dumps(record, ensure_ascii=False))
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)
    return path


def read(folder: str | Path, name: str = "samples.jsonl") -> list[Sample]:
    """Samples written by `write`, with image paths made absolute."""
    folder = Path(folder).resolve()
    path = folder / name
    if not path.is_file():
        raise CompoundError(
            [Diagnostic("error", "config", f"no {name} in {folder}: run `compound sample` first")]
        )

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("images/") and value.endswith(".png"):
            return str(folder / value)
        return [absolute(v) for v in value] if isinstance(value, list) else value

    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            samples.append(
                Sample(
                    record["id"],
                    record["input"],
                    {k: absolute(v) for k, v in record["values"].items()},
                    record.get("score"),
                )
            )
    return samples


def score(samples: Iterable[Sample], scorer: Scorer) -> None:
    for s in samples:
        s.score = float(scorer(s.row))


def by_input(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(json.dumps(s.input, sort_keys=True, ensure_ascii=False), []).append(s)
    return groups


def best_of(samples: Sequence[Sample]) -> list[Sample]:
    """The highest-scoring sample of each input (the first one on ties)."""
    return [max(group, key=lambda s: s.score or 0.0) for group in by_input(samples).values()]


@dataclass
class Pairing:
    pairs: list[dict[str, Any]]
    gaps: list[float]
    inputs: int
    without_pair: int


def pairs(
    samples: Sequence[Sample],
    strategy: str = "best-worst",
    min_gap: float = 0.0,
    relative_to: Path | None = None,
    min_chosen: float | None = None,
) -> Pairing:
    """Preference rows from scored samples: per input, best against worst (`best-worst`) or every
    pair with a higher and a lower score (`all`); only pairs whose score gap is at least `min_gap`
    (and above 0) and, when given, whose preferred sample scores at least `min_chosen` (a pair whose
    better side is still a failure teaches only what to avoid). Image paths are written relative to
    `relative_to` when given."""
    if strategy not in ("best-worst", "all"):
        raise CompoundError([Diagnostic("error", "config", f"strategy {strategy!r}: use best-worst or all")])
    out, gaps, without = [], [], 0
    groups = by_input(samples)
    for group in groups.values():
        ranked = sorted(group, key=lambda s: -(s.score or 0.0))
        candidates = (
            [(ranked[0], ranked[-1])]
            if strategy == "best-worst"
            else [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
        )
        kept = [
            (a, b)
            for a, b in candidates
            if (a.score or 0.0) - (b.score or 0.0) >= max(min_gap, 1e-12)
            and (min_chosen is None or (a.score or 0.0) >= min_chosen)
        ]
        without += not kept
        for a, b in kept:
            gaps.append((a.score or 0.0) - (b.score or 0.0))
            out.append(
                {
                    "input": a.input,
                    "chosen": _relative(a.values, relative_to),
                    "rejected": _relative(b.values, relative_to),
                }
            )
    return Pairing(out, gaps, len(groups), without)


def _relative(values: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    import os

    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if (
            base is not None
            and isinstance(value, str)
            and value.endswith(".png")
            and Path(value).is_absolute()
        ):
            return os.path.relpath(value, base)
        return value

    return {k: fix(v) for k, v in values.items()}


# ---------------------------------------------------------------- contact sheets


def contact_sheet(samples: Sequence[Sample], folder: str | Path, thumb: int = 64) -> tuple[Path, Path]:
    """DIR/contact.png and DIR/contact.html: a row per input, its samples side by side,
    image nodes as thumbnails, text nodes and scores as captions."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    groups = list(by_input(samples).values())
    columns = max(len(g) for g in groups)
    images_per = max((len(_images(s)) for s in samples), default=0)
    cell_w = max(1, images_per) * (thumb + 4) + 8
    label_w, text_h = 220, 46
    cell_h = (thumb + 8 if images_per else 0) + text_h
    sheet = Image.new("RGB", (label_w + columns * cell_w, max(1, len(groups)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, group in enumerate(groups):
        top = r * cell_h
        draw.text(
            (6, top + 6), _short(", ".join(f"{k}: {v}" for k, v in group[0].input.items()), 34), fill="black"
        )
        for c, s in enumerate(group):
            left = label_w + c * cell_w
            for j, image in enumerate(_images(s)):
                picture = _open(image).convert("RGB").resize((thumb, thumb), Image.Resampling.NEAREST)
                sheet.paste(picture, (left + 4 + j * (thumb + 4), top + 4))
            caption = " | ".join(_short(str(v), 40) for v in s.values.values() if isinstance(v, str))
            y = top + (thumb + 8 if images_per else 4)
            if s.score is not None:
                draw.text((left + 4, y), f"score {s.score:+.3f}", fill="darkblue")
            draw.text((left + 4, y + 14), _short(caption.replace("\n", " / "), 44), fill="black")
        draw.line((0, top + cell_h - 1, sheet.width, top + cell_h - 1), fill="#cccccc")
    png = folder / "contact.png"
    sheet.save(png)
    page = folder / "contact.html"
    page.write_text(_html(groups, folder), encoding="utf-8")
    return png, page


def _images(sample: Sample) -> list[Any]:
    found: list[Any] = []
    for value in sample.values.values():
        for v in value if isinstance(value, list) else [value]:
            if (hasattr(v, "mode") and hasattr(v, "save")) or (isinstance(v, str) and v.endswith(".png")):
                found.append(v)
    return found


def _open(image: Any) -> Any:
    from PIL import Image

    return image if isinstance(image, Image.Image) else Image.open(image)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _html(groups: Sequence[Sequence[Sample]], folder: Path) -> str:
    import os

    def cell(s: Sample) -> str:
        pictures = "".join(
            f'<img src="{html.escape(os.path.relpath(i, folder) if isinstance(i, str) else "")}" '
            'width="64" height="64">'
            for i in _images(s)
        )
        texts = "".join(
            f"<div><b>{html.escape(k)}</b>: <pre>{html.escape(v)}</pre></div>"
            for k, v in s.values.items()
            if isinstance(v, str)
        )
        score = f"<div>score {s.score:+.3f}</div>" if s.score is not None else ""
        return f"<td>{pictures}{score}{texts}</td>"

    rows = "".join(
        "<tr><th>"
        + "<br>".join(html.escape(f"{k}: {v}") for k, v in g[0].input.items())
        + "</th>"
        + "".join(cell(s) for s in g)
        + "</tr>"
        for g in groups
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>compound samples</title><style>"
        "body{font-family:sans-serif} td,th{vertical-align:top;border:1px solid #ddd;padding:6px} "
        "pre{margin:0;white-space:pre-wrap} img{image-rendering:pixelated;margin:1px}</style>"
        "<table>" + rows + "</table>"
    )
