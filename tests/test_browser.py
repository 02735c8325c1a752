"""The run browser (`compound view`) and the labelling page (`compound label`) in a real headless
Chromium (Debian's, driven by Playwright): pages rendered, clicks and keys made, the rows they write
checked, and a labelling server killed mid-session resumes without losing or duplicating a row."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from compound import samples as saved

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (its own browser download is never used)."""
    assert Path(CHROMIUM).is_file(), "Chromium is needed: apt-get install chromium (make test does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as found:
        yield found


def sample_folder(folder: Path, inputs: int = 3, per_input: int = 4) -> Path:
    """A sample folder as `compound sample` writes it: a text node and a plate of two images per sample."""
    rng = np.random.default_rng(0)
    found = []
    for i in range(inputs):
        for j in range(per_input):
            pictures = [
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L") for _ in range(2)
            ]
            found.append(
                saved.Sample(
                    f"{i}-{j}", {"request": f"request {i}"}, {"plan": f"plan {i}.{j}", "image": pictures}
                )
            )
    saved.write(found, folder)
    return folder


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def start_label(folder: Path, out: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`compound label` in its own process; its URL, from what it says on stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "compound", "label", str(folder), "--out", str(out), *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
    assert found, line
    return process, found.group(1)


def test_the_labelling_page_writes_the_rows_the_clicks_chose_and_resumes_after_a_kill(browser, tmp_path):
    folder, out = sample_folder(tmp_path / "samples"), tmp_path / "prefs.jsonl"
    process, url = start_label(folder, out)
    try:
        base = url.split("/?")[0]
        with pytest.raises(urllib.error.HTTPError, match="403"):  # no token, nothing served
            urllib.request.urlopen(base + "/task", timeout=10)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#output-1")
        page.screenshot(path=str(tmp_path / "label.png"))
        assert page.locator("#output-0 img").count() == 2 and "plan" in page.locator("#output-0").inner_text()
        picks = []
        for action in ("click-left", "key-2", "key-t", "key-s"):
            task = json.loads(urllib.request.urlopen(url.replace("/?", "/task?"), timeout=10).read())
            left, right = (o["values"]["plan"] for o in task["outputs"])
            picks.append((action, left, right))
            progress = page.locator("#progress").inner_text()
            if action == "click-left":
                page.click("#choose-left")
            else:
                page.keyboard.press(action[-1])
            page.wait_for_function(
                f"document.getElementById('progress').textContent !== {json.dumps(progress)}"
            )
        page.close()
        # two preference rows: the left one preferred, then the right one; a tie and a skip make none
        found = rows(out)
        assert [(r["chosen"]["plan"], r["rejected"]["plan"]) for r in found] == [
            (picks[0][1], picks[0][2]),
            (picks[1][2], picks[1][1]),
        ]
        assert [d["choice"] for d in rows(out.with_name("prefs.jsonl.labels.jsonl"))] == [
            "left",
            "right",
            "tie",
            "skip",
        ]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    # a new session on the same file goes on at the fifth task: nothing lost, nothing twice
    process, url = start_label(folder, out)
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#output-1")
        assert page.locator("#progress").inner_text().startswith("4 of 6 decided, 2 rows")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('5 of 6')")
        page.click("#undo")  # taken back, then decided again
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('4 of 6')")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('5 of 6')")
        page.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    found = rows(out)
    assert len(found) == 3 and len({json.dumps(r, sort_keys=True) for r in found}) == 3
    decided = [d["task"] for d in rows(out.with_name("prefs.jsonl.labels.jsonl"))]
    assert len(decided) == len(set(decided)) == 5


def test_ranked_and_thumbs_modes_write_their_rows(browser, tmp_path):
    folder = sample_folder(tmp_path / "samples", inputs=1, per_input=3)
    out = tmp_path / "ranked.jsonl"
    process, url = start_label(folder, out, "--mode", "ranked")
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#output-2")
        for k in (2, 0, 1):  # best first
            page.click(f"#output-{k}")
        page.keyboard.press("Enter")
        page.wait_for_selector("#finished")
        page.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    (row,) = rows(out)
    assert [r["plan"] for r in row["ranked"]] == ["plan 0.2", "plan 0.0", "plan 0.1"]
    assert row["input"] == {"request": "request 0"}
    out = tmp_path / "thumbs.jsonl"
    process, url = start_label(folder, out, "--mode", "thumbs")
    try:
        page = browser.new_page()
        page.goto(url)
        for key in ("ArrowUp", "ArrowDown", "s"):
            page.wait_for_selector("#output-0")
            before = page.locator("#progress").inner_text()
            page.keyboard.press(key)
            page.wait_for_function(
                f"document.getElementById('progress').textContent !== {json.dumps(before)}"
            )
        page.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert [(r["output"]["plan"], r["label"]) for r in rows(out)] == [("plan 0.0", True), ("plan 0.1", False)]


