"""The command line: `compound check` and `compound compile` as the language reference says."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compound.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.cmp"))
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_check_accepts_every_example():
    result = run("check", *EXAMPLES)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count(": ok (") == len(EXAMPLES) >= 3


def test_check_reports_errors_with_position_source_line_and_caret(tmp_path):
    bad = tmp_path / "bad.cmp"
    bad.write_text(
        'system s\ncomponent w = causal_lm("m")\ninput question : text\na : text ~ w(qestion)\noutput a\n'
    )
    result = run("check", str(bad), EXAMPLES[0])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"{bad}:4:14: error: unknown name 'qestion'; did you mean 'question'? [unknown-name]"
    assert lines[1] == "    4 | a : text ~ w(qestion)"
    assert lines[2] == "      |              ^~~~~~~"
    assert "1 of 2 file(s) have errors" in result.stderr
    assert "Traceback" not in result.output


def test_check_reports_an_unreadable_file(tmp_path):
    result = run("check", str(tmp_path / "missing.cmp"))
    assert result.exit_code == 1
    assert "cannot read" in result.stderr and "[unreadable]" in result.stderr


def test_compile_prints_the_factorization():
    result = run("compile", str(ROOT / "examples/storyboard.cmp"))
    assert result.exit_code == 0
    assert result.stdout.strip() == (
        "log p(s|x) = log p_writer(plan | request) + log p_painter(image[0] | scene[0]) "
        "+ log p_painter(image[1] | scene[1]) + log p_painter(image[2] | scene[2])"
    )


def test_emit_ir_for_moa_has_four_factors_and_the_aggregator_reads_everything():
    result = run("compile", str(ROOT / "examples/moa.cmp"), "--emit", "ir")
    assert result.exit_code == 0
    ir = json.loads(result.stdout)
    assert {"name", "components", "nodes", "outputs", "factors"} <= set(ir)
    assert len(ir["factors"]) == 4
    final = ir["factors"][-1]
    assert final["node"] == "final" and final["component"] == "aggregator"
    assert final["parents"] == ["question", "answer[0]", "answer[1]", "answer[2]"]
    nodes = {n["name"]: n for n in ir["nodes"]}
    assert nodes["answer[1]"]["kind"] == "sample" and nodes["question"]["kind"] == "input"
    assert nodes["final"]["span"]["line"] == 16 and nodes["final"]["span"]["column"] == 1
    assert [c["path"] for c in ir["components"]] == ["models/proposer", "models/aggregator"]


def test_moa2_second_layer_reads_every_first_layer_answer():
    ir = json.loads(run("compile", str(ROOT / "examples/moa2.cmp"), "--emit", "ir").stdout)
    factors = {f["node"]: f for f in ir["factors"]}
    assert len(factors) == 7
    assert factors["answer[2]"]["parents"] == ["question", "draft[0]", "draft[1]", "draft[2]"]
    assert factors["answer[2]"]["component"] == factors["draft[0]"]["component"] == "proposer"


def test_the_drawing_shows_kinds_plates_components_and_the_factorization():
    from compound import compile_file
    from compound.viz import draw

    source = draw(compile_file(ROOT / "examples/storyboard.cmp")).source
    assert "request [label=request" in source and "shape=parallelogram" in source
    assert '"plan\\n~ writer"' in source and "shape=ellipse" in source
    assert '"scene[1]\\n= line"' in source and "shape=box" in source
    assert "subgraph cluster_scene" in source and 'label="scene [3]"' in source
    assert '"image[0]" [label="image[0]\\n~ painter"' in source and "peripheries=2" in source
    assert "log p(s|x) = log p_writer(plan | request)\\l" in source
    assert '"scene[2]" -> "image[2]"' in source


@pytest.mark.parametrize(("suffix", "magic"), [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_viz_renders_with_graphviz(tmp_path, suffix, magic):
    assert shutil.which("dot"), "Graphviz's dot is needed for this test: apt-get install graphviz"
    out = tmp_path / f"storyboard.{suffix}"
    result = run("compile", str(ROOT / "examples/storyboard.cmp"), "--viz", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(magic)
    if suffix == "svg":
        assert "image[2]" in out.read_text() and "log p(s|x)" in out.read_text()


def test_viz_without_dot_writes_the_dot_file_and_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "moa.svg"
    result = run("compile", str(ROOT / "examples/moa.cmp"), "--viz", str(out))
    assert result.exit_code == 1
    assert not out.exists()
    assert (tmp_path / "moa.dot").read_text().startswith("digraph moa {")
    assert "apt-get install graphviz" in result.stderr


def test_viz_to_dot_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = run("compile", str(ROOT / "examples/moa.cmp"), "--viz", str(tmp_path / "g.dot"))
    assert result.exit_code == 0 and (tmp_path / "g.dot").exists()


def test_viz_rejects_an_unknown_format(tmp_path):
    result = run("compile", str(ROOT / "examples/moa.cmp"), "--viz", str(tmp_path / "g.jpg"))
    assert result.exit_code == 1 and "use one of .svg, .png, .pdf, .dot" in result.stderr


def test_console_script_and_module_entry_points():
    script = Path(sys.executable).with_name("compound")
    for command in ([str(script)], [sys.executable, "-m", "compound"]):
        done = subprocess.run([*command, "check", EXAMPLES[0]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert ": ok (" in done.stderr


def test_pretrain_rejects_too_few_steps_and_runs_with_the_fewest_allowed(tmp_path):
    result = run("pretrain", "progression", "--out", str(tmp_path / "bad"), "--steps", "2", "--steps", "4")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--steps 2: pretraining needs at least 4 steps per model" in result.stderr
    assert not (tmp_path / "bad").exists()
    result = run("pretrain", "progression", "--out", str(tmp_path / "base"), "--steps", "4", "--steps", "4")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "base" / "writer" / "model.safetensors").exists()
    assert (tmp_path / "base" / "painter" / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_epochs_flag_replaces_a_config_files_step_count():
    from compound.train.config import with_overrides

    # a round's budget in passes over its pairs: the config's fixed steps would otherwise win
    assert with_overrides({"steps": 4, "beta": 0.1}, {"epochs": 2.5, "steps": None}) == {
        "beta": 0.1,
        "epochs": 2.5,
    }
    assert with_overrides({"steps": 4}, {"epochs": 2.5, "steps": 7}) == {"steps": 7, "epochs": 2.5}
    assert with_overrides({"steps": 4}, {"epochs": None, "steps": None}) == {"steps": 4}
