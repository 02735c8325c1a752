"""Every failure a user can meet ends in a compound error that says what and where (or, where a user
expects one, a warning with counts), exit status 1, no traceback, and nothing lost: one test per kind
found by trying the landed code as a new user would (silent or wrong results first)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CORPUS
from typer.testing import CliRunner

import compound
from compound import samples as saved
from compound.align import AlignConfig, align
from compound.cli import app
from compound.data import load_preferences
from compound.diagnostics import CompoundError
from compound.io import write_checksums
from compound.run_folder import locked
from compound.testing import tiny_models
from compound.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"quiet": True, "report_to": []}


def cli(*args: object):
    """`compound ARGS` in process: its exit code and everything it printed."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def refused(*args: object, match: str) -> str:
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and match in result.output, result.output
    return result.output


def refused_train(moa, tmp_path: Path, *flags: object, match: str) -> str:
    """`compound train` of the moa system into tmp_path/r with `flags`, refused with `match`."""
    return refused("train", moa["cmp"], "--data", moa["prefs"], "--out", tmp_path / "r", *flags, match=match)


@pytest.fixture(scope="module")
def moa(tmp_path_factory):
    root = tmp_path_factory.mktemp("moa")
    cmp = root / "moa.cmp"
    cmp.write_text((ROOT / "examples" / "moa.cmp").read_text())
    tiny_models(cmp, CORPUS)
    rows = [
        {
            "input": {"question": q, "truth": a},
            "chosen": {"answer": [a, a, "7"], "final": a},
            "rejected": {"answer": ["9", a, "7"], "final": "9"},
        }
        for q, a in (("1+2?", "3"), ("2+2?", "4"), ("3+4?", "7"), ("1+1?", "2"))
    ]
    prefs = root / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "cmp": cmp, "prefs": prefs}


@pytest.fixture(scope="module")
def run(moa, tmp_path_factory):
    """A finished `compound train` run of the moa system (LoRA on the aggregator, a checkpoint a step)."""
    out = tmp_path_factory.mktemp("run") / "run"
    trainer = Trainer(
        moa["cmp"],
        moa["prefs"],
        out,
        steps=2,
        batch_size=2,
        save_every=1,
        lora={"aggregator": {"r": 2}},
        **QUIET,
    )
    trainer.train()
    return out


def copied(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# ---------------------------------------------------------------- silently wrong or lost


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--node-beta", "final=-1"], "greater than 0"),
        (["--node-beta", "final=0"], "greater than 0"),
        (["--node-weight", "final=-1"], "greater than 0"),
        (["--node-weight", "final=0"], "greater than 0"),
        (["--node-beta", "final=inf"], "finite number"),
    ],
)
def test_a_node_beta_or_weight_that_would_train_the_wrong_way_is_refused(moa, tmp_path, flags, match):
    out = refused_train(moa, tmp_path, *flags, match=match)
    assert "node_" in out and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text", ["node_betas = {final = true}\n", "beta = true\n", "learning_rates = {aggregator = -1}\n"]
)
def test_a_config_files_number_that_is_not_one_or_would_train_backwards_is_refused(moa, tmp_path, text):
    (tmp_path / "c.toml").write_text(text)
    refused_train(
        moa,
        tmp_path,
        "--config",
        tmp_path / "c.toml",
        match="invalid settings",
    )


def test_align_refuses_a_node_beta_of_zero_before_anything_runs(moa, tmp_path):
    refused(
        "align", moa["cmp"], "--inputs", moa["prefs"], "--scorer", "exact_match", "--out", tmp_path / "a",
        "--node-beta", "final=0", match="greater than 0",
    )  # fmt: skip
    assert not (tmp_path / "a" / "align.json").exists()


def scored_folder(folder: Path) -> Path:
    """A sample folder with a reference answer among the inputs' columns (`answer`; the nodes are
    `draft` and `final`)."""
    found = [
        saved.Sample(f"{i}-{j}", {"question": q, "answer": a}, {"draft": [a, "5", a], "final": f})
        for i, (q, a) in enumerate((("1+2?", "3"), ("2+2?", "4")))
        for j, f in enumerate((a, "5"))
    ]
    saved.write(found, folder)
    return folder


