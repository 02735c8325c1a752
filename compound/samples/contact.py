"""Contact sheets: a folder's samples at a glance, as DIR/contact.png and DIR/contact.html."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compound.io import atomic_file, atomic_write
from compound.samples.store import Sample, by_input


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
    with atomic_file(png) as tmp:
        sheet.save(tmp, format="PNG")
    page = folder / "contact.html"
    atomic_write(page, _html(groups, folder))
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
