"""Property tests: generated valid programs compile to the factorization a brute-force
reading of the generator predicts; mutated and random programs never raise anything
but the project's own error.

Together the tests below feed well over 2,000 programs through the compiler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compound.compiler import compile_source
from compound.diagnostics import CompoundError

SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    "derandomize": True,
}


@dataclass
class Decl:
    """One generated statement: what it calls and, per argument, how it refers to its source."""

    name: str
    size: int | None
    kind: str  # input, writer, painter, line, join
    type: str
    args: list[tuple[str, str, int]] = field(default_factory=list)  # (source, mode, k)

    def render(self) -> str:
        if self.kind == "input":
            return f"input {self.name} : {self.type}"
        plate = f"[{self.size}]" if self.size else ""
        op = "~" if self.kind in ("writer", "painter") else "="
        parts = []
        for source, mode, k in self.args:
            parts.append(
                {
                    "single": source,
                    "whole": source,
                    "matching": f"{source}[i]",
                    "fixed": f"{source}[{k}]",
                    "index": "i",
                    "int": str(k),
                }[mode]
            )
        return f"{self.name}{plate} : {self.type} {op} {self.kind}({', '.join(parts)})"

    def members(self) -> list[tuple[str, int | None]]:
        return (
            [(self.name, None)] if self.size is None else [(f"{self.name}[{k}]", k) for k in range(self.size)]
        )


@dataclass
class Spec:
    decls: list[Decl]
    order: list[int]
    outputs: list[str]

    def render(self) -> str:
        lines = [
            "system generated",
            'component writer = causal_lm("models/writer")',
            'component painter = diffusion("models/painter")',
        ]
        lines += [self.decls[k].render() for k in self.order]
        lines.append("output " + ", ".join(self.outputs))
        return "\n".join(lines) + "\n"

    def expected_factors(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Brute force from the generator's own records: node -> (component, parents)."""
        sizes = {d.name: d.size for d in self.decls}
        factors = {}
        for d in self.decls:
            if d.kind not in ("writer", "painter"):
                continue
            for member, k in d.members():
                parents: list[str] = []
                for source, mode, j in d.args:
                    if mode == "single":
                        parents.append(source)
                    elif mode == "whole":
                        parents += [f"{source}[{m}]" for m in range(sizes[source])]
                    elif mode == "matching":
                        parents.append(f"{source}[{k}]")
                    elif mode == "fixed":
                        parents.append(f"{source}[{j}]")
                factors[member] = (d.kind, tuple(dict.fromkeys(parents)))
        return factors


@st.composite
def specs(draw) -> Spec:
    decls = [Decl(f"in{k}", None, "input", "text") for k in range(draw(st.integers(1, 2)))]
    for j in range(draw(st.integers(1, 8))):
        size = draw(st.none() | st.integers(1, 3))
        kind = draw(st.sampled_from(["writer", "painter", "line", "join"]))
        texts = [d for d in decls if d.type == "text"]

        def ref(texts=texts, size=size):
            src = draw(st.sampled_from(texts))
            if src.size is None:
                return (src.name, "single", 0)
            modes = ["whole", "fixed"] + (["matching"] if size == src.size else [])
            mode = draw(st.sampled_from(modes))
            return (src.name, mode, draw(st.integers(0, src.size - 1)))

        if kind == "writer":
            args = [ref() for _ in range(draw(st.integers(1, 3)))]
        elif kind == "painter":
            args = [ref()]
        elif kind == "line":
            index = (
                ("i", "index", 0) if size and draw(st.booleans()) else ("", "int", draw(st.integers(0, 2)))
            )
            args = [ref(), index]
        else:
            args = [ref() for _ in range(draw(st.integers(1, 3)))]
        decls.append(Decl(f"n{j}", size, kind, "image" if kind == "painter" else "text", args))
    used = {a[0] for d in decls for a in d.args}
    generated = [d.name for d in decls if d.kind != "input"]
    outputs = [n for n in generated if n not in used] or generated[-1:]
    order = draw(st.permutations(range(len(decls))))
    return Spec(decls, list(order), outputs)