def test_a_misspelt_scorer_field_is_an_error_not_a_zero_for_every_sample(tmp_path):
    folder = scored_folder(tmp_path / "s")
    out = refused(
        "pairs",
        folder,
        "--scorer",
        "exact_match",
        "--option",
        "field=finall",
        "--out",
        tmp_path / "p.jsonl",
        match="exact_match reads 'finall'",
    )
    assert "it has answer, draft, final, question" in out and not (tmp_path / "p.jsonl").exists()
    refused(
        "pairs",
        folder,
        "--scorer",
        "progression",
        "--option",
        "field=images",
        "--out",
        tmp_path / "p.jsonl",
        match="progression reads 'images'",
    )
    result = cli("pairs", folder, "--scorer", "exact_match", "--out", tmp_path / "p.jsonl")
    assert result.exit_code == 0 and len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_a_row_with_both_ranked_and_chosen_is_an_error_not_a_dropped_pair(moa, tmp_path):
    row = json.loads(moa["prefs"].read_text().splitlines()[0])
    row["ranked"] = [row["chosen"], row["rejected"]]
    (tmp_path / "p.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(CompoundError, match="row 1 gives both ranked and chosen/rejected"):
        load_preferences(compound.compile_file(moa["cmp"]), tmp_path / "p.jsonl")


def test_an_input_column_named_like_a_node_is_an_error_naming_both(moa, tmp_path):
    row = json.loads(moa["prefs"].read_text().splitlines()[0])
    row["input"]["final"] = "3"
    (tmp_path / "p.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(
        CompoundError, match=r"row 1, input: 'final' is the sampled node declared here.*column 'final'"
    ):
        load_preferences(compound.compile_file(moa["cmp"]), tmp_path / "p.jsonl")
    system = compound.load(moa["cmp"])
    with pytest.raises(CompoundError, match="input row 0: 'final' is the sampled node"):
        system.sample([{"question": "1+2?", "final": "3"}])


def test_resuming_an_align_run_whose_rounds_weights_are_gone_is_refused(moa, tmp_path):
    config = AlignConfig(system=str(moa["cmp"]), inputs=str(moa["prefs"]), scorer="exact_match", rounds=2)
    out = tmp_path / "a"
    (out / "round-1").mkdir(parents=True)
    (out / "align.json").write_text(config.model_dump_json())
    (out / "round-1" / "round.json").write_text(json.dumps({"round": 1, "pairs": 3, "train_mean_score": 0.5}))
    with pytest.raises(CompoundError, match=r"trained on 3 pairs, but its final weights .* are gone"):
        align(config, out, resume=True)


def test_export_of_a_run_without_checksums_or_with_a_tampered_file_is_refused(run, tmp_path):
    target = copied(run, tmp_path)
    (target / "final" / "checksums.json").unlink()
    refused("export", target, "--out", tmp_path / "e", match="checksums.json is missing")
    target = copied(run, tmp_path / "again")
    with open(target / "final" / "compound.json", "a") as f:
        f.write(" ")
    refused("export", target, "--out", tmp_path / "e", match="compound.json is not as it was written")
    assert not (tmp_path / "e").exists()


def test_a_tampered_credit_export_is_exported_again(run, tmp_path, capsys):
    from compound.export import export_once

    target = copied(run, tmp_path)
    found = export_once(target, target / "credit" / "export")
    adapter = found["aggregator"] / "model.safetensors"
    good = adapter.read_bytes()
    adapter.write_bytes(good[:-8])
    again = export_once(target, target / "credit" / "export")
    said = capsys.readouterr().err
    assert (
        "is damaged (aggregator/model.safetensors is not as it was written" in said
        and "exporting it again" in said
    )
    assert again["aggregator"].joinpath("model.safetensors").read_bytes() == good


def test_a_second_train_on_the_same_folder_is_refused_at_once_and_after(moa, run, tmp_path):
    refused(
        "train",
        moa["cmp"],
        "--data",
        moa["prefs"],
        "--out",
        run,
        "--steps",
        "1",
        match="holds a run already: --resume it",
    )
    out = tmp_path / "busy"
    with locked(out, "another run"):
        refused(
            "train",
            moa["cmp"],
            "--data",
            moa["prefs"],
            "--out",
            out,
            "--steps",
            "1",
            match="is in use by another run",
        )
    assert not (out / "metrics.jsonl").exists()


# ---------------------------------------------------------------- files that are not what they should be


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("c.toml", b"beta = \n", "not valid TOML"),
        ("c.yaml", b"beta: [1\n", "not valid YAML"),
        ("c.yaml", "beta: 0.1 # caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("c.yaml", b"- beta\n- 0.1\n", "not a list"),
        ("c.yaml", b"just words\n", "not a string"),
        ("c.yaml", b"a: &x [1, 2]\nb: *x\n", "YAML aliases"),
        ("c.ini", b"beta = 0.1\n", "use a .toml or .yaml config file"),
    ],
)
def test_a_malformed_config_file_is_named_with_where_it_goes_wrong(moa, tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    refused_train(
        moa,
        tmp_path,
        "--config",
        tmp_path / name,
        match=match,
    )


@pytest.mark.parametrize(
    ("text", "match"), [("train = 5\n", "train is a table"), ("decoding = [1]\n", "decoding is a table")]
)
def test_an_align_config_whose_tables_are_not_tables_is_refused(moa, tmp_path, text, match):
    (tmp_path / "a.toml").write_text(text)
    refused(
        "align",
        moa["cmp"],
        "--inputs",
        moa["prefs"],
        "--scorer",
        "exact_match",
        "--out",
        tmp_path / "a",
        "--config",
        tmp_path / "a.toml",
        match=match,
    )


def test_a_config_that_is_a_fifo_or_a_device_is_refused_without_reading_it(moa, tmp_path):
    os.mkfifo(tmp_path / "fifo.toml")
    refused_train(
        moa,
        tmp_path,
        "--config",
        tmp_path / "fifo.toml",
        match="not a file",
    )
    folder = scored_folder(tmp_path / "s")
    os.symlink("/dev/zero", tmp_path / "zero.yaml")
    refused(
        "pairs", folder, "--scorer", tmp_path / "zero.yaml", "--out", tmp_path / "p.jsonl", match="not a file"
    )


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ("tolerance=inf", "a finite number"),
        ("tolerance=-1", "a finite number"),
        ("tolerance=nan", "a finite number"),
    ],
)
def test_a_scorer_number_option_that_is_not_finite_or_negative_is_refused(tmp_path, option, match):
    refused(
        "pairs",
        scored_folder(tmp_path / "s"),
        "--scorer",
        "progression",
        "--option",
        option,
        "--out",
        tmp_path / "p.jsonl",
        match=match,
    )


