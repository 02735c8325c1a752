"""The shape of the code: imports flow one way, the IR and run-time types stand alone, the demos use the
public API, and nothing points outside the repository. Read with docs/architecture.md."""

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Repository folders and the package each is installed as.
PACKAGES = {"compound": "compound", "backends": "compound.backends", "grammar": "compound.grammar"}

#: The pipeline's stages, upstream first: a module imports only from its own stage or earlier ones.
STAGES = [
    {
        "compound.ir",
        "compound.types",
        "compound.seeds",
        "compound.grammar",
        "compound.limits",
        "compound.choices",
    },
    {"compound.diagnostics", "compound.io"},
    {"compound.run_folder", "compound.inputs"},
    {"compound.parse", "compound.backends", "compound.backends.fn"},
    {"compound.check", "compound.check.declare", "compound.check.bind", "compound.check.calls"},
    {"compound.check.lower", "compound.check.graph", "compound.factorize"},
    {"compound.compiler", "compound", "compound.viz", "compound.console"},
    {"compound.values", "compound.model_folders", "compound.text"},
    {"compound.backends.base", "compound.backends.decoding", "compound.testing.denoiser"},
    {
        "compound.backends.loading",
        "compound.backends.diffusion.process",
        "compound.backends.diffusion.families",
    },
    {"compound.backends.diffusion.folder"},
    {"compound.backends.causal_lm", "compound.backends.diffusion"},
    {"compound.interpret"},
    {"compound.interpret.given"},
    {"compound.interpret.sample", "compound.interpret.candidates", "compound.interpret.score"},
    {"compound.interpret.trace", "compound.reference"},
    {"compound.estimators", "compound.estimators.direct"},
    {"compound.estimators.marginal"},
    {"compound.system"},
    {"compound.loader", "compound.loss", "compound.data", "compound.devices", "compound.progress"},
    {
        "compound.train.config",
        "compound.train.schedule",
        "compound.train.metrics",
        "compound.train.betas",
        "compound.train.ranking",
    },
    {"compound.train.candidates", "compound.train.checkpoint"},
    {"compound.train.trainer", "compound.train"},
    {"compound.scorers.rules", "compound.scorers.combine", "compound.scorers.models"},
    {"compound.scorers", "compound.samples.store", "compound.testing", "compound.export", "compound.report"},
    {"compound.samples.score"},
    {"compound.samples", "compound.samples.pairing", "compound.samples.contact"},
    {"compound.samples.run"},
    {"compound.evaluation"},
    {"compound.label", "compound.optimize.reflection", "compound.optimize.evaluate"},
    {"compound.optimize.gepa", "compound.optimize.bootstrap"},
    {"compound.optimize"},
    {"compound.align"},
    {"compound.credit", "compound.view"},
    {
        "compound.commands",
        "compound.commands.common",
        "compound.commands.check",
        "compound.commands.compile",
        "compound.commands.train",
        "compound.commands.sample",
        "compound.commands.pairs",
        "compound.commands.align",
        "compound.commands.credit",
        "compound.commands.report",
        "compound.commands.export",
        "compound.commands.view",
        "compound.commands.label",
        "compound.commands.optimize",
    },
    {"compound.cli", "compound.__main__"},
]
#: What the demos (and any package built on compound) may import: the public API.
PUBLIC = {
    "compound",
    "compound.align",
    "compound.backends.fn",
    "compound.credit",
    "compound.diagnostics",
    "compound.grammar",
    "compound.optimize",
    "compound.report",
    "compound.samples",
    "compound.samples.pairing",
    "compound.scorers",
    "compound.seeds",
    "compound.testing",
    "compound.testing.denoiser",
    "compound.text",
}


def modules(folders: dict[str, str]) -> dict[str, Path]:
    """Every module of the packages, by its installed dotted name."""
    found = {}
    for folder, package in folders.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules a module imports, anywhere in it (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out |= {t for t in targets if t in known}
    return out - {name}


def graph() -> nx.DiGraph:
    found = modules(PACKAGES)
    g = nx.DiGraph()
    for name, path in found.items():
        g.add_node(name)
        g.add_edges_from((name, target) for target in imports(path, name, set(found)))
    return g


def test_the_module_graph_has_no_cycles():
    cycles = list(nx.simple_cycles(graph()))
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_has_a_stage_and_imports_flow_downstream_only():
    g = graph()
    stage = {m: k for k, group in enumerate(STAGES) for m in group}
    assert set(g) == set(stage), f"modules without a stage: {sorted(set(g) - set(stage))}"
    upward = [(a, b) for a, b in g.edges if stage[b] > stage[a]]
    assert not upward, f"imports of a later stage: {upward}"


@pytest.mark.parametrize("module", sorted(STAGES[0]))
def test_the_data_modules_import_nothing_of_the_project(module):
    assert not list(graph().successors(module))


def test_the_demos_reach_the_core_only_through_its_public_api():
    core = set(modules(PACKAGES))
    demos = modules({"demos": "compound_demos"})
    reached = {
        (name, target)
        for name, path in demos.items()
        for target in imports(path, name, core | set(demos))
        if target in core and target not in PUBLIC
    }
    assert not reached, f"demo modules importing core internals: {sorted(reached)}"


def test_the_core_holds_no_demo_knowledge():
    core = "\n".join(path.read_text() for path in modules(PACKAGES).values())
    assert "compound_demos" not in core
    for phrase in (
        "a disc growing",
        "getting darker",
        "dot moving",
        "a lake as the ice",
        "PATTERN",
        "P_FOLLOW",
    ):
        assert phrase not in core, phrase


OUTSIDE = re.compile(r"(?:\.\./)+[\w.\-/]*|\b(?:PAPER|DESIGN|DEMO-NOTES)\.md\b")
LINK = re.compile(r"\]\(([^)#\s]+)")


def texts() -> list[Path]:
    """The repository's docs and code: where a reader follows a link."""
    skip = {".venv", ".git", "runs", "out", "build"}
    found = []
    for pattern in ("*.md", "*.py", "*.cmp", "*.lark", "*.toml", "Makefile"):
        found += [p for p in ROOT.rglob(pattern) if not skip & set(p.relative_to(ROOT).parts)]
    return found


def test_nothing_links_to_a_path_outside_the_repository():
    outside = []
    for path in texts():
        text = path.read_text(encoding="utf-8")
        for match in OUTSIDE.finditer(text):
            target = (path.parent / match.group()).resolve()
            named = match.group().endswith(".md") and "/" not in match.group()
            if named or not target.is_relative_to(ROOT):
                outside.append(f"{path.relative_to(ROOT)}: {match.group()}")
        if path.suffix == ".md":
            for link in LINK.findall(text):
                if "://" in link or link.startswith("mailto:"):
                    continue
                target = (path.parent / link).resolve()
                if not target.is_relative_to(ROOT) or not target.exists():
                    outside.append(
                        f"{path.relative_to(ROOT)}: ({link}) does not resolve inside the repository"
                    )
    assert not outside, "\n".join(outside)