def test_the_run_browser_shows_every_rounds_samples_and_the_credit_table(browser, tmp_path):
    from compound.view import view

    run = tmp_path / "run"
    held = {"round": 1, "pairs": 1, "train_mean_score": 0.5, "eval_mean_score": 0.25, "win_rate": 0.5}
    (run / "round-0").mkdir(parents=True)
    sample_folder(run / "round-0" / "eval", inputs=2, per_input=1)
    (run / "align.json").write_text(json.dumps({"system": "s.cmp", "rounds": 2, "samples": 4, "scorer": "x"}))
    for k in (1, 2):
        sample_folder(run / f"round-{k}" / "samples", inputs=3, per_input=4)
        sample_folder(run / f"round-{k}" / "eval", inputs=2, per_input=1)
        (run / f"round-{k}" / "round.json").write_text(json.dumps({**held, "round": k}))
        made = saved.read(run / f"round-{k}" / "samples")
        pair = {"input": made[0].input, "chosen": made[0].values, "rejected": made[1].values}
        (run / f"round-{k}" / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    (run / "round-2.bak").mkdir()  # not a round
    credit = [
        {"system": n, "mean_score": 0.1 * k, "win_rate": 0.5} for k, n in enumerate(["base", "trained"])
    ]
    (run / "credit").mkdir()
    (run / "credit" / "credit.json").write_text(json.dumps(credit))
    page_path = view(run)
    page = browser.new_page()
    page.goto(page_path.as_uri())
    page.screenshot(path=str(tmp_path / "view.png"), full_page=True)
    assert page.locator("section.round").count() == 2
    for k in (1, 2):
        section = page.locator(f"#round-{k}")
        assert section.locator(".card.sample").count() == 12 + 2  # its 12 samples and 2 held-out ones
        assert section.locator(".pair .chosen").count() == 1
        assert section.locator("img").count() == 2 * 14 + 2 * 2
    assert page.locator("table.credit tr").count() == 3
    assert page.locator("table.credit").inner_text().splitlines()[-1].split("\t")[0] == "trained"
    assert page.locator("#round-1 nav a").first.get_attribute("href") == "#round-2"
    shown = page.locator("img").first
    assert shown.get_attribute("loading") == "lazy"
    shown.scroll_into_view_if_needed()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=shown.element_handle())
    assert page.evaluate("(img) => img.naturalWidth", shown.element_handle()) == 8  # the image loads


def test_the_run_browser_shows_an_optimize_runs_candidates_chosen_text_and_reflections(browser, tmp_path):
    """Every candidate tried with its score and parents, the chosen text with its demonstrations, each
    reflection in a fold; a text from the run folder is shown, never run (a proposal may hold markup)."""
    from compound.view import view

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "optimize.json").write_text(
        json.dumps({"system": "s.cmp", "optimizer": "gepa", "budget": 20, "scorer": "exact_match"})
    )
    texts = ["Q: {question}", "<script>window.ran = 1</script>{question}", "Answer {question} briefly."]
    candidates = [
        {
            "id": k,
            "text": {"params": {"instruction": t}, "demos": {}},
            "score": s,
            "parents": [] if k == 0 else [0],
        }
        for k, (t, s) in enumerate(zip(texts, [0.25, 0.0, 0.75], strict=True))
    ]
    (run / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates))
    chosen = {
        "params": {"instruction": texts[2]},
        "demos": {"final": [{"prompt": "Answer 2+2 briefly.", "output": "4"}]},
    }
    (run / "final" / "text.json").write_text(json.dumps(chosen))
    calls = [{"prompt": f"improve: {t}", "response": f"```{t}```"} for t in texts[1:]]
    (run / "reflections.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))
    (run / "summary.json").write_text(json.dumps({"seed_score": 0.25, "best_score": 0.75, "best": 2}))
    page = browser.new_page()
    page.goto(view(run).as_uri())
    rows = page.locator("table.candidates tr")
    assert rows.count() == 1 + 3
    assert rows.nth(2).inner_text().split("\t")[:3] == ["1", "0.000", "[0]"]
    assert texts[1] in rows.nth(2).inner_text() and page.evaluate("() => window.ran") is None
    assert "Answer 2+2 briefly." in page.locator("#optimize").inner_text()
    assert page.locator("#optimize details").count() == 2
    page.locator("#optimize details summary").first.click()
    assert "improve: <script>" in page.locator("#optimize details").first.inner_text()