def test_scorer_files_not_utf8_a_judge_with_numeric_verdicts_and_a_file_that_includes_itself(tmp_path):
    folder = scored_folder(tmp_path / "s")
    (tmp_path / "latin.toml").write_bytes('name = "exact_match"\n# caf\xe9\n'.encode("latin-1"))
    refused(
        "pairs", folder, "--scorer", tmp_path / "latin.toml", "--out", tmp_path / "p.jsonl", match="not UTF-8"
    )
    (tmp_path / "judge.toml").write_text('name = "judge"\npath = "nowhere"\nverdicts = 5\n')
    refused(
        "pairs",
        folder,
        "--scorer",
        tmp_path / "judge.toml",
        "--out",
        tmp_path / "p.jsonl",
        match="verdicts= takes a string, not 5",
    )
    (tmp_path / "loop.toml").write_text('name = "weighted"\n[[scorers]]\nname = "loop.toml"\n')
    refused(
        "pairs",
        folder,
        "--scorer",
        tmp_path / "loop.toml",
        "--out",
        tmp_path / "p.jsonl",
        match="includes itself",
    )


def test_a_weighted_scorers_member_file_is_found_beside_it_not_in_the_working_directory(
    tmp_path, monkeypatch
):
    folder = scored_folder(tmp_path / "s")
    (tmp_path / "scorers").mkdir()
    (tmp_path / "scorers" / "member.toml").write_text('name = "exact_match"\n')
    (tmp_path / "scorers" / "all.toml").write_text(
        'name = "weighted"\n[[scorers]]\nname = "member.toml"\nweight = 2.0\n'
    )
    monkeypatch.chdir(tmp_path)
    result = cli(
        "pairs", folder, "--scorer", tmp_path / "scorers" / "all.toml", "--out", tmp_path / "p.jsonl"
    )
    assert result.exit_code == 0, result.output
    assert "score gap mean 2.000" in result.output  # exact match, weighed twice


