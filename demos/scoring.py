"""`storyboard`: the progression scorer reading its direction and attribute from an English request.

Registered as the `storyboard` scorer (entry-point group `compound.scorers`),
for systems such as `examples/storyboard.cmp` whose rows hold a free-text
request ("a disc growing", "the light fading"): the direction comes from the
request's words (`up`, `down`: regular expressions; grow, larger, brighter,
right, ... versus shrink, smaller, darker, left, ...) unless the row gives a
`direction`, and with `measure="auto"` the attribute too (left/right/moving ->
x, dark/bright/light/dim -> brightness, else area).

    compound pairs samples/ --scorer storyboard --out prefs.jsonl
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from compound.scorers import MEASURES, Progression

UP = r"\b(grow\w*|larger|bigger|increas\w*|brighter|lighter|right\w*|more|rising|up)\b"
DOWN = r"\b(shrink\w*|smaller|decreas\w*|darker|dimmer|left\w*|less|fewer|falling|down)\b"
AUTO = (
    (r"\b(right|left|moving|move\w*)\b", "x"),
    (r"\b(dark\w*|bright\w*|light\w*|dim\w*)\b", "brightness"),
    (r".*", "area"),
)


class Storyboard(Progression):
    """`Progression` with the direction (and, with `measure="auto"`, the attribute) read from the
    request's words."""

    def __init__(
        self,
        field: str = "image",
        request: str = "request",
        measure: str | Callable[[Any], float] = "auto",
        tolerance: float = 0.02,
        up: str = UP,
        down: str = DOWN,
    ):
        self.request = request
        self.up, self.down = re.compile(up, re.I), re.compile(down, re.I)
        super().__init__(field, measure, tolerance)

    def measures(self) -> tuple[str, ...]:
        return (*MEASURES, "auto")

    def _measure(self, row: Mapping[str, Any]) -> Callable[[Any], float]:
        if self.measure != "auto":
            return super()._measure(row)
        text = str(row.get(self.request, ""))
        return MEASURES[next(name for pattern, name in AUTO if re.search(pattern, text, re.I))]

    def direction(self, row: Mapping[str, Any]) -> int:
        """+1 (the attribute should grow), -1 (shrink), 0 when neither the row nor the request says."""
        said = super().direction(row)
        if said:
            return said
        text = str(row.get(self.request, ""))
        up, down = bool(self.up.search(text)), bool(self.down.search(text))
        return 1 if up and not down else -1 if down and not up else 0
