"""Preference data: both row formats, every kind of bad row reported with its number and reason."""

import json

import numpy as np
import pytest
from PIL import Image

import compound
from compound.data import load_preferences
from compound.diagnostics import CompoundError

SYSTEM = (
    'system s\ncomponent writer = causal_lm("w")\ncomponent painter = diffusion("p")\n'
    "input request : text\nplan : text ~ writer(request)\nscene[2] : text = line(plan, i)\n"
    "image[2] : image ~ painter(scene[i])\noutput image\n"
)


@pytest.fixture
def data(tmp_path):
    system = compound.compile_source(SYSTEM, str(tmp_path / "s.cmp")).system
    (tmp_path / "s.cmp").write_text(SYSTEM)
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c", "d"):
        Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "img" / "broken.png").write_text("not an image")
    return system, tmp_path


def good(prompt="r", **chosen):
    row = {
        "input": {"request": prompt},
        "chosen": {"plan": "a\nb", "image": ["img/a.png", "img/b.png"]},
        "rejected": {"plan": "b\na", "image": ["img/c.png", "img/d.png"]},
    }
    row["chosen"].update(chosen)
    return json.dumps(row)


def test_a_valid_file_passes_and_image_paths_are_relative_to_it(data):
    system, root = data
    (root / "prefs.jsonl").write_text(good() + "\n\n" + good("s") + "\n")
    prefs = load_preferences(system, root / "prefs.jsonl")
    assert [p.row for p in prefs.pairs] == [1, 3]
    assert prefs.pairs[0].chosen["image"][1] == str(root / "img" / "b.png")
    assert prefs.pairs[1].rejected == {
        "request": "s",
        "plan": "b\na",
        "image": [str(root / "img" / "c.png"), str(root / "img" / "d.png")],
    }


def test_every_bad_row_is_reported_with_its_row_number_node_and_reason(data):
    system, root = data
    lines = [
        good(),  # 1 ok
        "{not json",  # 2
        json.dumps({"foo": 1}),  # 3
        json.dumps(
            {
                "input": {"request": "r"},
                "chosen": {"image": ["img/a.png", "img/b.png"]},
                "rejected": {"plan": "x", "image": ["img/a.png", "img/b.png"]},
            }
        ),  # 4 missing plan
        good(plan=5),  # 5 wrong type
        good(image=["img/a.png", "img/missing.png"]),  # 6 unreadable: missing file
        good(image=["img/broken.png", "img/a.png"]),  # 7 unreadable: not an image
        good(image=["img/a.png"]),  # 8 plate length
        good(request="other"),  # 9 inputs differ
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}),  # 10 TRL rows for a two-model system
        good(),  # 11 ok
    ]
    (root / "prefs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CompoundError) as info:
        load_preferences(system, root / "prefs.jsonl")
    messages = [d.message for d in info.value.diagnostics]
    where = str(root / "prefs.jsonl")
    expected = [
        (2, "is not valid JSON"),
        (3, "has neither the keys input, chosen, rejected"),
        (4, "the chosen and the rejected side leave out different nodes"),
        (5, "chosen: 'plan' is text, but the row holds int"),
        (6, "chosen: 'image' [1]: cannot read the image"),
        (7, "chosen: 'image' [0]: cannot read the image"),
        (8, "chosen: 'image' is a plate of 2, but the row gives 1 values"),
        (9, "'request' differs between the chosen and the rejected side"),
        (10, "TRL's prompt/chosen/rejected rows fit a system of one text input and one sampled text node"),
    ]
    for row, reason in expected:
        assert any(m.startswith(f"{where} row {row}") and reason in m for m in messages), (
            row,
            reason,
            messages,
        )
    assert len(messages) == len(expected) + 1
    assert (
        messages[-1]
        == f"9 of 11 rows of {where} are invalid; fix them, or leave them out with --skip-invalid"
    )
    assert "No such file or directory" in next(m for m in messages if "row 6" in m)
    spans = {d.message.split(":")[0]: d.span for d in info.value.diagnostics if d.span}
    assert spans[f"{where} row 5, chosen"].line == 5  # points at plan's declaration in s.cmp

    prefs = load_preferences(system, root / "prefs.jsonl", skip_invalid=True)
    assert [p.row for p in prefs.pairs] == [1, 11] and len(prefs.invalid) == 9


def test_pairs_may_leave_out_intermediates_but_not_outputs(data):
    system, root = data
    outputs_only = {
        "input": {"request": "r"},
        "chosen": {"image": ["img/a.png", "img/b.png"]},
        "rejected": {"image": ["img/c.png", "img/d.png"]},
    }
    no_output = {"input": {"request": "r"}, "chosen": {"plan": "a\nb"}, "rejected": {"plan": "b\na"}}
    (root / "prefs.jsonl").write_text(json.dumps(outputs_only) + "\n" + json.dumps(no_output) + "\n")
    with pytest.raises(CompoundError) as info:
        load_preferences(system, root / "prefs.jsonl")
    messages = [d.message for d in info.value.diagnostics]
    reason = "row 2, chosen: 'image' is missing; it is an output, which SysDPO-Sampling cannot sum over"
    assert any(reason in m for m in messages)
    assert not any("row 1" in m for m in messages)
    assert [p.row for p in load_preferences(system, root / "prefs.jsonl", skip_invalid=True).pairs] == [1]


def test_trl_rows_fit_a_single_llm_system_and_parquet_loads_through_datasets(tmp_path):
    from datasets import Dataset

    system = compound.compile_source(
        'system s\ncomponent lm = causal_lm("m")\ninput prompt : text\n'
        "answer : text ~ lm(prompt)\noutput answer\n"
    ).system
    rows = [
        {"prompt": "Q?", "chosen": " yes", "rejected": " no"},
        {"prompt": "R?", "chosen": " a", "rejected": " b"},
    ]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "prefs.parquet"))
    prefs = load_preferences(system, tmp_path / "prefs.parquet")
    assert [(p.row, p.chosen, p.rejected) for p in prefs.pairs] == [
        (1, {"prompt": "Q?", "answer": " yes"}, {"prompt": "Q?", "answer": " no"}),
        (2, {"prompt": "R?", "answer": " a"}, {"prompt": "R?", "answer": " b"}),
    ]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_preferences(system, tmp_path / "prefs.jsonl").pairs == prefs.pairs


def test_cli_reports_bad_rows_and_stops(data, tiny):
    from typer.testing import CliRunner

    from compound.cli import app

    root = data[1]
    cmp = root / "real.cmp"
    cmp.write_text(SYSTEM.replace('"w"', f'"{tiny["lm"]}"').replace('"p"', f'"{tiny["painter"]}"'))
    (root / "prefs.jsonl").write_text(good() + "\n" + good(plan=7) + "\n")
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(cmp),
            "--data",
            str(root / "prefs.jsonl"),
            "--out",
            str(root / "run"),
            "--steps",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 1
    assert "prefs.jsonl row 2, chosen: 'plan' is text, but the row holds int" in result.stderr
    assert "1 of 2 rows" in result.stderr and "Traceback" not in result.output
