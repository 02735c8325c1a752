"""Which devices a run can use."""

from __future__ import annotations

import torch


def accelerated() -> bool:
    """Whether an accelerator (CUDA, XPU, MPS) is present: else Accelerate runs on the CPU, where
    processes launched together must be told so to see each other."""
    from accelerate.utils import is_mps_available, is_xpu_available

    return torch.cuda.is_available() or is_xpu_available() or is_mps_available()