def test_ipo_with_a_node_beta_is_refused_before_training(moa, tmp_path):
    with pytest.raises(CompoundError, match=r"the ipo loss has one beta .* own: final"):
        Trainer(moa["cmp"], moa["prefs"], tmp_path / "r", loss_type="ipo", node_betas={"final": 0.5}, **QUIET)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    ("metrics", "config", "match"),
    [
        ("", None, "holds no metrics"),
        ('{"step": 1}\n', None, "lacks step or loss"),
        ("[1, 2]\n", None, "is not an object of metrics"),
        ('{"step": 1, "loss": "high"}\n', None, "'loss' is not a number"),
        ('{"step": 1, "loss": 0.5}\n', "[1]", "holds list, not an object"),
    ],
)
def test_report_on_a_damaged_metrics_or_config_file_names_it(tmp_path, metrics, config, match):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text(metrics)
    (tmp_path / "r" / "config.json").write_text(config or "{}")
    refused("report", tmp_path / "r", match=match)


@pytest.mark.parametrize(
    ("content", "match"),
    [("not json", "is not valid JSON"), ('{"system": "x.cmp"}', "lacks system, trained, lora")],
)
def test_export_of_a_damaged_run_file_names_it(run, tmp_path, content, match):
    target = copied(run, tmp_path)
    (target / "final" / "compound.json").write_text(content)
    write_checksums(target / "final")  # the damage happened before the checksums were written
    refused("export", target, "--out", tmp_path / "e", match=match)


def test_a_corrupt_safetensors_header_with_a_matching_checksum_is_named(run, tmp_path):
    target = copied(run, tmp_path)
    weights = target / "final" / "aggregator" / "adapter_model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    write_checksums(target / "final")
    refused("export", target, "--out", tmp_path / "e", match="does not hold a LoRA adapter for it")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "neither a finished"),
        ("not json", "is not valid JSON"),
        ('{"system": "s.cmp", "nope": 1}', "invalid settings"),
        ("[1]", "holds list"),
    ],
)
def test_credit_on_a_damaged_align_json_names_it(moa, tmp_path, content, match):
    (tmp_path / "a").mkdir()
    (tmp_path / "held.jsonl").write_text('{"question": "1+2?", "truth": "3"}\n')
    if content is not None:
        (tmp_path / "a" / "align.json").write_text(content)
    refused("credit", tmp_path / "a", "--eval", tmp_path / "held.jsonl", match=match)


def test_credit_reads_rounds_not_backup_folders_and_names_a_bad_round_run_file(moa, run, tmp_path):
    from compound.credit import trained_folders

    out = tmp_path / "a"
    config = AlignConfig(system=str(moa["cmp"]), inputs=str(moa["prefs"]), scorer="exact_match", rounds=1)
    (out / "round-1").mkdir(parents=True)
    (out / "align.json").write_text(config.model_dump_json())
    shutil.copytree(run, out / "round-1" / "train")
    shutil.copytree(run, out / "round-2.bak")  # a backup a user made: not a round
    system, folders, _ = trained_folders(out)
    assert system == moa["cmp"] and set(folders) == {"proposer", "aggregator"}
    (out / "round-1" / "train" / "final" / "compound.json").write_text("{")
    shutil.rmtree(out / "credit")
    with pytest.raises(CompoundError, match="damaged"):
        trained_folders(out)


def test_resuming_on_a_garbage_align_or_round_file_names_it(moa, tmp_path):
    config = AlignConfig(system=str(moa["cmp"]), inputs=str(moa["prefs"]), scorer="exact_match", rounds=1)
    out = tmp_path / "a"
    (out / "round-1").mkdir(parents=True)
    (out / "align.json").write_text("{garbage")
    with pytest.raises(CompoundError, match=r"align.json is not valid JSON"):
        align(config, out, resume=True)
    (out / "align.json").write_text(config.model_dump_json())
    (out / "round-1" / "round.json").write_text("[")
    with pytest.raises(CompoundError, match=r"round.json is not valid JSON"):
        align(config, out, resume=True)


