"""Quiet consoles: every command, run as a user runs it (its own process, not a terminal), prints only
compound's own lines on stderr, no library's bar, log or warning; `--verbose` shows them again."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS

from compound.console import ENVIRONMENT
from compound.testing import tiny_models

ROOT = Path(__file__).resolve().parents[1]
#: What compound itself says on stderr (each command's lines; a warning in compound's words).
OWN = re.compile(
    r"^(?:\S+: ok \(\d+ nodes, \d+ factors\)"
    r"|wrote \S+.*"
    r"|warning: a CompoundDiffusion caption of more than \d+ tokens is cut .*"
    r"|\d+ pairs from \d+ samples of \d+ inputs .*"
    r"|training \S+(?:, \S+)* of \S+ on \d+ pairs .*"
    r"|training \d+/\d+ +loss [\d.]+ +acc [\d.]+"
    r"|done: .*"
    r"|round \d+/\d+: .*"
    r"|\| system \| held-out mean score .*)$"
)
LIBRARY = re.compile(r"it/s|%\||Loading|Writing model shards|Warning|warn\(|huggingface|torchvision|<pad>")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    shutil.copy(ROOT / "examples" / "storyboard.cmp", root / "storyboard.cmp")
    tiny_models(root / "storyboard.cmp", CORPUS)
    (root / "requests.jsonl").write_text(
        '{"request": "a disc growing"}\n{"request": "a sky getting darker"}\n'
    )
    return root


def run(workspace: Path, *args: str, verbose: bool = False) -> str:
    # as a user's shell has it: not the settings this test process's own quiet commands made
    env = {k: v for k, v in os.environ.items() if k not in (*ENVIRONMENT, "COMPOUND_VERBOSE")}
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "-m", "compound", *(["--verbose"] if verbose else []), *args]
    done = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_every_command_prints_only_compounds_own_lines(workspace):
    commands = [
        ["check", "storyboard.cmp"],
        ["compile", "storyboard.cmp", "--viz", "storyboard.svg"],
        [
            "sample",
            "storyboard.cmp",
            "--inputs",
            "requests.jsonl",
            "--n",
            "2",
            "--scorer",
            "storyboard",
            "--out",
            "s",
        ],
        ["pairs", "s", "--out", "prefs.jsonl"],
        ["train", "storyboard.cmp", "--data", "prefs.jsonl", "--out", "run", "--steps", "2"],
        ["report", "run"],
        ["view", "run"],
        ["export", "run", "--out", "hf"],
        ["credit", "run", "--eval", "requests.jsonl", "--scorer", "storyboard"],
        [
            "align",
            "storyboard.cmp",
            "--inputs",
            "requests.jsonl",
            "--scorer",
            "storyboard",
            "--out",
            "a",
            "--rounds",
            "1",
            "--samples",
            "2",
            "--steps",
            "1",
            "--eval",
            "requests.jsonl",
        ],
    ]
    for args in commands:
        said = run(workspace, *args)
        lines = [line for line in said.replace("\r", "\n").splitlines() if line.strip()]
        strange = [line for line in lines if not OWN.match(line) or LIBRARY.search(line)]
        assert lines and not strange, f"compound {' '.join(args)} printed: {strange}"


@pytest.mark.slow
def test_verbose_shows_the_libraries_output_again(workspace):
    args = ["sample", "storyboard.cmp", "--inputs", "requests.jsonl", "--out", "verbose"]
    assert "Loading weights" in run(workspace, *args, verbose=True)  # transformers' own bar
    assert "Loading weights" not in run(workspace, *args)
