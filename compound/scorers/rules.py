"""Scorers by rule: the progression of an attribute over a plate of images (the paper's first
experiment) and exact match against a reference answer."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# ---------------------------------------------------------------- attribute measures


def _pixels(image: Any) -> np.ndarray:
    """An image (PIL or a path) as a grayscale array in [0, 1]."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.open(image)
    return np.asarray(picture.convert("L"), dtype=np.float64) / 255.0


def brightness(image: Any) -> float:
    """Mean intensity, in [0, 1]."""
    return float(_pixels(image).mean())


def area(image: Any) -> float:
    """The share of pixels brighter than mid-gray, in [0, 1] (a disc's area)."""
    return float((_pixels(image) > 0.5).mean())


def _centroid(image: Any, axis: int) -> float:
    """The centroid of what stands out from the background: intensity above the image's median, so that
    a uniform (or noisy) background does not pull the position toward the middle; the middle if nothing
    stands out."""
    pixels = _pixels(image)
    pixels = np.clip(pixels - np.median(pixels), 0.0, None)
    weights = pixels / pixels.sum() if pixels.sum() > 0 else np.full_like(pixels, 1 / pixels.size)
    positions = np.arange(pixels.shape[axis]) / max(1, pixels.shape[axis] - 1)
    return float((weights.sum(axis=1 - axis) * positions).sum())


def x(image: Any) -> float:
    """Horizontal position of the bright foreground's centroid, 0 (left) to 1 (right)."""
    return _centroid(image, 1)


def y(image: Any) -> float:
    """Vertical position of the bright foreground's centroid, 0 (top) to 1 (bottom)."""
    return _centroid(image, 0)


MEASURES: dict[str, Callable[[Any], float]] = {"brightness": brightness, "area": area, "x": x, "y": y}


# ---------------------------------------------------------------- built-in scorers


class Progression:
    """How well a sequence of images progresses in a direction (the paper's first experiment).

    The attribute is measured on each image of `field` (a plate of images) by
    `measure`: "area", "brightness", "x", "y" or any callable image -> float.
    The direction comes from the row's `direction` value ("up"/"down", +1/-1;
    increasing when the row has none). Each step between consecutive images is
    up, down, or flat (within `tolerance`), signed by the direction:

    | steps | score q |
    |---|---|
    | all up | 0.5 + 0.5 * smallest step / largest step (1.0 when evenly spaced) |
    | up and flat, no down | 0.25 |
    | all flat | 0 |
    | up and down | 0 |
    | down and flat, no up | -0.25 |
    | all down (reversed) | -1 |
    | malformed (fewer than two images, unreadable) | -1 |

    A sequence is order-consistent when every step is up.
    """

    def __init__(
        self,
        field: str = "image",
        measure: str | Callable[[Any], float] = "brightness",
        tolerance: float = 0.02,
        direction: str = "direction",
    ):
        self.field, self.tolerance, self.direction_field = field, float(tolerance), direction
        self.measure = measure
        if isinstance(measure, str) and measure not in self.measures():
            known = ", ".join(self.measures())
            raise ValueError(f"measure={measure!r}: use one of {known}, or a callable")

    def measures(self) -> tuple[str, ...]:
        """The measure names this scorer takes."""
        return tuple(MEASURES)

    def _measure(self, row: Mapping[str, Any]) -> Callable[[Any], float]:
        return self.measure if callable(self.measure) else MEASURES[self.measure]

    def direction(self, row: Mapping[str, Any]) -> int:
        """+1 (the attribute should grow), -1 (shrink), 0 when the row does not say."""
        given = row.get(self.direction_field)
        if given is None:
            return 0
        return 1 if str(given).lower() in ("up", "+1", "1", "increasing") else -1

    def steps(self, row: Mapping[str, Any]) -> list[float] | None:
        """The signed steps between consecutive images, or None if the sequence is malformed."""
        if self.field not in row:  # a misspelt field= would score every sample as malformed
            raise KeyError(f"progression reads '{self.field}', which the row does not have ({_keys(row)})")
        images = row[self.field]
        if not isinstance(images, Sequence) or isinstance(images, str) or len(images) < 2:
            return None
        try:
            values = [self._measure(row)(image) for image in images]
        except (OSError, ValueError):
            return None
        sign = self.direction(row) or 1
        return [sign * (b - a) for a, b in itertools.pairwise(values)]

    def __call__(self, row: Mapping[str, Any]) -> float:
        steps = self.steps(row)
        if steps is None:
            return -1.0
        up = [s for s in steps if s > self.tolerance]
        down = [s for s in steps if s < -self.tolerance]
        if len(up) == len(steps):
            return 0.5 + 0.5 * min(up) / max(up)
        if len(down) == len(steps):
            return -1.0
        if up and down:
            return 0.0
        return 0.25 if up else -0.25 if down else 0.0

    def ordered(self, row: Mapping[str, Any]) -> bool:
        steps = self.steps(row)
        return steps is not None and all(s > self.tolerance for s in steps)

    def details(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"score": self(row), "ordered": self.ordered(row), "steps": self.steps(row)}


class ExactMatch:
    """1 when the text of `field` equals the reference answer `answer` (stripped, case-folded), else 0."""

    def __init__(self, field: str = "final", answer: str = "answer"):
        self.field, self.answer = field, answer

    def __call__(self, row: Mapping[str, Any]) -> float:
        if self.answer not in row:
            raise KeyError(
                f"exact_match needs the reference answer '{self.answer}' in each row ({_keys(row)}): give it "
                "as a column of the inputs file"
            )
        if self.field not in row:  # a misspelt field= would score every sample 0
            raise KeyError(f"exact_match reads '{self.field}', which the row does not have ({_keys(row)})")
        return float(str(row[self.field]).strip().casefold() == str(row[self.answer]).strip().casefold())

    def feedback(self, row: Mapping[str, Any]) -> str:
        """What an optimizer's reflection reads of a row: right, or what was expected."""
        given, expected = str(row[self.field]).strip(), str(row[self.answer]).strip()
        if self(row):
            return f"right: {self.field} is {given!r}"
        return f"wrong: {self.field} is {given!r}, the answer is {expected!r}"


def _keys(row: Mapping[str, Any]) -> str:
    """What a row holds, for a message."""
    return "it has " + ", ".join(sorted(map(str, row))) if row else "it is empty"
