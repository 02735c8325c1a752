"""The progression demo: its task, and the --quick run end to end (every artifact, all five rows)."""

import json
import math
import random
import re

import numpy as np
import pytest
from compound_demos import progression as task
from compound_demos.evaluate import plan_quality, score

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
        assert re.fullmatch(task.INTENT_PATTERN, task.intent(request.attribute, request.direction))
        assert re.fullmatch(task.PATTERN, task.plan(task.BY_NAME[request.attribute], request.direction, rng))
    generator = np.random.default_rng(0)
    for attribute in task.ATTRIBUTES:
        values = [MEASURES[attribute.measure](task.render(attribute, level, generator)) for level in range(5)]
        assert values == sorted(values) and min(np.diff(values)) > 0.03


def test_the_base_writers_plans_follow_the_intent_or_its_ascending_habit_at_the_stated_rates():
    """Shares over 20,000 plans against the hand-worked mixture: a random plan is strictly ordered one way
    with probability C(5,3)/5^3 = 10/125."""
    rng, disc = random.Random(0), task.BY_NAME["size"]
    random_ordered = (1 - task.P_FOLLOW - task.P_HABIT) * 10 / 125
    for direction, up, down in (
        (1, task.P_FOLLOW + task.P_HABIT + random_ordered, random_ordered),
        (-1, task.P_HABIT + random_ordered, task.P_FOLLOW + random_ordered),
    ):
        plans = [task.plan(disc, direction, rng) for _ in range(20_000)]
        levels = [[task.parse(line)[1] for line in p.split("\n")] for p in plans]
        assert np.mean([a < b < c for a, b, c in levels]) == pytest.approx(up, abs=0.012)
        assert np.mean([a > b > c for a, b, c in levels]) == pytest.approx(down, abs=0.012)


def test_the_painters_data_renders_synonyms_one_level_off_either_way_half_of_the_time():
    from compound_demos.evaluate import level_of

    generator, disc = np.random.default_rng(0), task.BY_NAME["size"]
    read = [level_of(disc, task.painting("disc little", generator)) for _ in range(2000)]  # level 1
    shares = [read.count(level) / len(read) for level in range(5)]
    expected = [task.SYNONYM_OFF / 2, 1 - task.SYNONYM_OFF, task.SYNONYM_OFF / 2, 0, 0]
    assert shares == pytest.approx(expected, abs=0.05)  # the jitter moves a few to a neighbour


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
    from compound_demos.experiment import Progression
    from compound_demos.protocol import run

    demo = Progression()
    settings = demo.settings(quick=True, seeds=None)
    settings.protocol = "one-round"  # the online protocol's path is the moa test's (and test_align's)
    # artifacts, not results: kept short
    settings.rounds, settings.eval_samples = 2, 2
    settings.train = settings.train.model_copy(update={"steps": 10})
    results = run(demo, tmp_path / "demo", settings)
    text = results.read_text()
    methods = [m for m in demo.methods if not m.online]
    data = json.loads((tmp_path / "demo" / "results.json").read_text())
    table_shows_the_results(text, demo, data["results"], [m.name for m in methods])
    assert "compound demo progression --quick --protocol one-round`" in text
    pairs_line = r"Pairs per seed: seed 0: \d+ \(images at their caption's level: chosen \d+%, rejected \d+%"
    assert re.search(pairs_line, text)
    assert (tmp_path / "demo" / "grid.png").read_bytes().startswith(b"\x89PNG")
    for run_dir in ("writer-only", "painter-only", "sysdpo-joint"):
        assert (tmp_path / "demo" / "seed-0" / run_dir / "report" / "loss.png").exists()
    assert set(data["results"]) == {m.name for m in methods}


def table_shows_the_results(text: str, demo, results: dict, methods: list[str]) -> None:
    """RESULTS.md's table against results.json: a row per method, in order, a cell per column, each the
    stored number of the one seed (times 100 for a percentage) to the column's digits, or a dash for a
    NaN."""
    lines = text.splitlines()
    header = lines.index("| method | " + " | ".join(c.header for c in demo.columns) + " |")
    rows = lines[header + 2 : header + 2 + len(methods)]
    assert [row.split(" | ")[0] for row in rows] == [f"| {m}" for m in methods]
    for method, row in zip(methods, rows, strict=True):
        cells = [c.strip() for c in row.strip().strip("|").split("|")][1:]
        (stored,) = results[method]  # one seed
        assert len(cells) == len(demo.columns)
        for column, cell in zip(demo.columns, cells, strict=True):
            value = stored[column.key]
            if math.isnan(value):
                assert cell == "–", (method, column.key)
                continue
            shown = float(cell.removesuffix("%")) if column.percent else float(cell)
            assert cell.endswith("%") == column.percent
            expected = 100 * value if column.percent else value
            assert shown == pytest.approx(expected, abs=0.5 * 10**-column.digits + 1e-9), (method, column.key)
            assert len(cell.removesuffix("%").partition(".")[2]) == column.digits


