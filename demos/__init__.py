"""The paper's experiments at a size this machine runs: `compound demo`."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from compound.diagnostics import error

if TYPE_CHECKING:
    from compound_demos.protocol import Task

TASKS = {
    "progression": "compound_demos.experiment:Progression",
    "moa": "compound_demos.moa:MixtureOfAgents",
    "moa2": "compound_demos.moa:TwoLayerMixtureOfAgents",
}


def demo_task(name: str) -> Task:
    """The demo called `name` (imported only when asked for: they pull in torch and diffusers)."""
    if name not in TASKS:
        raise error("config", f"unknown demo {name!r}: the demos are: {', '.join(TASKS)}, text")
    module, cls = TASKS[name].split(":")
    task: Task = getattr(import_module(module), cls)()
    return task
