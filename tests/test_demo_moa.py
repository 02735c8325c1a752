"""The mixture-of-agents demo: its task, against hand-worked and exactly computed expectations, and the
--quick run end to end."""

import json
import math
import random
import re

import pytest
from compound_demos import moa
from test_demo import table_shows_the_results


def test_answers_are_three_digits_least_significant_first():
    assert moa.Question(47, 85).answer == "231"  # 132
    assert moa.Question(10, 10).answer == "020"  # 20 -> 020 -> reversed
    assert moa.Question(99, 99).text == "99+99=" and moa.Question(99, 99).answer == "891"


def test_held_out_and_training_questions_split_every_question_once():
    held, train = moa.questions("held"), moa.questions("train")
    assert len(held) == moa.HELD and len(train) == 8100 - moa.HELD
    assert set(held).isdisjoint(train) and len(set(held) | set(train)) == 8100
    validation = moa.questions("validation")
    assert len(validation) == moa.HELD and set(validation) <= set(train)


def test_majority_per_digit_with_the_first_answer_breaking_ties():
    assert moa.majority(["231", "231", "221"]) == "231"
    assert moa.majority(["121", "131", "141"]) == "121"  # no majority in the middle digit: the first's
    assert moa.majority(["123", "456", "789"]) == "123"
    assert moa.majority(["12", "123", "123"]) == "12"  # malformed: the first answer


def test_noise_rate_and_the_majority_fixing_it_match_the_exact_probabilities():
    rng = random.Random(0)
    answer, n = "231", 20_000
    draws = [[moa.noisy(answer, rng) for _ in range(3)] for _ in range(n)]
    wrong_digits = sum(a != b for d in draws for x in d for a, b in zip(x, answer, strict=True))
    assert wrong_digits / (9 * n) == pytest.approx(moa.NOISE, abs=0.01)
    p = 1 - moa.NOISE
    # a digit's majority is right when 2 or 3 proposers are, or only the first is and the two wrong
    # digits differ (each wrong digit is uniform over the 9 others)
    digit = p**3 + 3 * p**2 * (1 - p) + p * (1 - p) ** 2 * 8 / 9
    single = sum(d[0] == answer for d in draws) / n
    voted = sum(moa.majority(d) == answer for d in draws) / n
    assert single == pytest.approx(p**3, abs=0.015)
    assert voted == pytest.approx(digit**3, abs=0.015)


def test_pretraining_examples_use_the_systems_own_prompts():
    prompt, answer = moa.proposal(random.Random(1))
    assert re.fullmatch(r"\d\d\+\d\d=>", prompt) and re.fullmatch(r"\d{3}", answer)
    prompt, target = moa.aggregation(random.Random(2))
    question, one, two, three, end = prompt.split("\n")
    assert re.fullmatch(r"\d\d\+\d\d=", question) and end == ">"
    answers = [line.removeprefix(f"{k}. ") for k, line in enumerate((one, two, three), 1)]
    assert target in answers or target == moa.majority(answers)


