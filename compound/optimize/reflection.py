"""The reflection LM of GEPA: text in, text out, from a component of the system, a causal-LM folder
loaded through compound's own backend, or any Python callable; every call kept, and replayed on resume.

A 135M model reflects poorly (it rarely writes a better instruction than it is
shown); pass a stronger one: a folder (`--reflection models/qwen2.5-7b-instruct`,
bf16 on a GPU) or, from Python, any `str -> str` callable, such as a client of
a served model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from compound import ir
from compound.backends import backend_class
from compound.diagnostics import error
from compound.io import append_jsonl, mend_jsonl, read_jsonl
from compound.system import CompiledSystem

#: A reflection LM: the prompt GEPA writes, in; the model's answer, out.
ReflectionLM = Callable[[str], str]


def reflection_lm(
    spec: str, system: CompiledSystem, max_new_tokens: int = 256, trust_remote_code: bool = False
) -> ReflectionLM:
    """A component of `system` by name, a causal-LM folder, or a `.gguf` file (its folder's model, as
    `gguf_file=` loads it); greedy decoding, `max_new_tokens` at most, the prompt as a user turn of the
    chat template when the tokenizer has one."""
    if spec in system.components:
        backend = system.backend(spec)
        if backend.kind != "causal_lm":
            raise error("config", f"--reflection {spec}: a {backend.kind} component cannot write text")
    else:
        path = Path(spec)
        if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
            known = ", ".join(system.components)
            raise error(
                "config",
                f"--reflection {spec}: no component of that name ({known}), no model folder, no .gguf file",
            )
        folder = path if path.is_dir() else path.parent
        options: dict[str, ir.Value] = {} if path.is_dir() else {"gguf_file": path.name}
        span = ir.Span(file=str(path), line=1, column=1, end_line=1, end_column=1)
        component = ir.Component(
            name="reflection", kind="causal_lm", path=str(folder.resolve()), options=options, span=span
        )
        backend = backend_class("causal_lm").load(
            component, folder.parent, trust_remote_code=trust_remote_code
        )
        if getattr(getattr(backend, "tokenizer", None), "chat_template", None):  # the same weights, chatting
            chat = component.model_copy(update={"options": {**options, "chat": True}})
            backend = type(backend)(chat, backend.model, backend.tokenizer)

    def reflect(prompt: str) -> str:
        with torch.no_grad():
            found = backend.sample(
                [prompt], torch.Generator().manual_seed(0), do_sample=False, max_new_tokens=max_new_tokens
            )
        return str(found[0])

    return reflect


class Replayed:
    """A reflection LM whose calls are kept in `log` (one JSON line each, in order); on resume the
    first calls are read back when their prompts are the ones asked again (the search is
    deterministic, so they are), and only later ones run the model."""

    def __init__(self, lm: ReflectionLM, log: Path):
        self.lm, self.log = lm, log
        self.kept: list[tuple[str, str]] = []
        mend_jsonl(log)
        if log.is_file():
            for line in read_jsonl(log):
                if line.problem is None and isinstance(line.value, dict):
                    self.kept.append((str(line.value.get("prompt")), str(line.value.get("response"))))
        self.calls = 0
        self.live = 0

    def __call__(self, prompt: str) -> str:
        k, self.calls = self.calls, self.calls + 1
        if k < len(self.kept) and self.kept[k][0] == prompt:
            return self.kept[k][1]
        if k < len(self.kept):
            raise error(
                "config",
                f"--resume: reflection {k + 1} of {self.log} was asked another prompt than the run asks now; "
                "the run folder is of another run",
            )
        response = self.lm(prompt)
        self.live += 1
        append_jsonl(self.log, {"prompt": prompt, "response": response})
        return response
