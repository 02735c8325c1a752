"""Separable synthetic preferences for the storyboard system: the writer should prefer
ascending plans, the painter clean discs over noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"small": 2.5, "medium": 4.5, "large": 6.5}
WORDS = ["lake", "cat", "tower", "cloud", "river", "moon", "forest", "bird", "field", "road", "ship", "hill"]


def disc(size: str, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[:16, :16]
    cy, cx = 7.5 + rng.uniform(-1, 1, 2)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= SIZES[size] ** 2
    return Image.fromarray(np.where(inside, 230, 20).astype(np.uint8), mode="L")


def noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L")


def storyboard_prefs(folder: Path, name: str, count: int, seed: int) -> Path:
    """Write NAME.jsonl and its images: chosen = ascending plan and discs, rejected = descending and noise."""
    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(count):
        first, second = sorted(rng.choice(list(SIZES), 2, replace=False), key=list(SIZES).index)
        request = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {k}"
        files = {}
        for side, sizes in (("c", (first, second)), ("r", (second, first))):
            for j, size in enumerate(sizes):
                image = disc(size, rng) if side == "c" else noise(rng)
                image.save(folder / name / f"{k}{side}{j}.png")
                files[side, j] = f"{name}/{k}{side}{j}.png"
        rows.append(
            {
                "input": {"request": request},
                "chosen": {"plan": f"disc {first}\ndisc {second}", "image": [files["c", 0], files["c", 1]]},
                "rejected": {"plan": f"disc {second}\ndisc {first}", "image": [files["r", 0], files["r", 1]]},
            }
        )
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def storyboard_cmp(folder: Path, lm: Path, painter: Path, lora: bool = True) -> Path:
    path = folder / "storyboard.cmp"
    path.write_text(
        "system storyboard\n"
        f'component writer = causal_lm("{lm}"{", lora(r=8)" if lora else ""})\n'
        f'component painter = diffusion("{painter}", timesteps=4)\n'
        "input request : text\n"
        'plan : text ~ writer(request, template="Two scenes, {request}:\\n", max_new_tokens=24,\n'
        '                     pattern="disc (small|medium|large)\\ndisc (small|medium|large)")\n'
        "scene[2] : text = line(plan, i)\n"
        "image[2] : image ~ painter(scene[i])\n"
        "output image\n"
    )
    return path


def outputs_only(path: Path, out: Path) -> Path:
    """The same pairs without their intermediate nodes: SysDPO-Sampling rows."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        for side in ("chosen", "rejected"):
            row[side].pop("plan")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out
