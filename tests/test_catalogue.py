"""Every entry of the error catalogue in grammar/README.md gives its error at its line and column."""

import re
from pathlib import Path

import pytest

from compound.compiler import compile_source
from compound.diagnostics import CompoundError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "grammar" / "README.md"


def catalogue() -> list[tuple[str, str, list[str]]]:
    """(code, program, expected lines) for every program/expectation pair in the catalogue."""
    text = README.read_text(encoding="utf-8").split("## Error catalogue", 1)[1]
    entries = []
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        code = re.match(r"`([a-z-]+)`", section).group(1)
        for program, expected in re.findall(r"```cmp\n(.*?)```\n```text\n(.*?)```", section, flags=re.S):
            entries.append((code, program, expected.strip().splitlines()))
    return entries


def headlines(program: str) -> list[str]:
    """The first line of each diagnostic, without the file name."""
    try:
        diagnostics = compile_source(program, "example.cmp").warnings
    except CompoundError as e:
        diagnostics = e.diagnostics
    return [d.render({}).split("\n")[0].removeprefix("example.cmp:") for d in diagnostics]


ENTRIES = catalogue()


@pytest.mark.parametrize(("code", "program", "expected"), ENTRIES, ids=[e[0] for e in ENTRIES])
def test_entry_reports_its_error_at_its_position(code, program, expected):
    found = headlines(program)
    for line in expected:
        assert line in found
        assert line.endswith(f"[{code}]")


def test_catalogue_covers_every_code_the_compiler_can_report():
    source = "\n".join(p.read_text() for d in ("compound", "backends") for p in (ROOT / d).rglob("*.py"))
    used = set(re.findall(r'(?:\berror|report\.error|report\.warn|report\.unknown)\(\s*"([a-z-]+)"', source))
    used |= set(re.findall(r'Diagnostic\(\s*"(?:error|warning)",\s*"([a-z-]+)"', source))
    documented = set(re.findall(r"^### `([a-z-]+)`", README.read_text(), flags=re.M))
    assert len(used) > 30
    assert used <= documented, f"codes without a catalogue entry: {sorted(used - documented)}"
    assert documented - {"unreadable", "component", "row", "config", "training", "too-many"} <= {
        e[0] for e in ENTRIES
    }
