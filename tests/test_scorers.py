"""Scorers: progression on hand-made sequences with known attribute values; exact match; plugins."""

import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from compound import scorers
from compound.diagnostics import CompoundError
from compound.scorers import ExactMatch, Progression, area, brightness, scorer, x


def gray(level: int) -> Image.Image:
    """A flat image of pixel value `level`: its brightness is exactly level / 255."""
    return Image.fromarray(np.full((16, 16), level, np.uint8), mode="L")


def row(levels, direction="up", **extra):
    return {"direction": direction, "image": [gray(v) for v in levels], **extra}


def test_measures_are_exact_on_known_images():
    assert brightness(gray(51)) == pytest.approx(51 / 255)
    disc = np.zeros((16, 16), np.uint8)
    disc[4:8, 2:6] = 255  # 16 bright pixels of 256, centred at column 3.5
    assert area(Image.fromarray(disc)) == 16 / 256
    assert x(Image.fromarray(disc)) == pytest.approx(3.5 / 15)
    disc[disc == 0] = 77  # a gray background: the position is still the disc's (the intensity centroid
    assert x(Image.fromarray(disc)) == pytest.approx(3.5 / 15)  # would be pulled to 7.0 / 15)


@pytest.mark.parametrize(
    ("levels", "direction", "expected", "ordered"),
    [
        ([50, 100, 150], "up", 1.0, True),  # increasing, evenly spaced
        ([50, 80, 170], "up", 0.5 + 0.5 * 30 / 90, True),  # increasing, uneven
        ([150, 100, 50], "down", 1.0, True),  # decreasing, as asked
        ([150, 100, 50], "up", -1.0, False),  # reversed
        ([100, 100, 102], "up", 0.0, False),  # flat (within the tolerance of 0.02)
        ([50, 50, 150], "up", 0.25, False),  # one flat step
        ([150, 150, 50], "up", -0.25, False),  # one flat step, then the wrong way
        ([50, 150, 100], "up", 0.0, False),  # mixed
        ([50], "up", -1.0, False),  # malformed: one image
    ],
    ids=[
        "increasing",
        "uneven",
        "decreasing",
        "reversed",
        "flat",
        "one-flat",
        "flat-then-wrong",
        "mixed",
        "malformed",
    ],
)
def test_progression_scores(levels, direction, expected, ordered):
    score = Progression(measure="brightness")
    assert score(row(levels, direction)) == pytest.approx(expected, abs=1e-9)
    assert score.ordered(row(levels, direction)) is ordered


def test_progression_direction_comes_from_the_row():
    score = Progression(measure="brightness")
    assert score.direction({"direction": "down"}) == -1 and score.direction({"direction": 1}) == 1
    assert score.direction({}) == 0  # increasing when the row does not say
    assert score({"image": [gray(v) for v in (50, 100, 150)]}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="measure='auto'"):
        Progression(measure="auto")


def test_exact_match():
    assert ExactMatch()({"final": " Four ", "answer": "four"}) == 1.0
    assert ExactMatch(field="a")({"a": "5", "answer": "4"}) == 0.0


def test_scorers_by_name_and_from_an_entry_point(tmp_path, monkeypatch):
    assert scorer("progression", measure="area").measure == "area"
    with pytest.raises(CompoundError, match="no scorer named 'progresion'"):
        scorer("progresion")
    with pytest.raises(CompoundError, match="scorer 'progression'"):
        scorer("progression", measure="volume")
    (tmp_path / "length_scorer.py").write_text(
        textwrap.dedent("""
        class Length:
            def __init__(self, field="final"):
                self.field = field
            def __call__(self, row):
                return -len(row[self.field])
    """)
    )
    info = tmp_path / "length_scorer-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: length-scorer\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[compound.scorers]\nlength = length_scorer:Length\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    scorers._plugins.cache_clear()
    try:
        assert scorer("length", field="answer")({"answer": "abc"}) == -3
    finally:
        sys.modules.pop("length_scorer", None)
        scorers._plugins.cache_clear()
