"""The paper's experiments at a size this machine runs: `compound demo`."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from compound.diagnostics import CompoundError, Diagnostic

if TYPE_CHECKING:
    from compound.demo.protocol import Task

TASKS = {
    "progression": "compound.demo.experiment:Progression",
    "moa": "compound.demo.moa:MixtureOfAgents",
    "moa2": "compound.demo.moa:TwoLayerMixtureOfAgents",
}


def demo_task(name: str) -> Task:
    """The demo called `name` (imported only when asked for: they pull in torch and diffusers)."""
    if name not in TASKS:
        raise CompoundError(
            [Diagnostic("error", "config", f"unknown demo {name!r}: the demos are: {', '.join(TASKS)}")]
        )
    module, cls = TASKS[name].split(":")
    return getattr(import_module(module), cls)()
