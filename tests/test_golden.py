"""Golden files for the front end, in the style of mypyc's test-data: each tests/golden/NAME.cmp with
NAME.factors (the factorization `compound compile` prints) and NAME.ir.json (`--emit ir`), reviewed by
hand once. A change to the parser, the checker or the IR that moves either fails here; after checking
the new output by hand, `COMPOUND_UPDATE_GOLDEN=1 pytest tests/test_golden.py` rewrites them."""

import os
from pathlib import Path

import pytest

from compound.compiler import compile_source
from compound.factorize import formula

GOLDEN = Path(__file__).resolve().parent / "golden"
PROGRAMS = sorted(GOLDEN.glob("*.cmp"))


def outputs(path: Path) -> dict[str, str]:
    system = compile_source(path.read_text(encoding="utf-8"), path.name).system
    return {".factors": formula(system) + "\n", ".ir.json": system.model_dump_json(indent=2) + "\n"}


def test_there_are_golden_programs():
    assert len(PROGRAMS) >= 6


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_the_front_end_gives_the_reviewed_output(path):
    for suffix, text in outputs(path).items():
        expected = path.with_suffix(suffix)
        if os.environ.get("COMPOUND_UPDATE_GOLDEN"):
            expected.write_text(text, encoding="utf-8")
        assert expected.is_file(), f"no {expected.name}: run with COMPOUND_UPDATE_GOLDEN=1 and review it"
        assert text == expected.read_text(encoding="utf-8"), f"{expected.name} differs"
