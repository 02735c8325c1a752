"""Progress of long work: a rich bar on a terminal, a log line every few percent otherwise, or nothing."""

from __future__ import annotations

import sys
from typing import Literal

Mode = Literal["bar", "lines", "silent"]


class Progress:
    """`with Progress("training", total, done, mode) as p: p.update(step, status)`."""

    def __init__(self, label: str, total: int, done: int, mode: Mode):
        self.label, self.total, self.mode = label, total, mode
        self.every = max(1, total // 20)
        if mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
            )
            self.task = self.bar.add_task(label, total=total, completed=done, status="")

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            self.bar.start()
        return self

    def update(self, done: int, status: str = "") -> None:
        if self.mode == "bar":
            self.bar.update(self.task, completed=done, status=status)
        elif self.mode == "lines" and (done % self.every == 0 or done == self.total):
            print(f"{self.label} {done}/{self.total}  {status}".rstrip(), file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.mode == "bar":
            self.bar.stop()
