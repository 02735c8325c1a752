"""How big a program, a data file or a value may be: the limits compound checks before doing the work.

A `.cmp` file of a few hundred bytes must not make the compiler or the run
time allocate gigabytes or spin for minutes, so every size a file controls has
a limit, checked before anything of that size is built. The defaults are far
above what a real system needs (the language reference and docs/security.md
list them); a caller that needs more passes its own `Limits` to
`compile_source` / `compile_file` / `compound.load`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Every limit, with its default."""

    #: Bytes of a `.cmp` file.
    source_bytes: int = 4_000_000
    #: Characters of one string literal.
    string_chars: int = 100_000
    #: Characters of one number literal.
    number_chars: int = 64
    #: Brackets open at once (calls nested in options, `[`, `(`).
    nesting: int = 32
    #: Tokens of one statement (a call of 10,000 arguments is about 20,000).
    statement_tokens: int = 20_000
    #: Members of one plate.
    plate_size: int = 100_000
    #: Nodes of the whole program, plates expanded.
    nodes: int = 200_000
    #: Parent links of the whole program, plates expanded (`a[N] ~ w(b)` with `b[N]` costs N x N).
    edges: int = 2_000_000
    #: `{field}`s in one template.
    template_fields: int = 1_000
    #: Errors reported for one file (the rest are counted).
    errors: int = 200
    #: Unknown names that get a "did you mean" suggestion (each costs a pass over every name).
    suggestions: int = 50
    #: Bytes of one text value in a data row.
    text_bytes: int = 1_000_000
    #: Pixels of one image in a data row (width x height), checked from its header before decoding.
    image_pixels: int = 4096 * 4096
    #: Bytes of one line of a JSONL file.
    line_bytes: int = 64_000_000
    #: Outputs of one ranked list in preference data.
    ranked_outputs: int = 1_000
    #: Bytes of a config or scorer file (TOML or YAML).
    config_bytes: int = 1_000_000


DEFAULT = Limits()
