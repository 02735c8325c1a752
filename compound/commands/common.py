"""What the commands share: the console, compiler-style reports, NAME=VALUE flags, training flags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from compound.choices import values
from compound.compiler import Compilation, compile_source, read_source
from compound.diagnostics import CompoundError, Diagnostic

err = Console(stderr=True, highlight=False, soft_wrap=True)


def report(diagnostics: Sequence[Diagnostic], sources: dict[str, str]) -> None:
    """Print diagnostics compiler-style, severities coloured."""
    for d in diagnostics:
        text = Text(d.render(sources))
        text.highlight_regex(r"\berror:", "bold red")
        text.highlight_regex(r"\bwarning:", "bold yellow")
        text.highlight_regex(r"\bnote:", "bold cyan")
        err.print(text)


def compiled(path: Path) -> Compilation | None:
    """Compile one file, printing its diagnostics; None when it has errors."""
    try:
        source = read_source(path)
        result = compile_source(source, str(path))
    except CompoundError as e:
        report(e.diagnostics, e.sources)
        return None
    report(result.warnings, {str(path): source})
    return result


def choices(literal: Any) -> str:
    """A Literal's values for a flag's help: `sigmoid, hinge, ipo or robust`."""
    found = values(literal)
    return ", ".join(found[:-1]) + f" or {found[-1]}" if len(found) > 1 else found[0]


def pairs(values: list[str] | None, option: str, convert: Callable[[str], Any] = str) -> dict[str, Any]:
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


def number_or_text(text: str) -> Any:
    """A flag's value as a whole number, else a number, else the text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def scorer_options(values: list[str] | None) -> dict[str, Any]:
    """--option KEY=VALUE flags, numbers as numbers."""
    return pairs(values, "--option", number_or_text)


def lora(value: str) -> dict[str, Any]:
    """`8` or `r=8,alpha=16,dropout=0.05`: LoRA options."""
    if "=" not in value:
        return {"r": int(value)}
    options: dict[str, Any] = {}
    for part in value.split(","):
        key, _, v = part.partition("=")
        options[key.strip()] = float(v) if "." in v else int(v) if v.strip().isdigit() else v.strip()
    return options


def reference(values: list[str] | None) -> str | dict[str, str] | None:
    """--reference STRATEGY (every component) or NAME=STRATEGY (repeatable); the last plain one wins."""
    if not values:
        return None
    plain = [r for r in values if "=" not in r]
    return plain[-1] if plain else pairs(values, "--reference") or None


def training(
    lr_for: list[str] | None = None,
    lora_for: list[str] | None = None,
    node_weight: list[str] | None = None,
    node_beta: list[str] | None = None,
    reference_for: list[str] | None = None,
    **flags: Any,
) -> dict[str, Any]:
    """Training settings from flags (None: not given), the NAME=VALUE ones parsed."""
    parsed = {
        "learning_rates": pairs(lr_for, "--lr-for", float),
        "lora": pairs(lora_for, "--lora", lora),
        "node_weights": pairs(node_weight, "--node-weight", float),
        "node_betas": pairs(node_beta, "--node-beta", float),
        "reference": reference(reference_for),
    }
    return {**flags, **{k: v for k, v in parsed.items() if v}}


# Flags train and align share.
Beta = Annotated[float | None, typer.Option(help="DPO temperature (default 0.1).")]
Rate = Annotated[float | None, typer.Option(help="Learning rate (default 1e-4).")]
RateFor = Annotated[list[str] | None, typer.Option(help="Per component: NAME=LR (repeatable).")]
Batch = Annotated[int | None, typer.Option(help="Pairs per process per micro-batch (default 8).")]
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
ScorerOptions = Annotated[list[str] | None, typer.Option(help="Scorer option KEY=VALUE (repeatable).")]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(help="Let model folders run their own Python code (never settable from a .cmp file)."),
]
