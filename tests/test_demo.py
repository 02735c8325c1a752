"""The progression demo: its task, and the --quick run end to end (every artifact, all five rows)."""

import json
import math
import random
import re

import numpy as np
import pytest

from compound.demo import progression as task
from compound.demo.evaluate import plan_quality, score
from compound.scorers import MEASURES


def test_held_out_requests_share_no_phrasing_with_training_and_hold_out_one_intent():
    train, held = task.requests("train"), task.requests("held")
    assert not {r.text for r in train} & {r.text for r in held}
    assert not any(r.text.startswith(task.HELD_OUT_PREFIX) for r in train)
    assert (task.HELD_OUT_INTENT[0], task.HELD_OUT_INTENT[1]) not in {
        (r.attribute, r.direction) for r in train
    }
    assert task.HELD_OUT_INTENT in {(r.attribute, r.direction) for r in held}


def test_captions_parse_plans_match_the_pattern_and_levels_measure_in_order():
    for text in task.captions():
        attribute, level, synonym = task.parse(text)
        assert task.caption(attribute, level, synonym) == text
    rng = random.Random(0)
    for request in task.requests("train")[:20]:
        assert re.fullmatch(task.PATTERN, task.plan(request, rng))
    generator = np.random.default_rng(0)
    for attribute in task.ATTRIBUTES:
        values = [MEASURES[attribute.measure](task.render(attribute, level, generator)) for level in range(5)]
        assert values == sorted(values) and min(np.diff(values)) > 0.03


def test_a_perfect_sequence_scores_one_and_its_reverse_minus_one():
    generator = np.random.default_rng(0)
    request = task.Request("a disc growing", "size", 1)
    images = [task.render(task.BY_NAME["size"], level, generator) for level in (0, 2, 4)]
    assert score({"image": images}, request) == (pytest.approx(1.0, abs=0.1), True)  # even in area
    assert score({"image": images[::-1]}, request) == (-1.0, False)
    assert plan_quality("disc tiny\ndisc medium\ndisc huge", request)["ordered"] == 1.0
    assert plan_quality("disc big\ndisc tiny\ndisc huge", request) == {
        "valid": 1.0,
        "right_attribute": 1.0,
        "ordered": 0.0,
        "canonical": 2 / 3,
    }


def test_quick_demo_writes_every_artifact(tmp_path):
    from compound.demo.experiment import Progression
    from compound.demo.protocol import run

    demo = Progression()
    results = run(demo, tmp_path / "demo", demo.settings(quick=True, seeds=None))
    text = results.read_text()
    for method in demo.methods:
        row = next(line for line in text.splitlines() if line.startswith(f"| {method.name} |"))
        numbers = re.findall(r"-?\d+(?:\.\d+)?", row.split("|", 2)[2])
        assert len(numbers) == 4 and all(math.isfinite(float(n)) for n in numbers)
    assert "compound demo progression --quick`" in text
    assert (tmp_path / "demo" / "grid.png").read_bytes().startswith(b"\x89PNG")
    for run_dir in ("writer-only", "painter-only", "sysdpo-joint"):
        assert (tmp_path / "demo" / "seed-0" / run_dir / "report" / "loss.png").exists()
    data = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(data["results"]) == {m.name for m in demo.methods}
