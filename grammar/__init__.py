"""The compound language: its Lark grammar (`compound.lark`), reference (`README.md`), and string quoting.

Installed as `compound.grammar`, so no generic top-level `grammar` package
lands in site-packages.
"""

from importlib.resources import files

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def grammar_text() -> str:
    """The text of `compound.lark`, read from the installed package."""
    return files(__name__).joinpath("compound.lark").read_text(encoding="utf-8")


def quote(text: str) -> str:
    """`text` as a `.cmp` string literal that reads back as exactly `text`: the one way programs that
    write `.cmp` files quote a value (a template, a pattern, a path)."""

    def escape(ch: str) -> str:
        if ch in _ESCAPES:
            return _ESCAPES[ch]
        if not ch.isprintable() and ord(ch) < 0x10000:
            return f"\\u{ord(ch):04x}"
        return ch

    return '"' + "".join(escape(ch) for ch in text) + '"'
