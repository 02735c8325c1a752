"""The enumerations settings, code and the command line's help share, each declared once (and
importable without torch, so that `compound check` starts fast)."""

from __future__ import annotations

from typing import Literal, get_args

#: A component's reference (`reference=`): a frozen copy, its own weights with LoRA off, or cached scores.
Reference = Literal["copy", "adapter", "cached"]
#: How SysDPO-Sampling draws candidates: diverse beam search, or independent samples.
CandidateStrategy = Literal["beam", "sample"]
#: The loss family over system log ratios (a ranked list always takes the Plackett-Luce loss).
LossType = Literal["sigmoid", "hinge", "ipo", "robust"]
#: The learning-rate schedules (transformers' `get_scheduler` names).
Schedule = Literal["linear", "cosine", "constant", "constant_with_warmup"]
#: Accelerate's mixed-precision modes.
MixedPrecision = Literal["no", "bf16", "fp16"]
#: How an input's samples become preference rows: best against worst, every better-worse pair, a ranking.
PairingStrategy = Literal["best-worst", "all", "ranked"]
#: What each online round trains against: the base system, or the round's own start (iterative DPO).
RoundReference = Literal["initial", "round"]


def values(literal: object) -> tuple[str, ...]:
    """A Literal's values, in order."""
    return tuple(str(v) for v in get_args(literal))
