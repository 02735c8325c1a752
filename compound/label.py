"""`compound label SAMPLES --out prefs.jsonl`: label a system's outputs by hand in a local page.

A sample folder (`compound sample`'s) becomes a list of tasks, in file order:

- `pairs` (the default): two outputs of one input side by side (sides drawn by
  the seed), every node's value shown, images included; the labeller picks the
  left, the right, a tie or skips. A pick is a preference row
  `{"input", "chosen", "rejected"}`;
- `ranked`: every output of one input, clicked best first: a row
  `{"input", "ranked": [...]}` for the Plackett-Luce loss;
- `thumbs`: one output at a time, good or bad: an unpaired row
  `{"input", "output", "label": true|false}`, the feedback KTO learns from.

Every decision is written at once, atomically: OUT.labels.jsonl holds each
decision (the task, the choice, when), OUT the preference rows made from them;
a crash, a closed tab or a killed server loses nothing, and a restart goes on at
the first task without a decision (a task is decided once: a second answer to it,
a double click, is ignored). The page is served on 127.0.0.1 only, and every
request must carry the session's token (in the URL it prints); images are served
from the sample folder and nowhere else.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlparse

from compound import samples as saved
from compound.console import say
from compound.diagnostics import error
from compound.io import read_jsonl, write_jsonl
from compound.run_folder import locked

Mode = Literal["pairs", "ranked", "thumbs"]
MODES: tuple[Mode, ...] = ("pairs", "ranked", "thumbs")
#: What a decision may be, per mode.
CHOICES: dict[Mode, tuple[str, ...]] = {
    "pairs": ("left", "right", "tie", "skip"),
    "ranked": ("ranked", "skip"),
    "thumbs": ("up", "down", "skip"),
}


@dataclass(frozen=True)
class Task:
    """One thing to label: its id and the samples it shows, left to right."""

    id: str
    shown: tuple[saved.Sample, ...]


class Labeller:
    """A labelling session's tasks and decisions, written through on every decision."""

    def __init__(self, folder: str | Path, out: str | Path, mode: Mode = "pairs", seed: int = 0):
        if mode not in MODES:
            raise error("config", f"--mode {mode!r}: use {', '.join(MODES)}")
        self.folder, self.out, self.mode = Path(folder).resolve(), Path(out), mode
        self.log = self.out.with_name(self.out.name + ".labels.jsonl")
        self.samples = saved.read(self.folder)
        self.tasks = _tasks(self.samples, mode, seed)
        if not self.tasks:
            need = "two samples of one input" if mode != "thumbs" else "a sample"
            raise error("config", f"{self.folder} holds no task to label in mode {mode}: it needs {need}")
        self.by_id = {t.id: t for t in self.tasks}
        self.decisions: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        if self.log.is_file():
            self._resume()

    def _resume(self) -> None:
        """The decisions of an earlier session on these samples (a log of other tasks is an error)."""
        for line in read_jsonl(self.log):
            found = line.value
            if (
                line.problem is not None
                or not isinstance(found, dict)
                or found.get("task") not in self.by_id
                or found.get("choice") not in CHOICES[self.mode]
                or not isinstance(found.get("seq"), int)
            ):
                raise error(
                    "config",
                    f"{self.log} line {line.number} is not a decision on a task of {self.folder} in mode "
                    f"{self.mode}: label into another --out",
                )
            self.decisions[found["task"]] = found

    def next(self) -> Task | None:
        """The first task without a decision."""
        return next((t for t in self.tasks if t.id not in self.decisions), None)

    def decide(self, task: str, choice: str, order: Sequence[str] = ()) -> bool:
        """Record a decision (False: the task was decided already, or does not exist)."""
        if choice not in CHOICES[self.mode]:
            raise ValueError(f"choice {choice!r}: use {', '.join(CHOICES[self.mode])}")
        with self.lock:
            if task not in self.by_id or task in self.decisions:
                return False
            seq = 1 + max((int(d["seq"]) for d in self.decisions.values()), default=0)
            decision: dict[str, Any] = {"task": task, "choice": choice, "seq": seq, "time": time.time()}
            if choice == "ranked":
                shown = {s.id for s in self.by_id[task].shown}
                if sorted(order) != sorted(shown):
                    raise ValueError("order: rank every output of the task once")
                decision["order"] = list(order)
            self.decisions[task] = decision
            self._write()
            return True

    def undo(self) -> str | None:
        """Take back the last decision; its task's id (None when there is none)."""
        with self.lock:
            if not self.decisions:
                return None
            last = max(self.decisions.values(), key=lambda d: int(d["seq"]))["task"]
            del self.decisions[last]
            self._write()
            return str(last)

    def rows(self) -> list[dict[str, Any]]:
        """The preference rows the decisions make, in task order."""
        found = []
        for task in self.tasks:
            decision = self.decisions.get(task.id)
            if decision is None:
                continue
            row = _row(task, decision)
            if row is not None:
                found.append(row)
        return found

    def _write(self) -> None:
        ordered = sorted(self.decisions.values(), key=lambda d: int(d["seq"]))
        write_jsonl(self.log, ordered)  # first the decisions, then the rows made from them
        write_jsonl(self.out, self.rows())

    def progress(self) -> dict[str, int]:
        return {"done": len(self.decisions), "total": len(self.tasks), "rows": len(self.rows())}


