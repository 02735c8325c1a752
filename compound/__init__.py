"""compound: declare a compound AI system as a DAG, compile it, align it with system-level DPO.

The front end (`compile_file`, `compile_source`, `formula`) imports no torch;
`load`, `CompiledSystem`, `LogRatio` and `sysdpo_loss` load the model stack on
first use.
"""

from typing import Any

from compound.compiler import CompoundWarning, compile_file, compile_source
from compound.diagnostics import CompoundError, Diagnostic
from compound.factorize import formula
from compound.ir import System

__all__ = [
    "CompiledSystem",
    "CompoundError",
    "CompoundWarning",
    "Diagnostic",
    "LogRatio",
    "ReferenceCache",
    "System",
    "TrainConfig",
    "Trainer",
    "compile_file",
    "compile_source",
    "formula",
    "load",
    "load_preferences",
    "sysdpo_loss",
]
__version__ = "0.1.0"

_LAZY = {
    "load": "compound.loader",
    "CompiledSystem": "compound.system",
    "LogRatio": "compound.types",
    "sysdpo_loss": "compound.loss",
    "ReferenceCache": "compound.reference",
    "Trainer": "compound.train",
    "TrainConfig": "compound.train",
    "load_preferences": "compound.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compound' has no attribute {name!r}")
