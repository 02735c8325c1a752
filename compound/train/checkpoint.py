"""A run folder's files: checkpoints written whole or not at all, the final weights, the metrics log.

    RUN/config.json               the run's settings
    RUN/metrics.jsonl             one line of metrics per step
    RUN/checkpoints/step-NNNNNN/  trained components, optimizer, scheduler, state, candidates per process
    RUN/final/                    each trained component's weights (or LoRA adapter), compound.json, text.json

A checkpoint is written to a temporary folder and renamed into place once every
process has written its part, so a crash never leaves half a checkpoint; only
the newest `keep` are kept.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from compound.diagnostics import error
from compound.io import atomic_folder, damaged, read_jsonl, write_checksums, write_json, write_jsonl
from compound.run_folder import RUN_FILE, TrainRun
from compound.system import CompiledSystem
from compound.text import TEXT_FILE, room
from compound.text import write as write_text

STATE = "state.json"


class Checkpointer:
    """Saves and restores a run's state in its folder, the main process writing what all share.

    Each checkpoint carries a checksum of every file and whether its weights were finite: `--resume`
    takes the newest checkpoint that is intact, saying which newer ones it passed over and why, and
    rotation never deletes the newest good one.
    """

    def __init__(self, out: Path, keep: int, accelerator: Any):
        self.out, self.keep, self.acc = out, keep, accelerator
        self.run = TrainRun(out)
        self.root = self.run.checkpoints

    def checkpoints(self) -> list[Path]:
        """Every checkpoint folder, oldest first."""
        return self.run.checkpoint_folders()

    def problem(self, checkpoint: Path) -> str | None:
        """Why a checkpoint cannot be resumed from (damaged, or its weights not finite); None if it can."""
        damage = damaged(checkpoint)
        if damage is not None:
            return damage
        try:
            state = json.loads((checkpoint / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"its {STATE} is unreadable"
        if not isinstance(state, dict) or not {"step", "skipped", "bad_in_a_row", "data"} <= set(state):
            return f"its {STATE} lacks the run's state"
        if not state.get("finite", True):
            return "its weights are not finite"
        return None

    def latest_good(self) -> Path | None:
        """The newest checkpoint that is intact and finite."""
        return next((c for c in reversed(self.checkpoints()) if self.problem(c) is None), None)

    def save(
        self,
        step: int,
        model: CompiledSystem,
        trained: Sequence[str],
        training: Mapping[str, Any],
        state: Mapping[str, Any],
        candidates: Mapping[str, Any],
    ) -> Path:
        """checkpoints/step-N: the trained components, `training` (name -> object with a `state_dict`:
        the optimizer and scheduler), `state` (JSON), and each process's SysDPO-Sampling `candidates`."""
        acc = self.acc
        final = self.root / f"step-{step:06d}"
        tmp = self.root / f".step-{step:06d}.tmp"
        acc.wait_for_everyone()
        done = final.exists()
        if acc.is_main_process and not done:
            shutil.rmtree(tmp, ignore_errors=True)
            with self._writing(final.name, tmp):
                model.save_pretrained(tmp / "components", only=trained)
                for name, part in training.items():
                    torch.save(part.state_dict(), tmp / f"{name}.pt")
                finite = all(
                    bool(torch.isfinite(t).all())
                    for name in trained
                    for t in model.backend(name).parameters()
                    if t.requires_grad
                )
                write_json(tmp / STATE, {**state, "finite": finite})
        acc.wait_for_everyone()
        if not done:
            with self._writing(final.name, tmp):
                write_json(tmp / f"candidates-{acc.process_index}.json", dict(candidates))
        acc.wait_for_everyone()
        if acc.is_main_process and not done:
            with self._writing(final.name, tmp):
                write_checksums(tmp)
                tmp.rename(final)
            self._rotate()
        acc.wait_for_everyone()
        return final

    @contextmanager
    def _writing(self, what: str, tmp: Path | None) -> Iterator[None]:
        """Writing part of the run folder: a full disk or a failed write (OSError, and the RuntimeError
        torch.save and safetensors raise for one) becomes an error that says what is intact, with the
        half-written folder removed."""
        try:
            yield
        except (OSError, RuntimeError, SafetensorError) as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0] or type(e).__name__
            good = self.latest_good()
            raise error(
                "config",
                f"cannot write {what} in {self.out}: {reason} (is the disk full?); the run is intact up to "
                + (
                    f"its checkpoint {good.name}: free space and --resume"
                    if good
                    else "its start: free space and run it again"
                ),
            ) from None

    def _rotate(self) -> None:
        """Keep the newest `keep` checkpoints, and the newest good one whatever its age."""
        good = self.latest_good()
        for old in self.checkpoints()[: -self.keep]:
            if old != good:
                shutil.rmtree(old)

    def restore(
        self, model: CompiledSystem, trained: Sequence[str], training: Mapping[str, Any], data: str
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """Load the newest intact checkpoint into the model and `training`: its state, this process's
        candidates, and what was passed over (newer checkpoints that are damaged, and why). `data` is
        the fingerprint of the run's data, which must be the checkpoint's."""
        passed = []
        for checkpoint in reversed(self.checkpoints()):
            problem = self.problem(checkpoint)
            if problem is None:
                break
            passed.append(f"{checkpoint.name}: {problem}")
        else:
            found = f"; none is intact ({'; '.join(passed)})" if passed else ""
            raise error("config", f"--resume: no checkpoint to resume from in {self.root}{found}")
        state = json.loads((checkpoint / STATE).read_text())
        if state["data"] != data:
            raise error("config", f"--resume: {checkpoint} was trained on other data")
        for name in trained:
            model.backend(name).load_weights(checkpoint / "components" / name)
        for name, part in training.items():
            part.load_state_dict(torch.load(checkpoint / f"{name}.pt", weights_only=True))
        stored = checkpoint / f"candidates-{self.acc.process_index}.json"
        candidates = json.loads(stored.read_text()) if stored.exists() else {}
        return state, candidates, passed

    def save_final(self, model: CompiledSystem, trained: Sequence[str], meta: Mapping[str, Any]) -> Path:
        """RUN/final: each trained component's weights (or adapter), what to load them into, checksums."""
        final = self.run.final
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            with self._writing("the final weights", None), atomic_folder(final) as tmp:
                model.save_pretrained(tmp, only=trained)
                write_json(tmp / RUN_FILE, dict(meta))
                if model.system.params or room(model.system):  # the text the weights were trained with
                    write_text(tmp / TEXT_FILE, model.text)
                write_checksums(tmp)
        self.acc.wait_for_everyone()
        return final


class MetricsLog:
    """RUN/metrics.jsonl: one JSON line per step."""

    def __init__(self, out: Path):
        self.path = TrainRun(out).metrics_file

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def append(self, metrics: Mapping[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(metrics)) + "\n")

    def truncate(self, step: int) -> None:
        """Drop lines past `step` (written after the checkpoint a resumed run starts from), and a last
        line cut short by a crash."""
        if self.path.exists():
            kept = [
                line.value
                for line in read_jsonl(self.path)
                if isinstance(line.value, dict) and line.value.get("step", step + 1) <= step
            ]
            write_jsonl(self.path, kept)