def test_order_consistency_is_also_reported_apart_for_the_unseen_intent():
    from compound_demos.evaluate import summarize

    generator = np.random.default_rng(0)
    size, place = task.BY_NAME["size"], task.BY_NAME["place"]
    growing = task.Request("a disc growing", "size", 1)
    leftward = task.Request("a dot moving left", "place", -1)  # the intent no pair asks for
    ordered = [task.render(place, level, generator) for level in (4, 2, 0)]
    unordered = [task.render(size, level, generator) for level in (2, 0, 4)]
    rows = [
        {"plan": "dot far-right\ndot center\ndot far-left", "image": ordered},
        {"plan": "disc medium\ndisc tiny\ndisc huge", "image": unordered},
        {"plan": "disc medium\ndisc tiny\ndisc huge", "image": unordered},
    ]
    got = summarize(rows, [leftward, growing, growing])
    assert (got["order"], got["order_seen"], got["order_unseen"]) == (pytest.approx(1 / 3), 0.0, 1.0)
    assert math.isnan(summarize(rows[1:], [growing, growing])["order_unseen"])


def test_validation_requests_are_training_requests_of_one_intent_kept_out_of_the_pairs():
    from compound_demos.experiment import Progression
    from compound_demos.protocol import split

    paired, scored = split(Progression(), "validation")
    assert {(r.attribute, r.direction) for r in scored} == {task.VALIDATION_INTENT}
    assert {r.text for r in scored} <= {r.text for r in task.requests("train")}
    assert not {r.text for r in scored} & {r.text for r in paired}
    assert len(paired) + len(scored) == len(task.requests("train"))
    assert split(Progression(), "held")[0] == task.requests("train")


def test_level_of_reads_back_every_level_the_renderer_draws():
    from compound_demos.evaluate import level_of

    generator = np.random.default_rng(1)
    for attribute in task.ATTRIBUTES:
        for level in range(5):
            assert level_of(attribute, task.render(attribute, level, generator)) == level
            assert level_of(attribute, task.render(attribute, level + 0.2, generator)) == level


def test_a_painter_that_renders_exactly_has_fidelity_one_and_one_a_level_off_zero():
    from compound_demos.evaluate import fidelity

    class Renderer:  # stands in for the diffusion backend: draws each caption's level, or the next one
        def __init__(self, off: bool):
            self.off, self.generator = off, np.random.default_rng(0)

        def sample(self, captions, generator, steps):
            drawn = []
            for attribute, level, _ in map(task.parse, captions):
                wrong = level + 1 if level < 4 else 3
                drawn.append(task.render(attribute, wrong if self.off else level, self.generator))
            return drawn

    assert fidelity(Renderer(off=False), draws=2) == dict.fromkeys(
        ("all", "canonical", "middle", "synonyms"), 1.0
    )
    assert fidelity(Renderer(off=True), draws=2)["all"] == 0.0


def test_pair_fidelity_counts_the_images_at_their_captions_level_on_each_side(tmp_path):
    """Two pairs, hand-worked: chosen images all at their caption's level (6 of 6); rejected ones at it
    for the first pair's three and one of the second's (4 of 6)."""
    from compound_demos.evaluate import pair_fidelity

    generator, disc = np.random.default_rng(0), task.BY_NAME["size"]
    plan = "disc tiny\ndisc medium\ndisc huge"

    def side(name: str, levels: tuple[int, ...]) -> dict:
        paths = []
        for k, level in enumerate(levels):
            task.render(disc, level, generator).save(tmp_path / f"{name}-{k}.png")
            paths.append(f"{name}-{k}.png")
        return {"plan": plan, "image": paths}

    pairs = [
        {"input": {}, "chosen": side("c0", (0, 2, 4)), "rejected": side("r0", (0, 2, 4))},
        {"input": {}, "chosen": side("c1", (0, 2, 4)), "rejected": side("r1", (1, 2, 3))},
    ]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    assert pair_fidelity(prefs) == {"chosen": 1.0, "rejected": pytest.approx(4 / 6)}


@pytest.mark.parametrize("name", ["progression", "moa", "moa2"])
def test_every_showcased_request_is_held_out(name):
    """The grid shows held-out requests only; one named from another split would silently drop out."""
    from compound_demos import demo_task

    demo = demo_task(name)
    shown = demo.settings(quick=False, seeds=None).showcase
    assert shown and set(shown) <= {r.text for r in demo.requests("held")}
