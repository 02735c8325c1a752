"""The `compound` command line (typer + rich).

Errors in a user's files print as `FILE:LINE:COL: error: MESSAGE` with the
source line and a caret, and exit with status 1; never a traceback. Each
command imports the stage it runs when it runs, so that `compound check` starts
without torch.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from compound.compiler import Compilation, compile_source, read_source
from compound.diagnostics import CompoundError, Diagnostic, error
from compound.factorize import formula
from compound.io import atomic_write, load_jsonl

app = typer.Typer(
    name="compound",
    help="Compile, check, draw and align compound AI systems declared in .cmp files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
COMMANDS = "compound.commands"


class Emit(str, Enum):
    factors = "factors"
    ir = "ir"


def _report(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic], sources: dict[str, str]) -> None:
    for d in diagnostics:
        text = Text(d.render(sources))
        text.highlight_regex(r"\berror:", "bold red")
        text.highlight_regex(r"\bwarning:", "bold yellow")
        text.highlight_regex(r"\bnote:", "bold cyan")
        err.print(text)


def _compile(path: Path) -> Compilation | None:
    """Compile one file, printing its diagnostics; None when it has errors."""
    try:
        source = read_source(path)
        result = compile_source(source, str(path))
    except CompoundError as e:
        _report(e.diagnostics, e.sources)
        return None
    _report(result.warnings, {str(path): source})
    return result


@app.command()
def check(files: Annotated[list[Path], typer.Argument(help="The .cmp files to check.")]) -> None:
    """Check .cmp files: syntax, names, types, plates, cycles, outputs. Exit 1 on any error."""
    failed = 0
    for path in files:
        result = _compile(path)
        if result is None:
            failed += 1
            continue
        system = result.system
        err.print(f"{path}: ok ({len(system.nodes)} nodes, {len(system.factors)} factors)")
    if failed:
        err.print(f"[bold red]{failed} of {len(files)} file(s) have errors[/]")
        raise typer.Exit(1)


@app.command("compile")
def compile_(
    file: Annotated[Path, typer.Argument(help="The .cmp file.")],
    emit: Annotated[
        Emit, typer.Option(help="factors: the factorization; ir: the checked IR as JSON.")
    ] = Emit.factors,
    viz: Annotated[Path | None, typer.Option(help="Draw the DAG to OUT.svg, .png, .pdf or .dot.")] = None,
) -> None:
    """Compile a .cmp file: print its factorization (or IR) and optionally draw it."""
    result = _compile(file)
    if result is None:
        raise typer.Exit(1)
    system = result.system
    if emit is Emit.ir:
        sys.stdout.write(system.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(formula(system) + "\n")
    if viz is not None:
        from compound.viz import GraphvizMissing, render

        try:
            err.print(f"wrote {render(system, viz)}")
        except GraphvizMissing as e:
            err.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(1) from None
        except (ValueError, OSError) as e:
            err.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(1) from None


def _pairs(values: list[str] | None, option: str, convert: Any = str) -> dict[str, Any]:
    """NAME=VALUE flags as a dict; a usage error names the flag."""
    out: dict[str, Any] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=option)
        try:
            out[name] = convert(value)
        except ValueError as e:
            raise typer.BadParameter(f"{item!r}: {e}", param_hint=option) from None
    return out


def _lora(value: str) -> dict[str, Any]:
    """`8` or `r=8,alpha=16,dropout=0.05`: LoRA options."""
    if "=" not in value:
        return {"r": int(value)}
    options: dict[str, Any] = {}
    for part in value.split(","):
        key, _, v = part.partition("=")
        options[key.strip()] = float(v) if "." in v else int(v) if v.strip().isdigit() else v.strip()
    return options


def _fail(error: Exception) -> typer.Exit:
    if isinstance(error, CompoundError):
        _report(error.diagnostics, error.sources)
    else:
        err.print(f"[bold red]error:[/] {error}")
    return typer.Exit(1)


Beta = Annotated[float | None, typer.Option(help="DPO temperature (default 0.1).")]
Rate = Annotated[float | None, typer.Option(help="Learning rate (default 1e-4).")]
RateFor = Annotated[list[str] | None, typer.Option(help="Per component: NAME=LR (repeatable).")]
Batch = Annotated[int | None, typer.Option(help="Pairs per process per micro-batch (default 8).")]
Steps = Annotated[int | None, typer.Option(help="Optimizer steps (default: --epochs over the data).")]
Lora = Annotated[list[str] | None, typer.Option(help="Per component: NAME=R or NAME=r=8,alpha=16.")]
Only = Annotated[list[str] | None, typer.Option("--train", help="Train only these components.")]
Nll = Annotated[float | None, typer.Option(help="Weight of the chosen side's NLL (RPO); 0: none.")]
NodeBeta = Annotated[
    list[str] | None,
    typer.Option(help="Per node: NODE=BETA (image= for every instance; over the .cmp file's beta=)."),
]
AutoBeta = Annotated[
    bool, typer.Option(help="Scale diffusion nodes' betas to the LLM nodes' from the first batch.")
]
Seed = Annotated[int | None, typer.Option(help="Seed of every random choice of the run.")]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(help="Let model folders run their own Python code (never settable from a .cmp file)."),
]


def _train_settings(settings: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """Training settings: those of a config file, overridden by the flags given (None: not given)."""
    named = {
        "learning_rates": (lambda v: _pairs(v, "--lr-for", float)),
        "lora": (lambda v: _pairs(v, "--lora", _lora)),
        "node_weights": (lambda v: _pairs(v, "--node-weight", float)),
        "node_betas": (lambda v: _pairs(v, "--node-beta", float)),
    }
    for key, value in flags.items():
        if key in named and value is not None:
            value = named[key](value) or None
        if key == "reference" and value is not None:
            strategies = [r for r in value if "=" not in r]
            value = (
                strategies[-1]
                if strategies
                else _pairs([r for r in value if "=" in r], "--reference") or None
            )
        if value is not None and value is not False and value != []:
            settings[key] = value
    if flags.get("epochs") is not None and flags.get("steps") is None:
        settings.pop("steps", None)  # --epochs given: a config file's step count no longer applies
    return settings


@app.command()
def train(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system to align.")],
    data: Annotated[
        str, typer.Option(help="Preference data: JSONL, Parquet, CSV, JSON, a datasets folder or hub id.")
    ],
    out: Annotated[Path, typer.Option(help="The run folder (metrics, checkpoints, final weights).")],
    config: Annotated[Path | None, typer.Option(help="A TOML or YAML file of training settings.")] = None,
    eval_data: Annotated[
        str | None, typer.Option("--eval", help="Held-out pairs, evaluated every --eval-every steps.")
    ] = None,
    beta: Beta = None,
    loss: Annotated[str | None, typer.Option(help="sigmoid (default), hinge, ipo or robust.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="For the robust loss.")] = None,
    nll: Nll = None,
    lr: Rate = None,
    lr_for: RateFor = None,
    batch_size: Batch = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step.")] = None,
    steps: Steps = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data (default 1).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up steps.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="linear, cosine, constant or constant_with_warmup.")
    ] = None,
    seed: Seed = None,
    mixed_precision: Annotated[str | None, typer.Option(help="no, bf16 or fp16.")] = None,
    reference: Annotated[
        list[str] | None, typer.Option(help="copy, adapter or cached; or NAME=STRATEGY.")
    ] = None,
    lora: Lora = None,
    train_only: Only = None,
    node_weight: Annotated[
        list[str] | None, typer.Option(help="Per node: NODE=WEIGHT in the loss (image= for every instance).")
    ] = None,
    node_beta: NodeBeta = None,
    auto_beta: AutoBeta = False,
    save_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (0: only at the end).")
    ] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate --eval every N steps.")] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="Leave invalid rows out (reported and counted).")
    ] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of a progress bar.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Align every trainable component of SYSTEM jointly with SysDPO on preference DATA."""
    from compound.train import Trainer, TrainingError, read_config

    settings = _train_settings(
        read_config(config) if config else {},
        beta=beta,
        loss_type=loss,
        label_smoothing=label_smoothing,
        nll=nll,
        learning_rate=lr,
        learning_rates=lr_for,
        batch_size=batch_size,
        gradient_accumulation=grad_accum,
        steps=steps,
        epochs=epochs,
        warmup=warmup,
        schedule=schedule,
        seed=seed,
        mixed_precision=mixed_precision,
        save_every=save_every,
        eval_every=eval_every,
        train=train_only,
        reference=reference,
        lora=lora,
        node_weights=node_weight,
        node_betas=node_beta,
        auto_beta=auto_beta,
        skip_invalid=skip_invalid,
        quiet=quiet,
    )
    try:
        trainer = Trainer(
            system, data, out, settings, eval_data=eval_data, trust_remote_code=trust_remote_code
        )
        _report(trainer.data.warnings + (trainer.eval_data.warnings if trainer.eval_data else []), {})
        err.print(
            f"training {', '.join(trainer.trained)} of {system} on {len(trainer.data.pairs)} pairs "
            f"({len(trainer.data.pairs) - trainer.sampling} Direct, {trainer.sampling} Sampling)"
            + (f"; {len(trainer.data.invalid)} invalid rows left out" if trainer.data.invalid else "")
            + f": {trainer.total_steps} steps of {trainer.global_batch} pairs"
            + (
                "; node betas " + ", ".join(f"{n} {b:.3g}" for n, b in trainer.node_betas.items())
                if trainer.node_betas
                else ""
            )
        )
        last = trainer.train(resume=resume)
    except (CompoundError, TrainingError) as e:
        raise _fail(e) from None
    except ValidationError as e:
        raise _fail(ValueError(f"invalid settings: {e}")) from None
    err.print(
        f"done: loss {last.get('loss', float('nan')):.4f}, accuracy {last.get('rewards/accuracy', 0):.3f}; "
        f"weights in {out / 'final'}"
    )


