"""The demos' `storyboard` scorer: progression with the direction and attribute read from the request."""

import numpy as np
import pytest
from compound_demos.scoring import Storyboard
from PIL import Image

from compound.scorers import scorer


def gray(level: int) -> Image.Image:
    """A flat image of pixel value `level`: its brightness is exactly level / 255."""
    return Image.fromarray(np.full((16, 16), level, np.uint8), mode="L")


def row(levels, request="a scene getting brighter", **extra):
    return {"request": request, "image": [gray(v) for v in levels], **extra}


def test_progression_direction_and_auto_measure():
    score = Storyboard()
    assert score.direction(row([], "a disc growing")) == 1
    assert score.direction(row([], "a disc shrinking")) == -1
    assert score.direction(row([], "a dot moving left")) == -1 and score.direction(row([], "a cat")) == 0
    assert score.direction(row([], "a cat", direction="down")) == -1
    assert score(row([50, 100, 150], "a scene getting brighter")) == pytest.approx(1.0)  # auto: brightness
    said = row([50, 100, 150], "a cat", direction="up")
    assert Storyboard(measure="brightness")(said) == pytest.approx(1.0)
    assert score(said) == 0.25  # auto picks area here: 0, 0, then every pixel bright


@pytest.mark.parametrize(
    ("levels", "asked", "expected"),
    [([150, 100, 50], "a scene getting darker", 1.0), ([150, 100, 50], "a scene getting brighter", -1.0)],
)
def test_the_request_sets_the_direction(levels, asked, expected):
    assert Storyboard(measure="brightness")(row(levels, asked)) == pytest.approx(expected)


def test_it_is_installed_as_a_scorer_plugin():
    assert isinstance(scorer("storyboard", measure="brightness"), Storyboard)
