"""The docs run: every code block of README.md and docs/ that can run is run, and the generated reference
pages are current.

A fenced block is treated by its language:

- ```console: each `$ ` line is a command, run in the page's workspace (a temp folder holding a copy of
  examples/): `compound ...` in process through the typer app, `python -c CODE` in process, anything
  else with bash. It must exit 0 (or the status an `<!-- exit: N -->` line before the block gives), and
  every line shown under a command must appear in its output, `…` standing for any text;
- ```python: executed in the page's workspace, the blocks of one page in one namespace, in order;
- ```cmp: compiled, and must have no errors;
- ```toml, ```json, ```jsonl, ```yaml: parsed;
- a block with no language or ```text: text (output listings, diagrams); nothing to run.

A line `<!-- file: PATH -->` before a block writes the block to PATH in the workspace instead (a file
of the repository at that path must then be the block, byte for byte: docs show the real examples). A
line `<!-- not run: WHY -->` before a block skips it, visibly, for a reason (a GPU, a hub id, minutes of
work, a fragment). Any other block (```bash, say) must carry one of the two: a command that is shown
should either run here or say why not.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```([\w-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(not run|file|exit):\s*(.*?)\s*-->\s*$")
RUN = {"console", "python"}
PARSE = {"cmp", "toml", "json", "jsonl", "yaml"}
TEXT = {"", "text"}


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    marker: tuple[str, str] | None  # ("not run", why), ("file", path), ("exit", status)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        """run, parse, file, text, skip, or unmarked (an error)."""
        if self.marker and self.marker[0] == "not run":
            return "skip"
        if self.marker and self.marker[0] == "file":
            return "file"
        if self.lang in RUN:
            return "run"
        if self.lang in PARSE:
            return "parse"
        if self.lang in TEXT:
            return "text"
        return "unmarked"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, each with the marker on the line before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, k = [], 0
    while k < len(lines):
        opening = FENCE.match(lines[k].strip())
        if not opening:
            k += 1
            continue
        end = next((j for j in range(k + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{page.relative_to(ROOT)}:{k + 1}: a code block that never closes"
        before = MARKER.match(lines[k - 1].strip()) if k else None
        indent = len(lines[k]) - len(lines[k].lstrip())  # a block inside a list item
        found.append(
            Block(
                page,
                k + 1,
                opening.group(1),
                "\n".join(line[indent:] for line in lines[k + 1 : end]) + "\n",
                (before.group(1), before.group(2)) if before else None,
            )
        )
        k = end + 1
    return found


def commands(text: str) -> list[tuple[str, list[str]]]:
    """A console block's commands (`$ ` lines, `\\` continuing one) and the output lines shown under each."""
    out: list[tuple[str, list[str]]] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1] + " " + next(lines).strip()
            out.append((command, []))
        elif line.strip():
            assert out, f"output before any command: {line!r}"
            out[-1][1].append(line.strip())
    return out


def shown_in(expected: str, output: str) -> bool:
    """An output line the docs show is a line of the actual output; `…` stands for any text."""
    pattern = re.compile(".*".join(re.escape(part) for part in expected.split("…")))
    return any(pattern.fullmatch(line.strip()) for line in output.splitlines())


