"""Untrusted input: nothing from a `.cmp` file or a model folder runs code, every input is bounded, a
user's mistake is an error with where and what (never a traceback), and training recovers."""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import compound
from compound.backends.decoding import PatternTooSlow, RegexConstraint
from compound.data import load_preferences
from compound.diagnostics import CompoundError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run_cli(*args: object, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compound", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


# ---------------------------------------------------------------- code from model folders


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("the folder's code ran")
from transformers import GPT2Config, GPT2LMHeadModel


class EvilConfig(GPT2Config):
    pass


class EvilModel(GPT2LMHeadModel):
    config_class = EvilConfig
"""


def evil_folder(tiny, tmp_path: Path) -> Path:
    """A real GPT-2 folder whose config.json asks transformers to import its own Python file."""
    folder = tmp_path / "evil"
    shutil.copytree(tiny["lm"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL.format(marker=str(tmp_path / "MARKER")))
    return folder


def test_a_cmp_file_cannot_run_a_model_folders_code(tiny, tmp_path, write_system):
    folder = evil_folder(tiny, tmp_path)
    marker = tmp_path / "MARKER"
    asked = write_system(
        f'system s\ncomponent w = causal_lm("{folder}", trust_remote_code=true)\ninput q : text\n'
        "a : text ~ w(q)\noutput a\n"
    )
    with pytest.raises(CompoundError, match=r"cannot turn on trust_remote_code.*\[remote-code\]"):
        compound.load(asked)
    done = run_cli("check", asked)
    assert done.returncode == 1 and "[remote-code]" in done.stderr and "Traceback" not in done.stderr
    plain = write_system(
        f'system s\ncomponent w = causal_lm("{folder}")\ninput q : text\na : text ~ w(q)\noutput a\n',
        "plain.cmp",
    )
    system = compound.load(plain)  # loads transformers' own GPT-2 code, not the folder's
    assert type(system.backend("w").model).__name__ == "GPT2LMHeadModel"
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"q": "hi"}\n')
    sampled = run_cli("sample", plain, "--inputs", inputs, "--out", tmp_path / "out", "--max-new-tokens", 2)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert not marker.exists()
    compound.load(plain, trust_remote_code=True)  # the caller may: then the folder's code does run
    assert marker.exists()


def test_pickle_weights_are_refused_with_the_file_and_the_way_out(tiny, tmp_path, write_system):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(tiny["lm"], folder)
    (folder / "model.safetensors").unlink()
    torch.save(AutoModelForCausalLM.from_pretrained(tiny["lm"]).state_dict(), folder / "pytorch_model.bin")
    painter = tmp_path / "pickled-painter"
    shutil.copytree(tiny["unet"], painter)
    (painter / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({}, painter / "unet" / "diffusion_pytorch_model.bin")
    for kind, path in (("causal_lm", folder), ("diffusion", painter)):
        out = "text" if kind == "causal_lm" else "image"
        cmp = write_system(
            f'system s\ncomponent w = {kind}("{path}")\ninput q : text\na : {out} ~ w(q)\noutput a\n'
        )
        with pytest.raises(
            CompoundError, match=r"pytorch_model\.bin, a Python pickle.*safetensors only.*save_pretrained"
        ):
            compound.load(cmp)


# ---------------------------------------------------------------- bounded run time


def test_a_catastrophic_pattern_is_stopped_by_its_time_bound(tiny):
    from transformers import AutoTokenizer

    constraint = RegexConstraint("(a|aa)+$", AutoTokenizer.from_pretrained(tiny["lm"]), 0, timeout=0.2)
    started = time.perf_counter()
    with pytest.raises(PatternTooSlow, match="backtracks catastrophically"):
        constraint._matches("a" * 40 + "b")
    assert time.perf_counter() - started < 2
    assert constraint._matches("aaaa")  # an ordinary text is tested as before


# ---------------------------------------------------------------- data files

SYSTEM = (
    'system s\ncomponent writer = causal_lm("w")\ncomponent painter = diffusion("p")\n'
    "input request : text\nplan : text ~ writer(request)\nscene[2] : text = line(plan, i)\n"
    "image[2] : image ~ painter(scene[i])\noutput image\n"
)


@pytest.fixture
def data(tmp_path):
    system = compound.compile_source(SYSTEM, str(tmp_path / "s.cmp")).system
    (tmp_path / "img").mkdir()
    for name in "abcd":
        Image.fromarray(np.full((16, 16), ord(name), np.uint8), mode="L").save(
            tmp_path / "img" / f"{name}.png"
        )
    return system, tmp_path


def row(
    request="r", plan=("a\nb", "b\na"), images=("img/a.png", "img/b.png", "img/c.png", "img/d.png"), **extra
):
    found = {
        "input": {"request": request},
        "chosen": {"plan": plan[0], "image": list(images[:2])},
        "rejected": {"plan": plan[1], "image": list(images[2:])},
    }
    for side, values in extra.items():
        found[side].update(values)
    return found


def write_rows(path: Path, rows: list, separator: str = "\n") -> Path:
    path.write_text(separator.join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_row_numbers_are_line_numbers_whatever_the_rows_hold(data):
    system, root = data
    rows = [row("a\u2028b"), row("c\x85d"), {"broken": True}]
    with pytest.raises(CompoundError) as found:
        load_preferences(system, write_rows(root / "p.jsonl", rows))
    assert "p.jsonl row 3 has neither" in str(found.value)  # not "row 5": U+2028 and U+0085 break no line


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"a": 1}\n'.encode("utf-16"), "UTF-16 text"),
        (
            '{"request": "caf\u00e9"}\n'.encode("latin-1"),
            "not UTF-8 (byte 0xe9 at line 1, column 17; Latin-1",
        ),
        (b"\x00\x01\x02\xff\xfe" * 20, "binary data"),
        (b"[" * 100_000 + b"\n", "row 1 nests its JSON too deep"),
    ],
    ids=["utf-16", "latin-1", "binary", "deep-json"],
)
def test_unreadable_data_files_say_what_they_are(data, content, said):
    system, root = data
    (root / "p.jsonl").write_bytes(content)
    with pytest.raises(CompoundError) as found:
        load_preferences(system, root / "p.jsonl")
    assert said in str(found.value)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims width x height: what a decompression bomb looks like."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bad_images_and_huge_values_are_refused_by_row(data):
    system, root = data
    (root / "img" / "bomb.png").write_bytes(png_claiming(5_000, 5_000))
    good = (root / "img" / "a.png").read_bytes()
    (root / "img" / "cut.png").write_bytes(
        good[: len(good) // 2]
    )  # a header that parses, a body that does not
    os.mkfifo(root / "img" / "fifo.png")
    rows = [
        row(images=("img/bomb.png", "img/b.png", "img/c.png", "img/d.png")),
        row(images=("img/cut.png", "img/b.png", "img/c.png", "img/d.png")),
        row(images=("img/fifo.png", "img/b.png", "img/c.png", "img/d.png")),
        row(plan=("x" * 2_000_000, "b\na")),
    ]
    with pytest.raises(CompoundError) as found:
        load_preferences(system, write_rows(root / "p.jsonl", rows))
    text = str(found.value)
    assert "row 1, chosen: 'image' [0]: the image" in text and "5000x5000 (Limits.image_pixels)" in text
    assert "row 2, chosen: 'image' [0]: cannot read the image" in text
    assert "row 3, chosen: 'image' [0]: the image" in text and "is not a file" in text
    assert "row 4, chosen: 'plan' is a text of 2,000,000 bytes (Limits.text_bytes)" in text
    assert "4 of 4 rows" in text


def test_suspicious_rows_are_refused_or_counted(data):
    system, root = data
    same = row(plan=("a\nb", "a\nb"), images=("img/a.png", "img/b.png", "img/a.png", "img/b.png"))
    misspelt = row()
    misspelt["chosen"]["paln"] = misspelt["chosen"].pop("plan")
    misspelt["rejected"]["paln"] = misspelt["rejected"].pop("plan")
    with pytest.raises(CompoundError) as found:
        load_preferences(system, write_rows(root / "bad.jsonl", [same, misspelt]))
    assert "row 1: the chosen and the rejected side are the same" in str(found.value)
    assert "row 2, chosen: 'paln' is not a node of the system; did you mean 'plan'?" in str(found.value)
    outside = root / "elsewhere"
    outside.mkdir()
    shutil.copy(root / "img" / "a.png", outside / "a.png")
    rows = [
        row(),
        row(),  # a repeat
        row("s", chosen={"scene": ["a", "not line 1 of the plan"]}),
        row("t", images=("elsewhere/a.png", "img/b.png", "img/c.png", "img/d.png")),
    ]
    (root / "data").mkdir()
    shutil.copytree(root / "img", root / "data" / "img")
    rows[3]["chosen"]["image"][0] = "../elsewhere/a.png"
    prefs = load_preferences(system, write_rows(root / "data" / "p.jsonl", rows))
    said = [d.message for d in prefs.warnings]
    assert any("1 rows of" in m and "repeat an earlier row (row 2 repeats row 1)" in m for m in said), said
    assert any("1 values of computed nodes" in m and "'scene' in row 3" in m for m in said), said
    assert any("1 image paths of" in m and "lie outside its folder" in m for m in said), said
    assert all(d.severity == "warning" for d in prefs.warnings) and len(prefs.pairs) == 4


# ---------------------------------------------------------------- no traceback


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["check", "{dir}/utf16.cmp"], "it is UTF-16 text"),
        (["check", "{dir}"], "not a file"),
        (
            ["train", "{cmp}", "--data", "{data}", "--out", "{dir}/run", "--node-weight", "plna=2"],
            "did you mean 'plan'",
        ),
        (["train", "{cmp}", "--data", "{data}", "--out", "{dir}/run", "--steps", "0"], "invalid settings"),
        (["sample", "{cmp}", "--inputs", "{dir}/missing.jsonl", "--out", "{dir}/s"], "cannot read"),
        (["train", "{cmp}", "--data", "{data}", "--out", "{data}", "--steps", "1"], "File exists"),
    ],
    ids=["utf-16", "folder", "node-weight-typo", "zero-steps", "missing-inputs", "out-is-a-file"],
)
def test_the_command_line_reports_a_users_mistake_without_a_traceback(tiny, tmp_path, args, said):
    from synth import storyboard_cmp, storyboard_prefs

    (tmp_path / "utf16.cmp").write_bytes("system s\n".encode("utf-16"))
    cmp = storyboard_cmp(tmp_path, tiny["lm"], tiny["painter"])
    data = storyboard_prefs(tmp_path, "train", 4, seed=0)
    done = run_cli(*(a.format(dir=tmp_path, cmp=cmp, data=data) for a in args))
    assert done.returncode == 1, done.stderr[-2000:]
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


# ---------------------------------------------------------------- training that recovers


@pytest.fixture
def run(tiny, tmp_path):
    from synth import storyboard_cmp, storyboard_prefs

    return {
        "cmp": storyboard_cmp(tmp_path, tiny["lm"], tiny["painter"]),
        "data": storyboard_prefs(tmp_path, "train", 16, seed=0),
        "out": tmp_path / "run",
    }


def adapter(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(checkpoint / "components" / "writer" / "adapter_model.safetensors")


def test_an_update_that_makes_a_weight_non_finite_is_rolled_back_and_the_run_stops_naming_its_checkpoint(
    run,
):
    """An exploding update (here every optimizer step leaves a weight infinite, as an overflow would) is
    rolled back, weights and optimizer state, each time; after `nan_patience` in a row the run stops
    naming its last good checkpoint, whose weights are finite."""
    from compound.train import Trainer, TrainingError

    trainer = Trainer(
        run["cmp"],
        run["data"],
        run["out"],
        steps=10,
        batch_size=4,
        save_every=1,
        nan_patience=3,
        train=["writer"],
        quiet=True,
        report_to=[],
    )
    base = {
        k: v.clone() for k, v in trainer.system.backend("writer").model.state_dict().items() if "lora_" in k
    }
    step = trainer.optimizer.step

    def exploding(*args, **kwargs):
        found = step(*args, **kwargs)
        with torch.no_grad():
            trainer.optimizer.param_groups[0]["params"][0].fill_(float("inf"))
        return found

    trainer.optimizer.step = exploding
    with pytest.raises(
        TrainingError, match=r"3 steps in a row .* last good checkpoint is \S*step-000002"
    ) as found:
        trainer.train()
    saved = adapter(run["out"] / "checkpoints" / "step-000002")
    assert saved and all(torch.isfinite(t).all() for t in saved.values())
    now = trainer.system.backend("writer").model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in base.items())  # every update was rolled back
    assert "step-000002" in str(found.value)


def test_resume_passes_over_a_damaged_checkpoint_to_the_newest_intact_one(run, capsys):
    from compound.train import Trainer

    settings = {
        "batch_size": 4,
        "learning_rate": 1e-3,
        "save_every": 2,
        "keep_checkpoints": 3,
        "train": ["writer"],
    }
    Trainer(run["cmp"], run["data"], run["out"], steps=4, quiet=True, report_to=[], **settings).train()
    root = run["out"] / "checkpoints"
    assert [c.name for c in sorted(root.glob("step-*"))] == ["step-000002", "step-000004"]
    damaged = root / "step-000004" / "components" / "writer" / "adapter_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated, as a crash or a full disk leaves it
    (root / "step-000009").mkdir()  # a newer folder holding nothing
    again = Trainer(run["cmp"], run["data"], run["out"], steps=6, quiet=True, report_to=[], **settings)
    again.train(resume=True)
    said = capsys.readouterr().err
    assert "passing over checkpoint step-000009: its checksums.json is missing" in said
    assert (
        "passing over checkpoint step-000004: components/writer/adapter_model.safetensors is not as it was"
        in said
    )
    steps = [json.loads(line)["step"] for line in (run["out"] / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed after step 2: steps 3 and 4 were taken again


def test_rotation_never_deletes_the_newest_good_checkpoint(tmp_path):
    from compound.io import write_checksums, write_json
    from compound.train.checkpoint import Checkpointer

    class One:
        is_main_process, process_index = True, 0

    checkpoints = Checkpointer(tmp_path, keep=2, accelerator=One())
    for step, finite in ((1, True), (2, False), (3, False)):
        folder = tmp_path / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        write_json(
            folder / "state.json",
            {"step": step, "skipped": 0, "bad_in_a_row": 0, "data": "x", "finite": finite},
        )
        write_checksums(folder)
    checkpoints._rotate()
    assert [c.name for c in checkpoints.checkpoints()] == ["step-000001", "step-000002", "step-000003"]
    assert checkpoints.latest_good() == tmp_path / "checkpoints" / "step-000001"


def test_a_symlink_loop_as_a_model_path_is_an_error(tmp_path, write_system):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cmp = write_system(
        'system s\ncomponent w = causal_lm("loop/x")\ninput q : text\na : text ~ w(q)\noutput a\n'
    )
    with pytest.raises(CompoundError, match="component 'w'"):
        compound.load(cmp)


def test_the_quoted_source_line_is_the_one_the_position_names():
    text = (
        "system s\n# a comment with \x0c, \x0b, \x85 and \u2028 in it\ninput q : text\n"
        "out : text = line(qq, 0)\noutput out\n"
    )
    with pytest.raises(CompoundError) as found:
        compound.compile_source(text, "x.cmp")
    assert "x.cmp:4:19: error: unknown name 'qq'" in str(found.value)
    assert "    4 | out : text = line(qq, 0)" in str(found.value)


def test_damaged_trained_weights_are_refused_when_loaded(run):
    from compound.train import Trainer

    Trainer(
        run["cmp"], run["data"], run["out"], steps=1, batch_size=4, train=["writer"], quiet=True, report_to=[]
    ).train()
    weights = run["out"] / "final" / "writer" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))
    with pytest.raises(
        CompoundError, match=r"final are damaged: writer/adapter_model.safetensors is not as it was"
    ):
        compound.load(run["cmp"], weights=run["out"] / "final")


HEAD = 'system s\ncomponent w = causal_lm("m")\ncomponent p = diffusion("d")\ninput q : text\n'


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("a[" + "9" * 5000 + "] : text ~ w(q)\noutput a", "number"),
        ("a[2] : text ~ w(q)\nb : text = line(a[" + "9" * 5000 + "], 0)\noutput b", "number"),
        ("a : text ~ w(q, weight=" + "9" * 5000 + ")\noutput a", "number"),
        ("a : text ~ w(q, weight=1e309)\noutput a", "number"),
        ("a : text ~ w(q, x=" + "f(" * 485 + ")" * 485 + ")\noutput a", "too-big"),
        ('a : text ~ w(q, template="\\ud800{q}")\noutput a', "bad-escape"),
        ("a : text = join(q, q, sep=1)\noutput a", "option-type"),
        ("a : text ~ w(q, max_new_tokens=-5)\noutput a", "option-type"),
        ('a : text ~ w(q, pattern="(((")\noutput a', "option-type"),
        ("a : image ~ p(q, steps=0)\noutput a", "option-type"),
        ("a : image ~ p(q, timesteps=100000000)\noutput a", "option-type"),
        ('a : text ~ w(q, template="' + "{q}" * 20000 + '")\noutput a', "too-big"),
        ("a[1000000000] : text ~ w(q)\noutput a", "plate-size"),
    ],
    ids=[
        "plate-digits",
        "index-digits",
        "weight-digits",
        "weight-overflow",
        "nesting",
        "surrogate",
        "sep-type",
        "max-new-tokens",
        "bad-pattern",
        "steps",
        "timesteps",
        "template-fields",
        "huge-plate",
    ],
)
def test_what_used_to_be_a_traceback_is_a_positioned_error(body, code):
    with pytest.raises(CompoundError) as found:
        compound.compile_source(HEAD + body + "\n", "x.cmp")
    assert code in {d.code for d in found.value.diagnostics}
    assert all(d.span is not None for d in found.value.diagnostics if d.code == code)


@pytest.mark.parametrize(
    "component",
    ['causal_lm("m", batch_size=0)', 'causal_lm("m", lora(r=0))', 'causal_lm("m", max_length="abc")'],
)
def test_component_options_out_of_range_are_compile_errors(component):
    with pytest.raises(CompoundError, match=r"\[option-type\]"):
        compound.compile_source(
            f"system s\ncomponent w = {component}\ninput q : text\na : text ~ w(q)\noutput a\n"
        )
