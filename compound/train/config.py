"""Everything a training run is configured by: `TrainConfig`, from a TOML or YAML file, flags or keywords."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compound.diagnostics import error


class TrainConfig(BaseModel):
    """Everything a run is configured by (a TOML or YAML file, flags, or keyword arguments)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = "sigmoid"
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
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    reference: str | dict[str, str] | None = None
    lora: dict[str, dict[str, Any]] = Field({}, description="per component: lora options such as {r = 8}")
    train: list[str] | None = Field(None, description="components to train; default: all")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps; 0: only at the end")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    eval_every: int = Field(0, ge=0)
    nan_patience: int = Field(5, ge=1, description="stop after this many non-finite steps in a row")
    rollback: bool = Field(
        True,
        description="undo an update that makes a weight non-finite (keeps a copy of the trained weights and "
        "optimizer state during the step; turn off for full fine-tunes too large for it)",
    )
    candidates: int = Field(4, ge=1, description="SysDPO-Sampling: candidates per left-out intermediate")
    candidate_strategy: Literal["beam", "sample"] = "beam"
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