def run_command(command: str, cwd: Path) -> tuple[int, str]:
    """Run one console command in `cwd`: exit status and output (stdout and stderr)."""
    words = shlex.split(command, comments=True)
    if not words:
        return 0, ""
    if words[0] == "compound":
        from typer.testing import CliRunner

        from compound.cli import app

        args = []
        for word in words[1:]:
            matched = sorted(glob.glob(word)) if any(c in word for c in "*?[") else []
            args += matched or [word]
        result = CliRunner().invoke(app, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output
    if words[0] == "python" and len(words) == 3 and words[1] == "-c":
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            exec(compile(words[2], "<python -c>", "exec"), {"__name__": "__main__"})
        return 0, captured.getvalue()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


def check_parses(block: Block) -> None:
    if block.lang == "cmp":
        from compound.compiler import compile_source

        compile_source(block.text, block.where)
    elif block.lang == "toml":
        import tomllib

        tomllib.loads(block.text)
    elif block.lang == "json":
        json.loads(block.text)
    elif block.lang == "jsonl":
        for line in block.text.splitlines():
            if line.strip():
                json.loads(line)
    elif block.lang == "yaml":
        import yaml

        yaml.safe_load(block.text)


def run_page(page: Path, workspace: Path) -> dict[str, int]:
    """Run a page's blocks in order in `workspace`; how many of each kind."""
    shutil.copytree(ROOT / "examples", workspace / "examples", ignore=shutil.ignore_patterns("models"))
    namespace: dict = {"__name__": "__main__"}
    counts: dict[str, int] = {}
    for block in blocks(page):
        counts[block.kind] = counts.get(block.kind, 0) + 1
        if block.kind == "file":
            path = block.marker[1]
            if (ROOT / path).is_file():
                assert block.text == (ROOT / path).read_text(encoding="utf-8"), (
                    f"{block.where}: the block differs from {path}"
                )
            (workspace / path).parent.mkdir(parents=True, exist_ok=True)
            (workspace / path).write_text(block.text, encoding="utf-8")
        elif block.kind == "parse":
            check_parses(block)
        elif block.lang == "python" and block.kind == "run":
            exec(compile(block.text, block.where, "exec"), namespace)
        elif block.lang == "console" and block.kind == "run":
            status = int(block.marker[1]) if block.marker and block.marker[0] == "exit" else 0
            for command, expected in commands(block.text):
                code, output = run_command(command, workspace)
                assert code == status, f"{block.where}: `{command}` exited {code}, not {status}:\n{output}"
                missing = [line for line in expected if not shown_in(line, output)]
                assert not missing, (
                    f"{block.where}: `{command}` did not print {missing}; it printed:\n{output}"
                )
    return counts


def test_every_block_runs_or_says_why_not():
    """No block is left to chance: every block runs, is parsed, is a file, is text, or is marked not run
    with a reason. The count of blocks the suite runs is printed (pytest -s) and has a floor."""
    totals: dict[str, int] = {}
    unmarked, unexplained = [], []
    for page in PAGES:
        for block in blocks(page):
            totals[block.kind] = totals.get(block.kind, 0) + 1
            if block.kind == "unmarked":
                unmarked.append(f"{block.where} (```{block.lang})")
            if block.kind == "skip" and len(block.marker[1]) < 8:
                unexplained.append(block.where)
    assert not unmarked, (
        "blocks that neither run nor say why not; make them ```console blocks of `$ ` commands (which the "
        "suite runs) or put `<!-- not run: WHY -->` on the line before them:\n" + "\n".join(unmarked)
    )
    assert not unexplained, f"`not run` markers without a reason: {unexplained}"
    run = [b for page in PAGES for b in blocks(page) if b.kind == "run"]
    consoles = [b for b in run if b.lang == "console"]
    shell = sum(len(commands(b.text)) for b in consoles)
    print(
        f"\ndocs code blocks: {len(run)} run ({len(consoles)} console blocks of {shell} commands, "
        f"{len(run) - len(consoles)} python), {totals.get('parse', 0)} parsed, {totals.get('file', 0)} "
        f"written as files, {totals.get('text', 0)} text, {totals.get('skip', 0)} marked not run"
    )
    assert len(run) >= 25 and shell >= 25, (totals, shell)


#: The pages with a block to run, parse or write (the others hold only text and marked blocks).
ACTIVE = [page for page in PAGES if any(b.kind in ("run", "parse", "file") for b in blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", ACTIVE, ids=[str(p.relative_to(ROOT)) for p in ACTIVE])
def test_the_pages_blocks_run(page, tmp_path, monkeypatch):
    """Each page's blocks, in order, in a fresh workspace (the tutorial's build on each other)."""
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine
    try:
        run_page(page, tmp_path)
    finally:
        torch.set_num_threads(threads)


def test_the_reference_pages_are_current():
    """docs/reference/cli.md and config.md are what docs/generate.py makes from the code now."""
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    stale = generate.stale()
    assert not stale, (
        f"{', '.join(stale)} no longer match the code (a command, an option, a help text or a setting "
        f"changed): run `python docs/generate.py` and commit the pages"
    )