@settings(max_examples=800, **SETTINGS)
@given(specs())
def test_generated_valid_programs_compile_to_the_brute_force_factorization(spec: Spec):
    system = compile_source(spec.render(), "generated.cmp").system
    got = {f.node: (f.component, f.parents) for f in system.factors}
    assert got == spec.expected_factors()
    seen: set[str] = set()
    for node in system.nodes:  # topological: every parent comes first
        assert set(node.parents) <= seen
        seen.add(node.name)
    assert [f.node for f in system.factors] == [n.name for n in system.nodes if n.kind == "sample"]


TOKEN = re.compile(r'"""[\s\S]*?"""|"[^"\n]*"|\w+|\s+|\S')
JUNK = st.sampled_from(
    [
        "(",
        ")",
        "[",
        "]",
        ",",
        ":",
        "~",
        "=",
        "i",
        "0",
        "7",
        "-1",
        '"',
        '"""',
        "\n",
        "#",
        "output",
        "system",
        "input",
        "component",
        "const",
        "writer",
        "painter",
        "line",
        "join",
        "format",
        "text",
        "image",
        "x",
        "$",
        "{",
        "\t",
        "1e9",
        "true",
    ]
)


@st.composite
def mutated(draw) -> str:
    tokens = TOKEN.findall(draw(specs()).render())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "swap", "insert", "rename", "duplicate"]))
        k = draw(st.integers(0, len(tokens) - 1))
        if op == "delete" and len(tokens) > 1:
            del tokens[k]
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[k], tokens[j] = tokens[j], tokens[k]
        elif op == "insert":
            tokens.insert(k, draw(JUNK))
        elif op == "rename" and re.fullmatch(r"\w+", tokens[k]):
            tokens[k] = draw(
                st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True) | st.text(max_size=4)
            )
        else:
            tokens.insert(k, tokens[draw(st.integers(0, len(tokens) - 1))])
    return "".join(tokens)


def compiles_or_reports(text: str) -> bool:
    """True if it compiled; False if it raised CompoundError. Anything else fails the test."""
    try:
        compile_source(text, "mutated.cmp")
        return True
    except CompoundError as e:
        assert e.diagnostics and all(d.code and d.message for d in e.diagnostics)
        assert str(e)  # renders
        return False


@settings(max_examples=1000, **SETTINGS)
@given(mutated())
def test_mutated_programs_raise_only_compound_errors(text: str):
    compiles_or_reports(text)


@settings(max_examples=200, **SETTINGS)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_compound_errors(text: str):
    compiles_or_reports("system s\n" + text)
    compiles_or_reports(text)


@settings(max_examples=300, **SETTINGS)
@given(specs(), st.data())
def test_a_back_edge_makes_a_cycle_that_is_reported(spec: Spec, data):
    """Feed a descendant back into an earlier language-model node: a cycle the checker must name."""
    writers = [k for k, d in enumerate(spec.decls) if d.kind == "writer"]
    assume(writers)
    target = spec.decls[data.draw(st.sampled_from(writers))]
    descendants, frontier = set(), {target.name}
    while frontier:
        frontier = {d.name for d in spec.decls if any(a[0] in frontier for a in d.args)} - descendants
        descendants |= frontier
    texts = [d for d in spec.decls if d.name in descendants and d.type == "text"]
    assume(texts)
    source = data.draw(st.sampled_from(texts))
    target.args.append((source.name, "single" if source.size is None else "whole", 0))
    try:
        compile_source(spec.render(), "cyclic.cmp")
    except CompoundError as e:
        assert [d.code for d in e.diagnostics if d.severity == "error"] == ["cycle"]
        (cycle,) = (d for d in e.diagnostics if d.code == "cycle")
        assert target.name in cycle.message and source.name in cycle.message
    else:
        raise AssertionError("a cyclic program compiled")
