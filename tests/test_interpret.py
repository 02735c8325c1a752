"""The one interpreter: no other run-time code walks a system's nodes, a handler written here plugs in
unchanged, and a trace of a storyboard run holds what every node did, with `log_ratio`'s numbers."""

import ast
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import perturb
from test_architecture import PACKAGES, STAGES, modules

import compound
from compound.interpret import Handler, Site, interpret, sites
from compound.interpret.given import Given
from compound.interpret.sample import Sample
from compound.values import as_row

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"InputNode", "SampleNode", "ComputeNode"}


def dispatches_on_kind(loop: ast.For) -> bool:
    """Whether a loop's body branches on its variable's node class (`isinstance(node, ir.SampleNode)`)."""
    if not isinstance(loop.target, ast.Name):
        return False
    for node in ast.walk(loop):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "isinstance"
            and len(node.args) == 2
        ):
            subject, classes = node.args
            names = {getattr(c, "attr", getattr(c, "id", None)) for c in ast.walk(classes)}
            if isinstance(subject, ast.Name) and subject.id == loop.target.id and names & KINDS:
                return True
    return False


def over_system_nodes(loop: ast.For) -> bool:
    """Whether a loop runs over a system's nodes (`system.nodes`, `self.system.nodes`), not a site's."""
    over = loop.iter
    if not isinstance(over, ast.Attribute) or over.attr != "nodes":
        return False
    owner = over.value
    return "system" in (owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", ""))


def walkers() -> list[str]:
    """Every function of the run time (the stages from `compound.values` on) holding a loop over a
    system's nodes that branches on each node's kind."""
    first = next(k for k, stage in enumerate(STAGES) if "compound.values" in stage)
    run_time = set().union(*STAGES[first:])
    found = []
    for name, path in modules(PACKAGES).items():
        if name not in run_time:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for loop in ast.walk(function):
                if isinstance(loop, ast.For) and over_system_nodes(loop) and dispatches_on_kind(loop):
                    found.append(f"{name}.{function.name}")
    return found


def test_exactly_one_function_walks_a_systems_nodes():
    # the walker of the interpreter runs over sites, the others would run over `system.nodes`
    assert walkers() == []
    source = (ROOT / "compound" / "interpret" / "__init__.py").read_text()
    assert "def interpret(" in source and "for site in sites(system)" in source


def test_the_check_finds_a_walker_when_there_is_one():
    loop = ast.parse(
        "for node in system.nodes:\n    if isinstance(node, ir.ComputeNode):\n        values[node.name] = 1\n"
    ).body[0]
    assert isinstance(loop, ast.For) and over_system_nodes(loop) and dispatches_on_kind(loop)


@pytest.fixture
def storyboard(tiny, write_system):
    cmp = write_system(
        f'system storyboard\ncomponent writer = causal_lm("{tiny["lm"]}", lora(r=4))\n'
        f'component painter = diffusion("{tiny["painter"]}", steps=2)\n'
        "input request : text\n"
        'plan : text ~ writer(request, template="Three scenes, {request}:\\n", max_new_tokens=12)\n'
        "scene[3] : text = line(plan, i)\n"
        "image[3] : image ~ painter(scene[i])\n"
        "output image\n"
    )
    system = compound.load(cmp)
    perturb(system.backend("writer").model, seed=1, scale=0.5, only="lora_B")
    perturb(system.backend("painter").model, seed=2, scale=0.05)
    return system


class Count(Handler):
    """Written here, not in the library: counts, per component, the sampled nodes visited and the runs."""

    def __init__(self, inner: Handler | None = None):
        super().__init__(inner)
        self.nodes: Counter[str] = Counter()
        self.values: Counter[str] = Counter()

    def sample(self, site: Site, runs):
        component = site.nodes[0].component
        self.nodes[component] += len(site.nodes)
        self.values[component] += sum(node.name in values for values in runs for node in site.nodes)
        return runs


def test_a_handler_written_in_a_test_plugs_in_without_touching_the_interpreter(storyboard):
    inputs = [{"request": "a disc growing"}, {"request": "a scene getting darker"}]
    plain = storyboard.sample(inputs, n=2, generator=torch.Generator().manual_seed(3))
    system, backends = storyboard.system, storyboard.backends
    rows = [row for row in inputs for _ in range(2)]
    given = Given(system, rows, ["input row"] * len(rows), nodes="inputs")
    counted = Count(Sample(backends, torch.Generator().manual_seed(3), inner=given))
    with torch.no_grad():
        runs = interpret(system, counted, [{} for _ in rows])
    assert counted.nodes == {"writer": 1, "painter": 3}  # one site each; the painter's holds the plate
    assert counted.values == {"writer": 4, "painter": 12}  # every run's value was drawn before it looked
    traced = [as_row(system, values) for values in runs]  # the same draws as the library's own sampling
    assert [r["plan"] for r in traced] == [r["plan"] for r in plain]
    for mine, theirs in zip(traced, plain, strict=True):
        assert [i.tobytes() for i in mine["image"]] == [i.tobytes() for i in theirs["image"]]


def test_sites_follow_the_declarations_in_topological_order(storyboard):
    found = [(s.kind, s.name, len(s.nodes)) for s in sites(storyboard.system)]
    assert found == [
        ("input", "request", 1),
        ("sample", "plan", 1),
        ("compute", "scene", 3),
        ("sample", "image", 3),
    ]


def test_the_trace_of_a_storyboard_run_holds_every_node_and_log_ratios_numbers(storyboard):
    rows = storyboard.sample(
        [{"request": "a disc growing"}, {"request": "a lake as the ice grows"}],
        n=2,
        generator=torch.Generator().manual_seed(0),
    )
    chosen, rejected = [rows[0], rows[2]], [rows[1], rows[3]]  # two draws of each request
    seeds = torch.tensor([[11, 12, 13, 14], [21, 22, 23, 24]])
    with torch.no_grad():
        out = storyboard.log_ratio(chosen, rejected, seeds=seeds)
    interleaved = [chosen[0], rejected[0], chosen[1], rejected[1]]
    traces = storyboard.trace(interleaved, seeds=seeds.repeat_interleave(2, dim=0))
    assert len(traces) == 4
    for j, (row, trace) in enumerate(zip(interleaved, traces, strict=True)):
        k, side = divmod(j, 2)
        assert list(trace) == [
            "request",
            "plan",
            "scene[0]",
            "scene[1]",
            "scene[2]",
            "image[0]",
            "image[1]",
            "image[2]",
        ]
        assert trace["request"].value == row["request"] and trace["request"].kind == "input"
        plan = trace["plan"]
        assert plan.by == "writer" and plan.parents == {"request": row["request"]}
        assert plan.prompt == f"Three scenes, {row['request']}:\n" and plan.value == row["plan"]
        lines = [line.strip() for line in row["plan"].splitlines() if line.strip()]
        for i in range(3):
            scene = trace[f"scene[{i}]"]
            assert scene.by == "line" and scene.parents == {"plan": row["plan"]}
            assert scene.value == (lines[i] if i < len(lines) else "")
            image = trace[f"image[{i}]"]
            assert image.by == "painter" and image.prompt == scene.value
            assert image.value.tobytes() == row["image"][i].tobytes()
        for node in ("plan", "image[0]", "image[1]", "image[2]"):
            assert trace[node].log_ratio == out.per_node[node][side][k].item()  # the same batches: exactly
            assert trace[node].log_ratio == pytest.approx(trace[node].score - trace[node].reference, abs=1e-4)
            assert trace[node].log_ratio != 0.0
        assert trace["scene[0]"].score is None and trace["request"].log_ratio is None