def _tasks(found: Sequence[saved.Sample], mode: Mode, seed: int) -> list[Task]:
    groups = list(saved.by_input(found).values())
    if mode == "thumbs":
        return [Task(f"thumbs:{s.id}", (s,)) for s in found]
    if mode == "ranked":
        return [Task("ranked:" + "|".join(s.id for s in g), tuple(g)) for g in groups if len(g) >= 2]
    draw = random.Random(seed)
    tasks = []
    for group in groups:
        for k in range(0, len(group) - 1, 2):
            pair = (group[k], group[k + 1])
            if draw.random() < 0.5:  # which side each output shows on: no position to learn
                pair = (pair[1], pair[0])
            tasks.append(Task(f"pairs:{pair[0].id}|{pair[1].id}", pair))
    return tasks


def _row(task: Task, decision: Mapping[str, Any]) -> dict[str, Any] | None:
    """A decision's preference row (None for a tie or a skip)."""
    choice, first = decision["choice"], task.shown[0]
    if choice in ("left", "right"):
        chosen, rejected = task.shown if choice == "left" else task.shown[::-1]
        return {"input": first.input, "chosen": chosen.values, "rejected": rejected.values}
    if choice == "ranked":
        by_id = {s.id: s for s in task.shown}
        return {"input": first.input, "ranked": [by_id[i].values for i in decision["order"]]}
    if choice in ("up", "down"):
        return {"input": first.input, "output": first.values, "label": choice == "up"}
    return None


# ---------------------------------------------------------------- the server


def serve(labeller: Labeller, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A server for the session on 127.0.0.1 (`port` 0: a free one) and its URL, token included; the
    caller runs `serve_forever` (and `shutdown`)."""
    token = secrets.token_urlsafe(16)
    handler = type("Handler", (_Handler,), {"labeller": labeller, "token": token})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    return server, f"http://127.0.0.1:{server.server_address[1]}/?token={token}"


class _Handler(BaseHTTPRequestHandler):
    labeller: Labeller
    token: str

    def log_message(self, format: str, *args: Any) -> None:
        """No log line per request on the console."""

    def _allowed(self) -> dict[str, list[str]] | None:
        query = parse_qs(urlparse(self.path).query)
        if secrets.compare_digest(query.get("token", [""])[0], self.token) or secrets.compare_digest(
            self.headers.get("X-Token", ""), self.token
        ):
            return query
        self._send(HTTPStatus.FORBIDDEN, b"forbidden: open the URL compound label printed", "text/plain")
        return None

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def do_GET(self) -> None:
        query = self._allowed()
        if query is None:
            return
        route = urlparse(self.path).path
        if route == "/":
            page = files("compound").joinpath("label.html").read_text(encoding="utf-8")
            self._send(HTTPStatus.OK, page.replace("__MODE__", self.labeller.mode).encode(), "text/html")
        elif route == "/task":
            self._json(self._task())
        elif route == "/image":
            self._image(query.get("path", [""])[0])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def do_POST(self) -> None:
        if self._allowed() is None:
            return
        route = urlparse(self.path).path
        try:
            size = min(int(self.headers.get("Content-Length", "0")), 1_000_000)
            body = json.loads(self.rfile.read(size) or b"{}")
            if route == "/choice" and isinstance(body, dict):
                order = body.get("order") or []
                self.labeller.decide(str(body.get("task")), str(body.get("choice")), [str(o) for o in order])
            elif route == "/undo":
                self.labeller.undo()
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
        except (ValueError, TypeError) as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
            return
        self._json(self._task())

    def _task(self) -> dict[str, Any]:
        labeller = self.labeller
        task = labeller.next()
        progress = labeller.progress()
        if task is None:
            return {"done": True, **progress}
        return {
            "done": False,
            "task": task.id,
            "input": {k: self._values(v) for k, v in task.shown[0].input.items()},
            "outputs": [
                {"id": s.id, "values": {k: self._values(v) for k, v in s.values.items()}} for s in task.shown
            ],
            **progress,
        }

    def _values(self, value: Any) -> Any:
        """A node's value for the page: text as is, an image as its address on this server."""
        if isinstance(value, list):
            return [self._values(v) for v in value]
        if isinstance(value, str) and value.endswith(".png") and Path(value).is_absolute():
            relative = Path(value).resolve().relative_to(self.labeller.folder).as_posix()
            return {"image": f"/image?path={relative}&token={self.token}"}
        return _shown(value)

    def _image(self, relative: str) -> None:
        path = (self.labeller.folder / relative).resolve()
        if not path.is_relative_to(self.labeller.folder) or path.suffix != ".png" or not path.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"no such image", "text/plain")
            return
        self._send(HTTPStatus.OK, path.read_bytes(), "image/png")


def _shown(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def label(folder: str | Path, out: str | Path, mode: str = "pairs", seed: int = 0, port: int = 0) -> None:
    """Serve the labelling page until interrupted (Ctrl-C), saying its URL; OUT is locked meanwhile (two
    sessions writing one file would lose each other's rows)."""
    labeller = Labeller(folder, out, cast(Mode, mode), seed)
    where = labeller.out.resolve()
    with locked(where.parent, "compound label", name=f".{where.name}.lock"):
        server, url = serve(labeller, port)
        progress = labeller.progress()
        say(
            f"labelling {progress['total']} {mode} tasks of {labeller.folder} ({progress['done']} done) into "
            f"{labeller.out}; open {url}"
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    progress = labeller.progress()
    say(f"{progress['done']} of {progress['total']} tasks decided; {progress['rows']} rows in {labeller.out}")
