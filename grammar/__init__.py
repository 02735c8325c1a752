"""The compound language: its Lark grammar (`compound.lark`) and reference (`README.md`).

Installed as `compound.grammar`, so no generic top-level `grammar` package
lands in site-packages.
"""

from importlib.resources import files


def grammar_text() -> str:
    """The text of `compound.lark`, read from the installed package."""
    return files(__name__).joinpath("compound.lark").read_text(encoding="utf-8")