def _options(values: list[str] | None) -> dict[str, Any]:
    """--option KEY=VALUE flags, numbers as numbers."""

    def value(text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    return _pairs(values, "--option", value)


def _read_inputs(path: Path) -> list[dict[str, Any]]:
    """The rows of an inputs file: one JSON object of input values per line."""
    rows = []
    for number, row in load_jsonl(path):
        if not isinstance(row, dict):
            raise error("row", f"{path} row {number} is not an object of input values")
        rows.append(row)
    return rows


@app.command()
def sample(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system to run.")],
    inputs: Annotated[Path, typer.Option(help="JSONL: one object of input values per line.")],
    out: Annotated[
        Path, typer.Option(help="Folder for samples.jsonl, images/, contact.png and contact.html.")
    ],
    n: Annotated[int, typer.Option(help="Samples per input.")] = 1,
    weights: Annotated[Path | None, typer.Option(help="Trained weights, e.g. RUN/final.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    best_of: Annotated[
        int | None, typer.Option(help="Sample N per input and keep the best (needs --scorer).")
    ] = None,
    scorer: Annotated[
        str | None, typer.Option(help="Score the samples (progression, exact_match, ...).")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Scorer option KEY=VALUE (repeatable).")] = None,
    temperature: Annotated[float | None, typer.Option(help="LLM sampling temperature.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="LLM generation length.")] = None,
    steps: Annotated[int | None, typer.Option(help="Diffusion denoising steps.")] = None,
    batch: Annotated[int, typer.Option(help="Inputs per batched call.")] = 8,
    trust_remote_code: Annotated[
        bool,
        typer.Option(help="Let model folders run their own Python code (never settable from a .cmp file)."),
    ] = False,
) -> None:
    """Run SYSTEM N times per input; write the rows, their images and a contact sheet (multi-process with
    `accelerate launch`: each process a share of the inputs, one merged output)."""
    from compound.sample_files import sample_inputs

    decoding = {
        k: v
        for k, v in {"temperature": temperature, "max_new_tokens": max_new_tokens, "steps": steps}.items()
        if v is not None
    }
    try:
        written = sample_inputs(
            system,
            _read_inputs(inputs),
            out,
            n=best_of or n,
            weights=weights,
            seed=seed,
            scorer=(scorer, _options(option)) if scorer else None,
            best=best_of is not None,
            batch=batch,
            decoding=decoding,
            trust_remote_code=trust_remote_code,
        )
    except CompoundError as e:
        raise _fail(e) from None
    if written is not None:
        err.print(f"wrote {written} ({out / 'contact.png'}, {out / 'contact.html'})")


@app.command()
def pairs(
    folder: Annotated[Path, typer.Argument(help="A folder written by `compound sample`.")],
    out: Annotated[Path, typer.Option(help="The preference JSONL to write.")],
    scorer: Annotated[
        str | None, typer.Option(help="Score the samples (else their stored scores are used).")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Scorer option KEY=VALUE (repeatable).")] = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="best-worst: one pair per input; all: every better-worse pair; ranked: one ranked list."
        ),
    ] = "best-worst",
    ranked: Annotated[bool, typer.Option(help="Same as --strategy ranked.")] = False,
    min_gap: Annotated[float, typer.Option(help="Smallest score gap that makes a pair.")] = 0.0,
    min_chosen: Annotated[
        float | None, typer.Option(help="Smallest score of a pair's preferred sample (default: any).")
    ] = None,
) -> None:
    """Pair the scored samples of each input into preference rows for `compound train`."""
    import json
    import statistics

    from compound import samples as saved
    from compound.pairing import pairs as make_pairs
    from compound.scorers import scorer as find_scorer

    try:
        found = saved.read(folder)
        if scorer:
            saved.score(found, find_scorer(scorer, **_options(option)))
        elif any(s.score is None for s in found):
            raise error("config", "the samples have no scores: give --scorer")
        chosen_strategy = "ranked" if ranked else strategy
        made = make_pairs(
            found, chosen_strategy, min_gap, relative_to=out.resolve().parent, min_chosen=min_chosen
        )
    except CompoundError as e:
        raise _fail(e) from None
    atomic_write(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in made.pairs))
    gaps = made.gaps or [0.0]
    what = "ranked lists" if ranked or strategy == "ranked" else "pairs"
    err.print(
        f"{len(made.pairs)} {what} from {len(found)} samples of {made.inputs} inputs "
        f"({made.without_pair} inputs without one: equal scores, gap < {min_gap}"
        + ("" if min_chosen is None else f" or best < {min_chosen}")
        + "); score gap mean "
        f"{statistics.fmean(gaps):.3f}, min {min(gaps):.3f}, max {max(gaps):.3f}; wrote {out}"
    )


@app.command()
def align(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system to align.")],
    inputs: Annotated[
        Path, typer.Option(help="Training inputs, JSONL: one object of input values per line.")
    ],
    out: Annotated[Path, typer.Option(help="The run folder: round-K/ per round, summary.jsonl and .png.")],
    scorer: Annotated[
        str | None, typer.Option(help="A scorer's name, or a TOML/YAML file declaring one (required).")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Scorer option KEY=VALUE (repeatable).")] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Rounds of sample, score, pair, train (default 3).")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Samples per training input per round (default 4).")
    ] = None,
    eval_inputs: Annotated[
        Path | None, typer.Option("--eval", help="Held-out inputs, evaluated after every round.")
    ] = None,
    eval_samples: Annotated[int | None, typer.Option(help="Samples per held-out input (default 1).")] = None,
    pairing: Annotated[str | None, typer.Option(help="best-worst (default), all or ranked.")] = None,
    min_gap: Annotated[float | None, typer.Option(help="Smallest score gap that makes a pair.")] = None,
    min_chosen: Annotated[
        float | None, typer.Option(help="Smallest score of a pair's preferred sample.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="initial (default): the base system; round: each round's start.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="A TOML or YAML file of these settings; its [train] table: training's."),
    ] = None,
    seed: Seed = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="LLM generation length when sampling.")] = None,
    temperature: Annotated[float | None, typer.Option(help="LLM sampling temperature.")] = None,
    denoising_steps: Annotated[
        int | None, typer.Option(help="Diffusion denoising steps when sampling.")
    ] = None,
    beta: Beta = None,
    nll: Nll = None,
    lr: Rate = None,
    lr_for: RateFor = None,
    batch_size: Batch = None,
    steps: Annotated[
        int | None, typer.Option(help="Training steps per round (default: --epochs over its pairs).")
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(help="Passes over each round's pairs (default 1); scales with the pairs a round finds."),
    ] = None,
    lora: Lora = None,
    train_only: Only = None,
    node_beta: NodeBeta = None,
    auto_beta: AutoBeta = False,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps of a round.")] = None,
    resume: Annotated[bool, typer.Option(help="Finish the run in --out where it stopped.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Online SysDPO: rounds of sampling the current system, scoring, pairing and training, with held-out
    evaluation after each round (docs/training.md, "Online rounds")."""
    from compound.align import AlignConfig
    from compound.align import align as run_align
    from compound.train import TrainingError, read_config

    try:
        settings: dict[str, Any] = read_config(config) if config else {}
        trained = _train_settings(
            dict(settings.pop("train", {}) or {}),
            beta=beta,
            nll=nll,
            learning_rate=lr,
            learning_rates=lr_for,
            batch_size=batch_size,
            steps=steps,
            epochs=epochs,
            seed=seed,
            lora=lora,
            train=train_only,
            node_betas=node_beta,
            auto_beta=auto_beta,
            save_every=save_every,
        )
        decoding = dict(settings.pop("decoding", {}) or {})
        decoding.update(
            {
                k: v
                for k, v in {
                    "max_new_tokens": max_new_tokens,
                    "temperature": temperature,
                    "steps": denoising_steps,
                }.items()
                if v is not None
            }
        )
        flags = {
            "system": str(system),
            "inputs": str(inputs),
            "scorer": scorer,
            "rounds": rounds,
            "samples": samples,
            "eval": str(eval_inputs) if eval_inputs else None,
            "eval_samples": eval_samples,
            "pairing": pairing,
            "min_gap": min_gap,
            "min_chosen": min_chosen,
            "reference": reference,
            "seed": seed,
        }
        settings.update({k: v for k, v in flags.items() if v is not None})
        settings["scorer_options"] = {**settings.get("scorer_options", {}), **_options(option)}
        if "scorer" not in settings:
            raise error("config", "compound align needs a scorer: --scorer NAME or --scorer FILE.toml")
        summary = run_align(
            AlignConfig(**settings, decoding=decoding, train=trained),
            out,
            resume=resume,
            trust_remote_code=trust_remote_code,
        )
    except (CompoundError, TrainingError) as e:
        raise _fail(e) from None
    except ValidationError as e:
        raise _fail(ValueError(f"invalid settings: {e}")) from None
    last = summary[-1]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if isinstance(v, float))
    err.print(f"done: {len(summary)} rounds; last round: {shown}; curves in {out / 'summary.png'}")


@app.command()
def credit(
    run: Annotated[Path, typer.Argument(help="A `compound train` or `compound align` run folder.")],
    eval_inputs: Annotated[Path, typer.Option("--eval", help="Held-out inputs, JSONL.")],
    scorer: Annotated[
        str | None, typer.Option(help="A scorer's name or file (default: an align run's own).")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Scorer option KEY=VALUE (repeatable).")] = None,
    eval_samples: Annotated[int | None, typer.Option(help="Samples per held-out input.")] = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Which component the gain comes from: held-out scores of the base, the trained system, and the
    trained system with each component reverted to its base model."""
    from compound.credit import credit as run_credit
    from compound.credit import markdown

    try:
        table = run_credit(run, eval_inputs, scorer, _options(option), eval_samples, trust_remote_code)
    except CompoundError as e:
        raise _fail(e) from None
    print(markdown(table), end="")
    err.print(f"wrote {run / 'credit' / 'CREDIT.md'}")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="A training run folder.")]) -> None:
    """Plot a run's loss, accuracy and per-node margins, and write REPORT.md."""
    from compound.report import report as write_report

    try:
        err.print(f"wrote {write_report(run)}")
    except CompoundError as e:
        raise _fail(e) from None


@app.command("export")
def export_(
    run: Annotated[Path, typer.Argument(help="A training run folder.")],
    out: Annotated[Path, typer.Option(help="Where to write one Hugging Face folder per trained component.")],
    adapter: Annotated[
        bool, typer.Option(help="Keep LoRA adapters as PEFT adapters instead of merging them.")
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option(help="Let model folders run their own Python code (never settable from a .cmp file)."),
    ] = False,
) -> None:
    """Write each trained component as an ordinary Hugging Face folder (no compound needed to load it)."""
    from compound.export import export

    try:
        for path in export(run, out, adapter, trust_remote_code):
            err.print(f"wrote {path}")
    except CompoundError as e:
        raise _fail(e) from None


def _guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """A plugin command whose `CompoundError`s are reported like the built-in commands' (no traceback)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CompoundError as e:
            raise _fail(e) from None

    return run


def _plugin_commands() -> None:
    """Commands installed packages add through the `compound.commands` entry-point group (the demos'
    `compound demo` and `compound pretrain`); a built-in command's name cannot be taken."""
    taken = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    for ep in entry_points(group=COMMANDS):
        if ep.name in taken:
            continue
        try:
            command = ep.load()
        except Exception as e:  # a broken plugin must not take the built-in commands down
            err.print(f"[yellow]warning:[/] command {ep.name!r} ({ep.value}) did not load: {e}")
            continue
        app.command(ep.name)(_guarded(command))


_plugin_commands()


def main() -> None:
    """The `compound` command. A user's mistake, a missing or unwritable file, a full disk: an error
    message and exit status 1, never a traceback (COMPOUND_TRACEBACK=1 shows one, for a bug)."""
    import os
    import warnings

    from rich.markup import escape

    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # libraries' deprecation notices are not the user's
    try:
        app()
    except CompoundError as e:
        _report(e.diagnostics, e.sources)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as e:
        if os.environ.get("COMPOUND_TRACEBACK"):
            raise
        if isinstance(e, OSError):
            where = f": {e.filename}" if e.filename else ""
            err.print(f"[bold red]error:[/] {escape(str(e.strerror or e))}{escape(where)}")
        elif isinstance(e, MemoryError):
            err.print("[bold red]error:[/] out of memory")
        else:
            err.print(
                f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))}; this is a bug in "
                "compound, please report it (COMPOUND_TRACEBACK=1 shows where it happened)"
            )
    else:
        return
    raise SystemExit(1)