@pytest.mark.parametrize("where", ["torch.save", "safetensors"])
def test_a_full_disk_while_checkpointing_is_an_error_and_the_run_resumes(moa, tmp_path, monkeypatch, where):
    """torch.save says a full disk with a RuntimeError, safetensors with a SafetensorError."""
    from safetensors import SafetensorError

    from compound.backends.base import Backend

    out = tmp_path / "r"
    trainer = Trainer(moa["cmp"], moa["prefs"], out, steps=3, batch_size=2, save_every=1, **QUIET)
    # the weights go through each backend's save_pretrained (the libraries' own safetensors writers)
    module, name = (torch, "save") if where == "torch.save" else (Backend, "save_pretrained")
    real, calls = getattr(module, name), []
    fits = 2  # what the first checkpoint writes of each kind: optimizer and scheduler, or two components

    def full(*args, **kwargs):
        calls.append(args)
        if len(calls) > fits:
            if where == "torch.save":
                raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1024 vs 512")
            raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, full)
    with pytest.raises(
        CompoundError,
        match=r"cannot write step-000002 .*is the disk full\?.* step-000001: free space and --resume",
    ):
        trainer.train()
    monkeypatch.setattr(module, name, real)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]  # no half-written one
    again = Trainer(moa["cmp"], moa["prefs"], out, steps=3, batch_size=2, save_every=1, **QUIET)
    assert again.train(resume=True)["step"] == 3


def test_resuming_a_round_whose_metrics_were_emptied_names_the_file(moa, run, tmp_path):
    config = AlignConfig(system=str(moa["cmp"]), inputs=str(moa["prefs"]), scorer="exact_match", rounds=1)
    out = tmp_path / "a"
    (out / "round-1" / "samples").mkdir(parents=True)
    (out / "align.json").write_text(config.model_dump_json())
    saved.write(
        [saved.Sample("0-0", {"question": "1+2?"}, {"answer": ["3", "3", "3"], "final": "3"}, 1.0)],
        out / "round-1" / "samples",
    )
    shutil.copyfile(moa["prefs"], out / "round-1" / "pairs.jsonl")
    shutil.copytree(run, out / "round-1" / "train")  # trained, then its metrics were emptied
    (out / "round-1" / "train" / "metrics.jsonl").write_text("")
    with pytest.raises(CompoundError, match=r"metrics\.jsonl holds no metrics"):
        align(config, out, resume=True)


# ---------------------------------------------------------------- unbounded input


