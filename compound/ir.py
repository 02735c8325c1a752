"""The typed intermediate representation of a checked compound system.

Everything after the front end (factorize, scoring, the backends, training)
reads these models only; they hold data and import nothing of the project.
Nodes come in three kinds, each its own class: `InputNode` (observed),
`SampleNode` (drawn from a component: one factor) and `ComputeNode` (a built-in
function of its arguments). They are frozen pydantic models, so a checked system is a value: it can be
hashed into fingerprints, dumped as JSON (`compound compile --emit ir`) and
loaded back unchanged. Plates are expanded: `image[3]` becomes the nodes
`image[0]`, `image[1]`, `image[2]`, each with its own concrete parents.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field

Type = Literal["text", "image"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Span(Frozen):
    """Where a construct stands in its source file (1-based lines and columns)."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class Call(Frozen):
    """A nested call in an option value, such as `lora(r=8)`."""

    name: str
    args: tuple[Value, ...] = ()
    options: dict[str, Value] = {}


Value = bool | int | float | str | Call
Call.model_rebuild()


class Const(Frozen):
    name: str
    value: str
    span: Span


class ParamUse(Frozen):
    """Where a param's text goes: an option of a component, or of a declaration (every plate member)."""

    kind: Literal["component", "node"]
    owner: str
    option: str


class Param(Frozen):
    """A text parameter (`param NAME = "..."`): text an optimizer may change, its value substituted at
    each of its `uses` (the checked system holds its current value there)."""

    name: str
    value: str
    span: Span
    uses: tuple[ParamUse, ...] = ()


class Demo(Frozen):
    """A demonstration a node sees before its own prompt: an earlier run's prompt and output of it."""

    prompt: str
    output: str


class Component(Frozen):
    """A model, declared once and shared by every node that calls it."""

    name: str
    kind: str
    path: str
    options: dict[str, Value] = {}
    span: Span


class Plate(Frozen):
    """A declaration `name[size]` and the nodes it expanded into."""

    name: str
    size: int
    nodes: tuple[str, ...]
    span: Span


class Arg(Frozen):
    """One positional argument of a node's call, after plate expansion.

    A reference to nodes carries `name` (the declaration it refers to, which is
    also its name inside a template) and `nodes`; `whole` marks a plate passed
    whole, whose value is a list. A literal (a plate index, a string) carries
    `value` instead.
    """

    name: str | None = None
    nodes: tuple[str, ...] = ()
    whole: bool = False
    value: bool | int | float | str | None = None


class _Named(Frozen):
    """What every node has: its expanded name, its declaration's name and plate index, type, span."""

    name: str
    base: str
    index: int | None = None
    type: Type
    span: Span


class InputNode(_Named):
    """An observed value of the system (`input request : text`): no parents, no factor."""

    kind: Literal["input"] = "input"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def parents(self) -> tuple[str, ...]:
        """None: an input is observed."""
        return ()


class _Call(_Named):
    """A node computed from its arguments: its positional arguments and its call's options."""

    args: tuple[Arg, ...] = ()
    options: dict[str, Value] = {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def parents(self) -> tuple[str, ...]:
        """The nodes this one reads, in argument order, each once."""
        return tuple(dict.fromkeys(n for arg in self.args for n in arg.nodes))


class SampleNode(_Call):
    """A node sampled from a component (`plan : text ~ writer(request)`): one factor of the likelihood.
    `demos`: the demonstrations an optimizer gave it (at most its `demos=` option), shown before its
    prompt."""

    kind: Literal["sample"] = "sample"
    component: str
    demos: tuple[Demo, ...] = ()


class ComputeNode(_Call):
    """A node computed by a built-in function (`scene[3] : text = line(plan, i)`): deterministic."""

    kind: Literal["compute"] = "compute"
    function: str


Node = Annotated[InputNode | SampleNode | ComputeNode, Field(discriminator="kind")]


class Factor(Frozen):
    """One term `log p_component(node | parents)` of the system's log-likelihood."""

    node: str
    component: str
    parents: tuple[str, ...]
    weight: float = 1.0
    #: The factor's own DPO beta (its node's `beta=`, else its component's), None: the run's.
    beta: float | None = None
    #: The params whose text the factor's conditioning reads (its node's, its component's, or a computed
    #: node's on the way to it).
    params: tuple[str, ...] = ()


class System(Frozen):
    """A checked system: nodes in topological order, and its factorization."""

    name: str
    file: str
    consts: tuple[Const, ...] = ()
    params: tuple[Param, ...] = ()
    components: tuple[Component, ...] = ()
    plates: tuple[Plate, ...] = ()
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    factors: tuple[Factor, ...] = ()

    _index: tuple[tuple[Node, ...], dict[str, Node]] | None = PrivateAttr(default=None)

    def component(self, name: str) -> Component:
        """The component called `name`; KeyError if none."""
        found = next((c for c in self.components if c.name == name), None)
        if found is None:
            raise KeyError(name)
        return found

    def node(self, name: str) -> Node:
        """The node called `name` (an expanded name such as `image[0]`); KeyError if none."""
        if self._index is None or self._index[0] is not self.nodes:
            self._index = (self.nodes, {n.name: n for n in self.nodes})
        return self._index[1][name]
