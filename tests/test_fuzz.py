"""Fuzzing the front end: thousands of mutated programs, and not one exception but `CompoundError`.

A seeded generator mutates the example programs and the error catalogue's: byte flips, insertions and
deletions, invalid UTF-8, control characters, huge numbers, deep nesting, huge plates and fan-ins. Each
program is read as `compound check` reads a file (bytes, decoded, then compiled) within a time bound,
and the whole run within a memory bound.
"""

import random
import re
import resource
import time
from pathlib import Path

from compound.compiler import compile_source
from compound.diagnostics import CompoundError
from compound.io import decode

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = 3000
SECONDS_PER_PROGRAM = 2.0
MEMORY_MB = 1500

SEEDS = [p.read_bytes() for p in sorted((ROOT / "examples").glob("*.cmp"))] + [
    program.encode()
    for program in re.findall(r"```cmp\n(.*?)```", (ROOT / "grammar" / "README.md").read_text(), flags=re.S)
]
HEAD = b'system s\ncomponent w = causal_lm("m")\ninput q : text\n'
SNIPPETS = [
    b"9" * 5000,
    b"1e999",
    b"-1e400",
    b"0." + b"0" * 70,
    b"f(" * 200 + b")" * 200,
    b"[" * 100,
    b"(" * 100,
    b'"' + b"x" * 200_000 + b'"',
    b'"""' + b"y\n" * 60_000 + b'"""',
    b'"\\ud800{q}"',
    b"\x00",
    b"\x0c",
    b"\x0b",
    b"\xc2\x85",
    b"\xe2\x80\xa8",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"{q.__class__.__mro__}",
    b"{0.__globals__}",
    b"i",
    b"\t",
    b"\r",
]
GROWN = [
    HEAD + b"a[1000000000] : text ~ w(q)\noutput a\n",
    HEAD + b"b[3000] : text ~ w(q)\na[3000] : text ~ w(q, b)\noutput a\n",
    HEAD + b"".join(b"n%d : text ~ w(zz%d)\n" % (k, k) for k in range(3000)) + b"output n0\n",
    HEAD + b"x : text ~ w(q)\n" * 3000 + b"output x\n",
    HEAD + b'a : text ~ w(q, template="' + b"{q}" * 5000 + b'")\noutput a\n',
    HEAD + b"a : text ~ w(q, weight=" + b"9" * 400 + b")\noutput a\n",
    HEAD  # a chain, each node also reading an input of its own, every node an output
    + b"".join(b"input q%d : text\nn%d : text ~ w(q%d, n%d)\n" % (k, k, k, k - 1) for k in range(1, 3000))
    + b"n0 : text ~ w(q)\noutput "
    + b", ".join(b"n%d" % k for k in range(3000))
    + b"\n",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip, insert, delete, repeat a line, or splice in a snippet."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        choice = rng.random()
        if choice < 0.2 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif choice < 0.35:
            out[at:at] = bytes([rng.randrange(256)])
        elif choice < 0.5 and out:
            del out[at : at + rng.randint(1, 8)]
        elif choice < 0.6:
            lines = bytes(out).split(b"\n")
            k = rng.randrange(len(lines))
            lines[k:k] = [lines[k]] * rng.randint(1, 50)
            out = bytearray(b"\n".join(lines))
        else:
            out[at:at] = rng.choice(SNIPPETS)
    return bytes(out)


def test_mutated_programs_raise_only_compound_errors_within_time_and_memory():
    rng = random.Random(0)
    start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    programs = [*GROWN] + [mutate(rng.choice(SEEDS + GROWN), rng) for _ in range(PROGRAMS)]
    outcomes = {"compiled": 0, "refused": 0}
    slowest = 0.0
    for data in programs:
        started = time.perf_counter()
        try:
            compile_source(decode(data, "fuzz.cmp"), "fuzz.cmp")
            outcomes["compiled"] += 1
        except CompoundError as e:
            assert e.diagnostics and str(e)  # renders, with every diagnostic
            outcomes["refused"] += 1
        slowest = max(slowest, time.perf_counter() - started)
        assert time.perf_counter() - started < SECONDS_PER_PROGRAM, data[:200]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_mb
    assert grown < MEMORY_MB, f"peak memory grew by {grown:.0f} MB"
    assert outcomes["compiled"] > 20 and outcomes["refused"] > 1000, outcomes  # both paths were exercised
