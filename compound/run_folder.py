"""Run folders as data: where `compound train` and `compound align` put each file, and each read back
validated, in one place (the writers are `compound.train.checkpoint` and `compound.align`).

    a train run     config.json            the run's settings
                    metrics.jsonl          one line of metrics per step
                    checkpoints/step-N/    what --resume restores
                    final/                 the trained weights, compound.json (what they load into), checksums

    an align run    align.json             the run's settings
                    round-0/eval/          the base system on the held-out inputs
                    round-K/               samples/, pairs.jsonl, train/ (a train run), eval/, export/,
                                           system.cmp (with `reference="round"`), round.json (its numbers)
                    summary.jsonl, summary.png, credit/

Commands read other stages' files through `TrainRun`, `AlignRun` and `Round`, never by globbing, so
a folder a user added (`round-2.bak`) or a file cut short is named, not misread.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compound.diagnostics import error
from compound.io import damaged, read_jsonl

#: final/compound.json: the system the weights load into, the components trained, their LoRA options.
RUN_FILE = "compound.json"
#: The marker of a finished export (`export/done`).
EXPORTED = "done"
#: The lock a run holds on its folder while it runs (`RUN/.lock`, with the holder's process id).
LOCK = ".lock"


@contextmanager
def locked(folder: Path, command: str, name: str = LOCK) -> Iterator[None]:
    """Hold `folder`'s lock (`folder/name`) for the block: a second run on the same folder, at once, is
    refused (it would mix its checkpoints and weights with the first's). The lock is the kernel's
    (`flock`), so a run killed with SIGKILL holds it no longer."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "?"
            raise error(
                "config",
                f"{folder} is in use by another run (process {holder}); wait for it, or choose another --out",
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()} {command}\n".encode(), 0)
        yield
    finally:
        os.close(handle)


def read_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that holds an object; a clear error naming the file when it is missing or not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error("config", f"cannot read {what} {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error("config", f"{what} {path} is not valid JSON ({e}); the run folder is damaged") from None
    if not isinstance(value, dict):
        raise error("config", f"{what} {path} holds {type(value).__name__}, not an object")
    return value


@dataclass(frozen=True)
class FinalWeights:
    """What final/compound.json says: the `.cmp` file, the components trained and their LoRA options."""

    system: str
    trained: list[str]
    lora: dict[str, dict[str, Any]]
    step: int


@dataclass(frozen=True)
class TrainRun:
    """A `compound train` run folder."""

    path: Path

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def started(self) -> bool:
        """Whether a run was started in this folder (its settings were written)."""
        return (self.path / "config.json").is_file()

    def checkpoint_folders(self) -> list[Path]:
        """Every checkpoint (checkpoints/step-N), oldest first."""
        return sorted(self.checkpoints.glob("step-*")) if self.checkpoints.is_dir() else []

    def finished(self) -> bool:
        """Whether the run wrote its final weights."""
        return (self.final / RUN_FILE).is_file()

    def weights(self) -> FinalWeights:
        """final/compound.json, checked, after every file of final/ is checked against its checksum."""
        problem = damaged(self.final)
        if problem is not None:
            raise error(
                "config",
                f"the final weights in {self.final} are damaged: {problem}; train again, or restore the "
                "folder from a copy",
            )
        found = read_object(self.final / RUN_FILE, "the run file")
        system, trained, lora, step = (found.get(k) for k in ("system", "trained", "lora", "step"))
        if not (
            isinstance(system, str)
            and isinstance(trained, list)
            and all(isinstance(t, str) for t in trained)
            and isinstance(lora, dict)
            and all(isinstance(v, dict) for v in lora.values())
            and isinstance(step, int)
        ):
            raise error(
                "config",
                f"the run file {self.final / RUN_FILE} lacks system, trained, lora or step; "
                "the run folder is damaged",
            )
        return FinalWeights(system, trained, lora, step)

    def settings(self) -> dict[str, Any]:
        """config.json (empty when the run has none)."""
        path = self.path / "config.json"
        return read_object(path, "the run's settings") if path.is_file() else {}

    def metrics(self) -> list[dict[str, float]]:
        """metrics.jsonl, every line an object of numbers with its step and loss."""
        if not self.metrics_file.is_file():
            raise error("config", f"no metrics.jsonl in {self.path}: is it a training run?")
        rows = []
        for line in read_jsonl(self.metrics_file):
            where = f"{self.metrics_file} line {line.number}"
            if line.problem is not None:
                raise error("config", f"{where} {line.problem}")
            value = line.value
            if not isinstance(value, dict):
                raise error("config", f"{where} is not an object of metrics")
            wrong = [k for k, v in value.items() if isinstance(v, bool) or not isinstance(v, int | float)]
            if wrong or not {"step", "loss"} <= set(value):
                problem = f"'{wrong[0]}' is not a number" if wrong else "lacks step or loss"
                raise error("config", f"{where}: {problem}")
            rows.append(value)
        if not rows:
            raise error("config", f"{self.metrics_file} holds no metrics: the run logged no step")
        return rows


@dataclass(frozen=True)
class Round:
    """Round K of an align run (round 0: the base system's held-out evaluation only)."""

    path: Path
    number: int

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def pairs(self) -> Path:
        return self.path / "pairs.jsonl"

    @property
    def train(self) -> TrainRun:
        return TrainRun(self.path / "train")

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def system(self) -> Path:
        """The round's `.cmp` file (`reference="round"`: the last rounds' exports as its base)."""
        return self.path / "system.cmp"

    @property
    def result_file(self) -> Path:
        return self.path / "round.json"

    def finished(self) -> bool:
        return self.result_file.is_file()

    def result(self) -> dict[str, Any]:
        """round.json: the round's numbers."""
        return read_object(self.result_file, "the round's results")

    def exported(self) -> bool:
        return (self.export / EXPORTED).is_file()

    def exports(self) -> dict[str, Path]:
        """Each component's exported folder (a finished export only)."""
        if not self.exported():
            return {}
        return {p.name: p for p in sorted(self.export.iterdir()) if p.is_dir()}


@dataclass(frozen=True)
class AlignRun:
    """A `compound align` run folder."""

    path: Path

    @property
    def settings_file(self) -> Path:
        return self.path / "align.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.jsonl"

    @property
    def credit(self) -> Path:
        return self.path / "credit"

    def exists(self) -> bool:
        return self.settings_file.is_file()

    def settings(self) -> dict[str, Any]:
        """align.json."""
        return read_object(self.settings_file, "the run's settings")

    def round(self, k: int) -> Round:
        return Round(self.path / f"round-{k}", k)

    def rounds(self) -> list[Round]:
        """Rounds 1, 2, ... that exist, in order (a folder such as `round-2.bak` is not a round)."""
        found = []
        for folder in self.path.iterdir() if self.path.is_dir() else []:
            number = folder.name.removeprefix("round-")
            if folder.is_dir() and number != folder.name and number.isdigit() and number == str(int(number)):
                found.append(Round(folder, int(number)))
        return sorted((r for r in found if r.number > 0), key=lambda r: r.number)

    def trained(self) -> list[Round]:
        """The rounds whose training finished."""
        return [r for r in self.rounds() if r.train.finished()]


@dataclass(frozen=True)
class OptimizeRun:
    """A `compound optimize` run folder (its layout: `compound.optimize`)."""

    path: Path

    @property
    def settings_file(self) -> Path:
        return self.path / "optimize.json"

    @property
    def evaluations(self) -> Path:
        return self.path / "evaluations.jsonl"

    @property
    def reflections(self) -> Path:
        return self.path / "reflections.jsonl"

    @property
    def candidates(self) -> Path:
        return self.path / "candidates.jsonl"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    def exists(self) -> bool:
        return self.settings_file.is_file()


def latest(rounds: list[Round]) -> dict[str, Path]:
    """Each component's latest export over `rounds` (in order)."""
    found: dict[str, Path] = {}
    for r in rounds:
        found.update(r.exports())
    return found
