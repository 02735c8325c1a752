"""compound: declare a compound AI system as a DAG, compile it, align it with system-level DPO."""

from compound.compiler import CompoundWarning, compile_file, compile_source
from compound.diagnostics import CompoundError, Diagnostic
from compound.factorize import formula
from compound.ir import System

__all__ = [
    "CompoundError",
    "CompoundWarning",
    "Diagnostic",
    "System",
    "compile_file",
    "compile_source",
    "formula",
]
__version__ = "0.1.0"