def test_a_ranked_list_of_100000_outputs_is_refused_at_once(moa, tmp_path):
    row = {
        "input": {"question": "q"},
        "ranked": [{"answer": ["a", "b", "c"], "final": str(k)} for k in range(100_000)],
    }
    (tmp_path / "p.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(CompoundError, match="ranked holds 100,000 outputs"):
        load_preferences(compound.compile_file(moa["cmp"]), tmp_path / "p.jsonl")


def test_a_call_of_a_million_arguments_is_refused_quickly():
    import time

    source = (
        'system s\ncomponent w = causal_lm("m")\ninput x : text\ny : text ~ w('
        + ", ".join(["x"] * 1_000_000)
        + ")\noutput y\n"
    )
    started = time.perf_counter()
    with pytest.raises(CompoundError, match="a statement of more than 20,000 tokens"):
        compound.compile_source(source, "big.cmp")
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------- documented, now kept


def test_pairs_and_ranked_lists_in_one_json_or_parquet_file_and_a_saved_dataset_folder(moa, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [json.loads(line) for line in moa["prefs"].read_text().splitlines()]
    rows.append(
        {"input": rows[0]["input"], "ranked": [rows[0]["chosen"], rows[0]["rejected"], rows[1]["chosen"]]}
    )
    system = compound.compile_file(moa["cmp"])
    (tmp_path / "mixed.json").write_text(json.dumps(rows))
    columns = {key: [row.get(key) for row in rows] for key in ("input", "chosen", "rejected", "ranked")}
    table = pa.Table.from_pydict(columns)  # every column in every row: a pair's `ranked` is null
    pq.write_table(table, tmp_path / "mixed.parquet")
    Dataset(table).save_to_disk(str(tmp_path / "saved"))
    for source in ("mixed.json", "mixed.parquet", "saved"):
        found = load_preferences(system, tmp_path / source)
        assert [len(p.ranked) for p in found.pairs] == [2, 2, 2, 2, 3], source
        assert found.pairs[0].chosen["final"] == "3" and found.pairs[4].rest[0]["final"] == "4"


def test_skip_invalid_says_which_rows_it_left_out_and_why(moa, tmp_path):
    lines = moa["prefs"].read_text().splitlines()
    bad = json.loads(lines[1])
    bad["chosen"]["finall"] = bad["chosen"].pop("final")
    (tmp_path / "p.jsonl").write_text("\n".join([lines[0], json.dumps(bad), lines[2], "not json"]) + "\n")
    result = cli(
        "train",
        moa["cmp"],
        "--data",
        tmp_path / "p.jsonl",
        "--out",
        tmp_path / "r",
        "--steps",
        "1",
        "--skip-invalid",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "warning: left out: " in result.output and "row 2, chosen: 'finall' is not a node" in result.output
    assert "row 4 is not valid JSON" in result.output and "2 invalid rows left out" in result.output


# ---------------------------------------------------------------- model folders


def one_painter(folder: Path, options: str = "", node: str = "") -> str:
    """A one-node system painting with the pipeline at `folder`."""
    return (
        f'system s\ncomponent p = diffusion("{folder}"{options})\ninput c : text\n'
        f"img : image ~ p(c{node})\noutput img\n"
    )


def test_a_stable_diffusion_folder_without_a_vae_is_refused_at_load(tmp_path, write_system):
    from compound.testing import tiny_sd

    folder = tiny_sd(tmp_path / "sd")
    index = json.loads((folder / "model_index.json").read_text())
    index["vae"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    cmp = write_system(one_painter(folder))
    with pytest.raises(
        CompoundError, match="names no vae: a StableDiffusionPipeline paints in a VAE's latent space"
    ):
        compound.load(cmp)


def test_a_clip_tokenizer_without_a_length_takes_its_encoders_and_samples(tmp_path, write_system):
    from compound.testing import tiny_sd

    folder = tiny_sd(tmp_path / "sd")
    config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    config.pop("model_max_length", None)
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config))
    cmp = write_system(one_painter(folder, ", steps=2"))
    system = compound.load(cmp)
    tokenizer = system.backend("p").family.tokenizers[0]
    assert tokenizer.model_max_length == 77  # the tiny CLIP text encoder's positions
    (row,) = system.sample([{"c": "a red disc"}], generator=torch.Generator().manual_seed(0))
    assert row["img"].size == (32, 32)


def test_as_many_denoising_steps_as_training_timesteps_is_refused_with_the_most_it_takes(
    tmp_path, write_system
):
    from compound.testing import tiny_sd

    folder = tiny_sd(tmp_path / "sd")
    cmp = write_system(one_painter(folder, ", steps=1000"))
    with pytest.raises(
        CompoundError, match=r"steps=1000: its PNDMScheduler would step from timestep 1000.*use steps=999"
    ):
        compound.load(cmp)
    cmp = write_system(one_painter(folder, node=", steps=1000"))
    with pytest.raises(CompoundError, match="steps=1000"):
        compound.load(cmp).sample([{"c": "x"}])


def test_lora_on_a_unet_adapts_its_attention_projections_only(tmp_path, write_system):
    from compound.testing import tiny_sd

    folder = tiny_sd(tmp_path / "sd")
    cmp = write_system(one_painter(folder, ", lora(r=2)"))
    model = compound.load(cmp).backend("p").model
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"to_q", "to_k", "to_v", "0"}  # to_out.0
    assert not any("conv" in name for name, m in model.named_modules() if hasattr(m, "lora_A"))


def test_the_cli_reports_a_training_error_without_a_traceback(moa, tmp_path):
    command = [
        "train",
        moa["cmp"],
        "--data",
        moa["prefs"],
        "--out",
        tmp_path / "r",
        "--node-beta",
        "final=-2",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "compound", *map(str, command)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr and "greater than 0" in done.stderr
