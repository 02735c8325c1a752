"""An inputs file's other columns travel with each row and reach the scorers (as TRL passes every dataset
column to reward functions): a reference answer the system never declares scores its samples, end to end
through `compound sample`, `pairs`, `train` and `align`, with `exact_match` and with `similarity`."""

import json
from pathlib import Path

import pytest
from conftest import CORPUS
from test_model_scorers import tiny_encoder
from typer.testing import CliRunner

from compound import samples as saved
from compound.cli import app
from compound.testing import tiny_causal_lm

QUESTIONS = [("1+2?", "3"), ("2+2?", "4"), ("1+3?", "4"), ("2+3?", "5")]


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """A system that declares only its question; the inputs file also gives each one's answer."""
    root = tmp_path_factory.mktemp("columns")
    lm = tiny_causal_lm(root / "lm", CORPUS, seed=3)
    cmp = root / "one.cmp"
    cmp.write_text(
        f'system one\ncomponent lm = causal_lm("{lm}")\ninput question : text\n'
        'final : text ~ lm(question, template="Q: {question}\\nA:", choice="3|4|5")\noutput final\n'
    )
    inputs = root / "q.jsonl"
    inputs.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    return {"root": root, "cmp": cmp, "inputs": inputs, "encoder": tiny_encoder(root / "encoder")}


def cli(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("scorer", ["exact_match", "similarity"])
def test_an_undeclared_answer_column_scores_samples_pairs_and_trains(one, tmp_path, scorer):
    options = ["--option", f"path={one['encoder']}"] if scorer == "similarity" else []
    cli(
        "sample",
        one["cmp"],
        "--inputs",
        one["inputs"],
        "--n",
        4,
        "--out",
        tmp_path / "s",
        "--scorer",
        scorer,
        *options,
    )
    found = saved.read(tmp_path / "s")
    assert [s.input for s in found[::4]] == [{"question": q, "answer": a} for q, a in QUESTIONS]
    if scorer == "exact_match":  # each sample scored against its own row's answer, by hand
        assert [s.score for s in found] == [float(s.values["final"] == s.input["answer"]) for s in found]
    cli("pairs", tmp_path / "s", "--out", tmp_path / "p.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows and all(set(r["input"]) == {"question", "answer"} for r in rows)
    by_id = {s.id: s for s in found}
    for row in rows:  # the preferred side is the better by the answer it was scored against
        group = [s for s in by_id.values() if s.input == row["input"]]
        score = {s.values["final"]: s.score for s in group}
        assert score[row["chosen"]["final"]] > score[row["rejected"]["final"]]
    cli(
        "train",
        one["cmp"],
        "--data",
        tmp_path / "p.jsonl",
        "--out",
        tmp_path / "run",
        "--steps",
        2,
        "--quiet",
    )
    assert (tmp_path / "run" / "final" / "compound.json").is_file()


def test_align_scores_every_round_against_the_inputs_answers(one, tmp_path):
    out = tmp_path / "a"
    cli(
        "align", one["cmp"], "--inputs", one["inputs"], "--eval", one["inputs"], "--scorer", "exact_match",
        "--out", out, "--rounds", 1, "--samples", 3, "--steps", 1,
    )  # fmt: skip
    for folder in (out / "round-1" / "samples", out / "round-1" / "eval"):
        found = saved.read(folder)
        assert all(set(s.input) == {"question", "answer"} for s in found)
        assert [s.score for s in found] == [float(s.values["final"] == s.input["answer"]) for s in found]
    held = saved.read(out / "round-1" / "eval")
    result = json.loads((out / "round-1" / "round.json").read_text())
    assert result["eval_mean_score"] == pytest.approx(sum(s.score for s in held) / len(held))
    pairs = [json.loads(line) for line in (out / "round-1" / "pairs.jsonl").read_text().splitlines()]
    assert result["pairs"] == len(pairs) and all("answer" in p["input"] for p in pairs)


def test_a_samples_column_named_like_one_of_its_nodes_is_refused_when_scored(one, tmp_path):
    saved.write([saved.Sample("0-0", {"question": "1+2?", "final": "3"}, {"final": "3"})], tmp_path / "s")
    result = CliRunner().invoke(
        app, ["pairs", str(tmp_path / "s"), "--scorer", "exact_match", "--out", str(tmp_path / "p")]
    )
    assert (
        result.exit_code == 1
        and "its inputs have a column 'final', and it has a node of that name" in result.output
    )
    assert not Path(tmp_path / "p").exists()
