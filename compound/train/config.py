"""Everything a training run is configured by: `TrainConfig`, from a TOML or YAML file, flags or keywords."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from compound.choices import CandidateStrategy, LossType, MixedPrecision, Reference, Schedule
from compound.diagnostics import error
from compound.io import read_table

Settings = TypeVar("Settings", bound=BaseModel)


def _no_bool(value: Any) -> Any:
    """A number setting given as true or false is a mistake (YAML's `yes`, a flag's value), not 1 or 0."""
    if isinstance(value, bool):
        raise ValueError(f"takes a number, not {str(value).lower()}")
    return value


#: A finite number above 0 (a beta, a weight, a learning rate): 0 or less would train the wrong way.
Positive = Annotated[float, BeforeValidator(_no_bool), Field(gt=0, allow_inf_nan=False)]
#: A learning rate: above 0, and one float32 can hold in the optimizer's step (at most 1e30).
Rate = Annotated[float, BeforeValidator(_no_bool), Field(gt=0, le=1e30, allow_inf_nan=False)]
#: A finite number of at least 0.
NonNegative = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, allow_inf_nan=False)]
#: A whole number (not true or false).
Whole = Annotated[int, BeforeValidator(_no_bool)]


class TrainConfig(BaseModel):
    """Everything a run is configured by (a TOML or YAML file, flags, or keyword arguments)."""

    model_config = ConfigDict(extra="forbid")

    beta: Positive = 0.1
    loss_type: LossType = "sigmoid"
    label_smoothing: NonNegative = Field(0.0, lt=0.5)
    nll: NonNegative = Field(0.0, description="weight of the chosen side's NLL (RPO); 0: none")
    node_weights: dict[str, Positive] = Field(
        {},
        description="per node (`image[1]`) or array (`image`: every instance; an instance's own key wins): "
        "its log ratio's weight in the loss",
    )
    node_betas: dict[str, Positive] = Field(
        {}, description="per node or array, overriding beta and the .cmp's beta="
    )
    auto_beta: bool = Field(
        False,
        description="set surrogate (diffusion) nodes' betas from the first batch (compound.train.betas)",
    )
    learning_rate: Rate = 1e-4
    learning_rates: dict[str, Rate] = Field({}, description="per component, overriding learning_rate")
    weight_decay: NonNegative = Field(0.0, description="AdamW's weight decay")
    batch_size: Whole = Field(8, ge=1, description="pairs per process per micro-batch")
    gradient_accumulation: Whole = Field(1, ge=1)
    steps: Whole | None = Field(None, ge=1, description="optimizer steps; default: epochs over the data")
    epochs: Positive = 1.0
    warmup: Whole = Field(0, ge=0, description="warm-up steps")
    schedule: Schedule = "linear"
    max_grad_norm: Positive | None = Field(
        1.0, description="gradient clipping over all trained parameters (None: no clipping)"
    )
    seed: Whole = 0
    mixed_precision: MixedPrecision = "no"
    reference: Reference | dict[str, Reference] | None = Field(
        None, description="the reference strategy, for every component or per component"
    )
    lora: dict[str, dict[str, Any]] = Field({}, description="per component: lora options such as {r = 8}")
    train: list[str] | None = Field(None, description="components to train; default: all")
    save_every: Whole = Field(0, ge=0, description="checkpoint every N steps; 0: only at the end")
    keep_checkpoints: Whole = Field(
        2, ge=1, description="checkpoints kept; the newest good one is never deleted"
    )
    eval_every: Whole = Field(0, ge=0)
    nan_patience: Whole = Field(5, ge=1, description="stop after this many non-finite steps in a row")
    rollback: bool = Field(
        True,
        description="undo an update that makes a weight non-finite (keeps a copy of the trained weights and "
        "optimizer state during the step; turn off for full fine-tunes too large for it)",
    )
    candidates: Whole = Field(4, ge=1, description="SysDPO-Sampling: candidates per left-out intermediate")
    candidate_strategy: CandidateStrategy = Field(
        "beam", description="SysDPO-Sampling: diverse beam search (the paper's) or independent draws"
    )
    refresh_every: Whole = Field(
        50, ge=1, description="SysDPO-Sampling: regenerate a pair's candidates after N steps"
    )
    skip_invalid: bool = False
    report_to: list[str] = Field(
        ["tensorboard"], description="Accelerate's trackers (`none`: none); metrics.jsonl is always written"
    )
    quiet: bool = False


def read_config(path: str | Path) -> dict[str, Any]:
    """A TOML or YAML config file as a dict (keys are TrainConfig's fields)."""
    return read_table(path, "config file")


def with_overrides(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A config file's settings with `overrides` on top (None, False and empty ones: not given). An
    `epochs` given without `steps` drops the file's step count: the passes decide the steps now."""
    merged = dict(settings)
    merged.update(
        {k: v for k, v in overrides.items() if v is not None and v is not False and v != [] and v != {}}
    )
    if overrides.get("epochs") is not None and overrides.get("steps") is None:
        merged.pop("steps", None)
    return merged


def validated(model: type[Settings], settings: Mapping[str, Any]) -> Settings:
    """`model(**settings)`, every invalid or unknown setting named in one error (where and why)."""
    try:
        return model(**settings)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in found['loc']) or 'settings'}: {found['msg']}" for found in e.errors()
        )
        raise error("config", f"invalid settings: {problems}") from None
