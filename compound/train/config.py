"""Everything a training run is configured by: `TrainConfig`, from a TOML or YAML file, flags or keywords."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compound.choices import CandidateStrategy, LossType, MixedPrecision, Reference, Schedule
from compound.diagnostics import error

Settings = TypeVar("Settings", bound=BaseModel)


class TrainConfig(BaseModel):
    """Everything a run is configured by (a TOML or YAML file, flags, or keyword arguments)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0)
    loss_type: LossType = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    nll: float = Field(0.0, ge=0, description="weight of the chosen side's NLL (RPO); 0: none")
    # keyed by node (`image[1]`) or by an array's name (`image`: every instance; an instance's own key wins)
    node_weights: dict[str, float] = {}
    node_betas: dict[str, float] = Field({}, description="per node, overriding beta and the .cmp's beta=")
    auto_beta: bool = Field(
        False,
        description="set surrogate (diffusion) nodes' betas from the first batch (compound.train.betas)",
    )
    learning_rate: float = Field(1e-4, gt=0)
    learning_rates: dict[str, float] = Field({}, description="per component, overriding learning_rate")
    weight_decay: float = 0.0
    batch_size: int = Field(8, ge=1, description="pairs per process per micro-batch")
    gradient_accumulation: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1, description="optimizer steps; default: epochs over the data")
    epochs: float = Field(1.0, gt=0)
    warmup: int = Field(0, ge=0, description="warm-up steps")
    schedule: Schedule = "linear"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    mixed_precision: MixedPrecision = "no"
    reference: Reference | dict[str, Reference] | None = Field(
        None, description="the reference strategy, for every component or per component"
    )
    lora: dict[str, dict[str, Any]] = Field({}, description="per component: lora options such as {r = 8}")
    train: list[str] | None = Field(None, description="components to train; default: all")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps; 0: only at the end")
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0)
    nan_patience: int = Field(5, ge=1, description="stop after this many non-finite steps in a row")
    rollback: bool = Field(
        True,
        description="undo an update that makes a weight non-finite (keeps a copy of the trained weights and "
        "optimizer state during the step; turn off for full fine-tunes too large for it)",
    )
    candidates: int = Field(4, ge=1, description="SysDPO-Sampling: candidates per left-out intermediate")
    candidate_strategy: CandidateStrategy = "beam"
    refresh_every: int = Field(
        50, ge=1, description="SysDPO-Sampling: regenerate a pair's candidates after N steps"
    )
    skip_invalid: bool = False
    report_to: list[str] = ["tensorboard"]
    quiet: bool = False


def read_config(path: str | Path) -> dict[str, Any]:
    """A TOML or YAML config file as a dict (keys are TrainConfig's fields)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        import tomllib

        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    raise error("config", f"{path}: use a .toml or .yaml config file")


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