def test_quick_demo_writes_every_row(tmp_path):
    from compound_demos.protocol import run

    from compound import load

    demo = moa.MixtureOfAgents()
    settings = demo.settings(quick=True, seeds=None)
    settings.train_requests = 150  # artifacts, not results: kept short
    ranked = "SysDPO (joint), 3 online rounds, ranked lists"  # of the trained rows, the two run here
    settings.skip = tuple(
        m.name for m in demo.methods if m.train and m.name not in (ranked, moa.BALANCED.name)
    )
    results = run(demo, tmp_path / "moa", settings)
    text = results.read_text()
    assert "compound demo moa --quick`" in text
    assert "rounds of `compound align`" in text and f"- {ranked}: " in text
    run_ = [m for m in demo.methods if m.name not in settings.skip]
    assert [m.name for m in run_] == ["before alignment", "best-of-4", ranked, moa.BALANCED.name]
    balanced = json.loads(
        (
            tmp_path / "moa" / "seed-0" / run_[-1].folder / "online" / "round-1" / "train" / "config.json"
        ).read_text()
    )
    assert balanced["betas"] == {"final": 0.02} and balanced["beta"] == 0.2  # the others: the shared beta
    assert balanced["steps"] is None and balanced["epochs"] == settings.online_epochs == 2.5  # per round
    data = json.loads((tmp_path / "moa" / "results.json").read_text())
    credit = data["credit"]
    variants = ["base", "trained", "trained, proposer reverted", "trained, aggregator reverted"]
    assert list(credit) == [moa.BALANCED.name] and list(credit[moa.BALANCED.name]) == variants
    table_shows_the_results(text, demo, data["results"], [m.name for m in run_])
    # the credit table: RESULTS.md against results.json, results.json against the run's credit.json, and
    # each variant's mean score recomputed from its own samples.jsonl
    lines = text.splitlines()
    header = lines.index("| method | " + " | ".join(variants) + " |")
    assert lines[header + 2].startswith(f"| {moa.BALANCED.name} | ")
    cells = [c.strip() for c in lines[header + 2].strip().strip("|").split("|")][1:]
    stored = credit[moa.BALANCED.name]
    assert [float(c) for c in cells] == [pytest.approx(stored[v], abs=0.0005 + 1e-9) for v in variants]
    run_credit = tmp_path / "moa" / "seed-0" / moa.BALANCED.folder / "online" / "credit"
    table = json.loads((run_credit / "credit.json").read_text())
    assert {r["system"]: r["mean_score"] for r in table} == stored
    ids = []
    for variant in variants:
        records = (run_credit / variant.replace(", ", "-").replace(" ", "-") / "samples.jsonl").read_text()
        samples = [json.loads(line) for line in records.splitlines()]
        ids.append([s["id"] for s in samples])
        scores = [s["score"] for s in samples]
        assert stored[variant] == pytest.approx(sum(scores) / len(scores), abs=1e-12)
    assert ids[0] and all(found == ids[0] for found in ids)  # every variant on the same draws
    online = tmp_path / "moa" / "seed-0" / run_[-2].folder / "online"  # three rounds, each trained
    rounds = [json.loads(line) for line in (online / "summary.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3] and all("loss" in r for r in rounds)
    # each round's start is its reference: rounds 2 and 3 run on the last round's exported components
    assert json.loads((online / "align.json").read_text())["reference"] == settings.reference == "round"
    for k in (2, 3):
        rebased = (online / f"round-{k}" / "system.cmp").read_text()
        assert str(online / f"round-{k - 1}" / "export" / "proposer") in rebased
    assert (online / "round-1" / "pairs.jsonl").read_text().count('"ranked"') > 0
    for k in (1, 2, 3):  # each round trains 2.5 passes over its own lists, however many the round found
        lists = len((online / f"round-{k}" / "pairs.jsonl").read_text().splitlines())
        batch = json.loads((online / f"round-{k}" / "train" / "config.json").read_text())["batch_size"]
        last = json.loads((online / f"round-{k}" / "train" / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == math.ceil(2.5 * math.ceil(lists / batch))  # the last batch short
    assert (online / "round-3" / "train" / "report" / "loss.png").exists()
    before = data["results"]["before alignment"][0]
    assert before["majority"] > before["proposer"]  # the task's premise: voting fixes proposers' errors
    assert data["results"]["best-of-4"][0]["accuracy"] > before["accuracy"]
    system = load(tmp_path / "moa" / "moa.cmp")
    assert set(system.components) == {"proposer", "aggregator"}
    the_run_browser_shows_it(tmp_path / "moa" / "seed-0" / moa.BALANCED.folder / "online", variants)


def the_run_browser_shows_it(online, variants):
    """`compound view` of the demo's align run, in Chromium: every round's samples and held-out samples
    (as many cards as their files hold), its pairs, and the credit table's rows."""
    from test_browser import chromium

    from compound.view import view

    page_path = view(online)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(page_path.as_uri())
        for k in (1, 2, 3):
            folder = online / f"round-{k}"
            files = [folder / f / "samples.jsonl" for f in ("samples", "eval")]
            count = sum(len(f.read_text().splitlines()) for f in files if f.is_file())
            assert page.locator(f"#round-{k} .card.sample").count() == count > 0
            pairs = len((folder / "pairs.jsonl").read_text().splitlines())
            assert page.locator(f"#round-{k} .pair").count() == pairs
        shown = [row.split("\t")[0] for row in page.locator("table.credit").inner_text().splitlines()[1:]]
        assert shown == variants


def test_two_layer_system_is_examples_moa2s_graph_and_its_proposer_learns_both_jobs(tmp_path):
    from compound.compiler import compile_file
    from compound.factorize import formula

    demo = moa.TwoLayerMixtureOfAgents()
    ours = compile_file(demo.system_file(tmp_path, tmp_path, demo.settings(quick=True, seeds=None)))
    example = compile_file("examples/moa2.cmp")
    assert formula(ours).replace("moa2", "") == formula(example).replace("moa2", "")
    rng = random.Random(3)
    prompts = [moa.proposal_or_refinement(rng)[0] for _ in range(400)]
    refining = sum("\n" in p for p in prompts)
    assert 160 < refining < 240  # half and half
    prompt, _ = moa.refinement(random.Random(4))
    assert re.fullmatch(r"\d\d\+\d\d=\n1\. \d{3}\n2\. \d{3}\n3\. \d{3}\n>", prompt)


def test_unknown_demo_is_a_clear_error():
    from typer.testing import CliRunner

    from compound.cli import app

    result = CliRunner().invoke(app, ["demo", "nope", "--quick"])
    assert result.exit_code == 1
    assert "unknown demo 'nope': the demos are: progression, moa, moa2" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["demo", "moa", "--quick", "--protocol", "twice"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "protocol 'twice': expected one of online, one-round" in result.output


def test_shipped_two_layer_base_system_runs_and_refining_helps(tmp_path):
    """The shipped quick-mode base models: the second layer (refining drafts) is right more often than
    the first, the premise of the two-layer system."""
    from importlib.resources import files
    from pathlib import Path

    import torch

    from compound import load

    demo = moa.TwoLayerMixtureOfAgents()
    base = Path(str(files("compound_demos") / "base" / "moa2"))
    system = load(demo.system_file(tmp_path, base, demo.settings(True, None)))
    questions = moa.questions("held")[:100]
    rows = system.sample([q.inputs for q in questions], n=2, generator=torch.Generator().manual_seed(0))
    metrics = demo.summarize(rows, [q for q in questions for _ in range(2)])
    assert all(re.fullmatch(r"\d{3}", d) for row in rows for d in row["draft"])
    assert metrics["proposer"] > metrics["draft"] + 0.03
