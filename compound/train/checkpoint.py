"""A run folder's files: checkpoints written whole or not at all, the final weights, the metrics log.

    RUN/config.json               the run's settings
    RUN/metrics.jsonl             one line of metrics per step
    RUN/checkpoints/step-NNNNNN/  trained components, optimizer, scheduler, state, candidates per process
    RUN/final/                    each trained component's weights (or LoRA adapter) and compound.json

A checkpoint is written to a temporary folder and renamed into place once every
process has written its part, so a crash never leaves half a checkpoint; only
the newest `keep` are kept.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from compound.diagnostics import error
from compound.io import atomic_folder, atomic_write, read_jsonl, write_json
from compound.system import CompiledSystem

RUN_FILE = "compound.json"
STATE = "state.json"


class Checkpointer:
    """Saves and restores a run's state in its folder, the main process writing what all share."""

    def __init__(self, out: Path, keep: int, accelerator: Any):
        self.out, self.keep, self.acc = out, keep, accelerator
        self.root = out / "checkpoints"

    def latest(self) -> Path | None:
        found = sorted(self.root.glob("step-*"))
        return found[-1] if found else None

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
            model.save_pretrained(tmp / "components", only=trained)
            for name, part in training.items():
                torch.save(part.state_dict(), tmp / f"{name}.pt")
            write_json(tmp / STATE, dict(state))
        acc.wait_for_everyone()
        if not done:
            write_json(tmp / f"candidates-{acc.process_index}.json", dict(candidates))
        acc.wait_for_everyone()
        if acc.is_main_process and not done:
            tmp.rename(final)
            for old in sorted(self.root.glob("step-*"))[: -self.keep]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def restore(
        self, model: CompiledSystem, trained: Sequence[str], training: Mapping[str, Any], data: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Load the latest checkpoint into the model and `training`; its state and this process's
        candidates. `data` is the fingerprint of the run's data, which must be the checkpoint's."""
        latest = self.latest()
        if latest is None:
            raise error("config", f"--resume: no checkpoint in {self.root}")
        state = json.loads((latest / STATE).read_text())
        if state["data"] != data:
            raise error("config", f"--resume: {latest} was trained on other data")
        for name in trained:
            model.backend(name).load_weights(latest / "components" / name)
        for name, part in training.items():
            part.load_state_dict(torch.load(latest / f"{name}.pt", weights_only=True))
        stored = latest / f"candidates-{self.acc.process_index}.json"
        candidates = json.loads(stored.read_text()) if stored.exists() else {}
        return state, candidates

    def save_final(self, model: CompiledSystem, trained: Sequence[str], meta: Mapping[str, Any]) -> Path:
        """RUN/final: each trained component's weights (or adapter), and what to load them into."""
        final = self.out / "final"
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            with atomic_folder(final) as tmp:
                model.save_pretrained(tmp, only=trained)
                write_json(tmp / RUN_FILE, dict(meta))
        self.acc.wait_for_everyone()
        return final


class MetricsLog:
    """RUN/metrics.jsonl: one JSON line per step."""

    def __init__(self, out: Path):
        self.path = out / "metrics.jsonl"

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
            atomic_write(self.path, "".join(json.dumps(row) + "\n" for row in kept))
