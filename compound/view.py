"""`compound view RUN`: one static HTML page of a run, to read in a browser from disk (no server).

For a `compound align` run: the rounds' numbers and the held-out curve, the
credit report when `compound credit` ran, and per round (linked to the rounds
before and after it) the training curves, every input's samples with their
values (text and images) and scores, the pairs side by side, and the held-out
samples. For a `compound train` run: its curves, per-node margins and its
preference pairs. Images load lazily (`loading="lazy"`) and each input's
samples sit in a fold of their own, so a run of thousands of samples opens at
once. For a `compound optimize` run, and for each text step of an align run:
every candidate text tried with its validation score and its parents, the
chosen text in full (params and demonstrations), and the reflection LM's
calls. Every value from a run folder is escaped: nothing in one runs.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compound import samples as saved
from compound.diagnostics import error
from compound.io import atomic_write, read_jsonl
from compound.run_folder import AlignRun, OptimizeRun, Round, TrainRun, read_object

#: Pairs of a train run's data shown (the rest are counted).
PAIRS_SHOWN = 200

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:.8em} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px;max-width:320px}
.card.best{border-color:#2a7} .score{font-weight:600;color:#124}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px;margin:6px 0;
  border-top:1px dashed #ccc;padding-top:6px}
.chosen{background:#f3fbf5} .rejected{background:#fdf4f4}
pre{white-space:pre-wrap;margin:2px 0;font-size:.85em}
img{image-rendering:pixelated;margin:1px;vertical-align:top}
.value b{font-size:.8em;color:#555} details{margin:4px 0} summary{cursor:pointer}
svg{background:#fafafa;border:1px solid #eee;margin:4px} .candidates td{white-space:pre-wrap}
"""


def view(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the page of the run at `run` (by default RUN/view.html) and return its path."""
    run = Path(run)
    page = Path(out) if out is not None else run / "view.html"
    aligned, trained, optimized = AlignRun(run), TrainRun(run), OptimizeRun(run)
    if aligned.exists():
        body = _align(aligned, page.parent)
    elif optimized.exists():
        body = _optimize(optimized)
    elif trained.started():
        body = _train(trained, page.parent)
    else:
        raise error("config", f"{run} is not a `compound train`, `align` or `optimize` run folder")
    title = f"compound run {run.name}"
    document = (
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style><body><h1>{_e(title)}</h1>{body}</body></html>\n"
    )
    return atomic_write(page, document)


# ---------------------------------------------------------------- an align run


def _align(run: AlignRun, here: Path) -> str:
    settings = run.settings()
    rounds = [r for r in run.rounds() if r.finished() or r.samples.is_dir()]
    parts = [
        f"<p>Online SysDPO of <code>{_e(settings.get('system', '?'))}</code>: "
        f"{_e(settings.get('rounds', '?'))} rounds, {_e(settings.get('samples', '?'))} samples per input, "
        f"scorer <code>{_e(settings.get('scorer', '?'))}</code>, "
        f"reference {_e(settings.get('reference', '?'))}.</p>",
        "<nav id='rounds'>Rounds: "
        + "".join(f"<a href='#round-{r.number}'>round {r.number}</a>" for r in rounds)
        + ("<a href='#credit'>credit</a>" if (run.credit / "credit.json").is_file() else "")
        + "</nav>",
    ]
    steps = _text_steps(run)
    if steps:  # text steps between the rounds: the summary has a line per step, in the schedule's order
        parts.append(
            "<nav>Text steps: " + "".join(f"<a href='#{s.path.name}'>{s.path.name}</a>" for s in steps)
        )
        parts.append("</nav>")
    results = [r.value for r in read_jsonl(run.summary) if isinstance(r.value, dict)] if steps else []
    results = results or [r.result() for r in rounds if r.finished()]
    if results:
        keys = list(dict.fromkeys(k for found in results for k in found))
        parts.append(
            "<h2 id='summary'>Rounds</h2>" + _table(keys, [[r.get(k) for k in keys] for r in results])
        )
        by = "step" if steps else "round"
        held = [(r[by], r["eval_mean_score"]) for r in results if "eval_mean_score" in r and by in r]
        wins = [(r[by], r["win_rate"]) for r in results if "win_rate" in r and by in r]
        if held:
            parts.append(_chart(f"held out, by {by}", {"mean score": held, "win rate vs round 0": wins}))
    if (run.credit / "credit.json").is_file():
        parts.append("<h2 id='credit'>Credit</h2>" + _credit(run.credit / "credit.json"))
    parts += [_optimize(s, s.path.name) for s in steps]
    for k, current in enumerate(rounds):
        parts.append(
            _round(
                current, rounds[k - 1] if k else None, rounds[k + 1] if k + 1 < len(rounds) else None, here
            )
        )
    return "".join(parts)


def _round(current: Round, before: Round | None, after: Round | None, here: Path) -> str:
    links = (f"<a href='#round-{before.number}'>&larr; round {before.number}</a>" if before else "") + (
        f"<a href='#round-{after.number}'>round {after.number} &rarr;</a>" if after else ""
    )
    parts = [f"<section class='round' id='round-{current.number}'><h2>Round {current.number}</h2>"]
    parts.append(f"<nav>{links}<a href='#rounds'>all rounds</a></nav>")
    if current.finished():
        found = current.result()
        parts.append(_table(list(found), [list(found.values())]))
    if current.train.metrics_file.is_file():
        parts.append("<h3>Training</h3>" + _curves(current.train))
    found_samples = saved.read(current.samples) if (current.samples / "samples.jsonl").is_file() else []
    if found_samples:
        parts.append(f"<h3>Samples</h3>{_grouped(found_samples, here)}")
    if current.pairs.is_file():
        parts.append(f"<h3>Pairs</h3>{_pairs(current.pairs, found_samples, here)}")
    if (current.eval / "samples.jsonl").is_file():
        parts.append(f"<h3>Held-out samples</h3>{_grouped(saved.read(current.eval), here, fold=False)}")
    parts.append("</section>")
    return "".join(parts)


def _credit(path: Path) -> str:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise error("config", f"{path} is not the credit table compound credit writes")
    shown = [[r.get("system"), r.get("mean_score"), r.get("win_rate")] for r in rows]
    return _table(["system", "held-out mean score", "win rate against the base"], shown, css="credit")


def _text_steps(run: AlignRun) -> list[OptimizeRun]:
    found = [OptimizeRun(p) for p in run.path.glob("text-*") if p.name[5:].isdigit()]
    return sorted((s for s in found if s.exists()), key=lambda s: int(s.path.name[5:]))


# ---------------------------------------------------------------- an optimize run (or a text step)


def _optimize(run: OptimizeRun, anchor: str = "optimize") -> str:
    settings = read_object(run.settings_file, "the run's settings")
    parts = [
        f"<section id='{_e(anchor)}'><h2>{_e('Text, ' + anchor if anchor != 'optimize' else 'Text')}</h2>",
        f"<p>{_e(settings.get('optimizer'))} on <code>{_e(settings.get('system'))}</code>: budget "
        f"{_e(settings.get('budget'))}, scorer <code>{_e(settings.get('scorer'))}</code>, validated on "
        f"{_e(settings.get('eval') or 'the training inputs')}.</p>",
    ]
    if run.summary.is_file():
        found = read_object(run.summary, "the run's summary")
        parts.append(_table(list(found), [list(found.values())]))
    if run.candidates.is_file():
        rows = []
        for line in read_jsonl(run.candidates):
            c = line.value if isinstance(line.value, dict) else {}
            text = c.get("text", {}) if isinstance(c.get("text"), dict) else {}
            params = "\n".join(f"{k}: {v}" for k, v in dict(text.get("params", {})).items())
            demos = ", ".join(f"{k}: {len(v)}" for k, v in dict(text.get("demos", {})).items())
            rows.append([c.get("id"), c.get("score"), c.get("parents", ""), params, demos])
        keys = ["id", "validation score", "parents", "params", "demonstrations"]
        parts.append("<h3>Candidates</h3>" + _table(keys, rows, css="candidates"))
    elif run.evaluations.is_file():
        parts.append(f"<p>Searching: {len(read_jsonl(run.evaluations))} batches of rollouts so far.</p>")
    chosen = run.final / "text.json"
    if chosen.is_file():
        text = read_object(chosen, "the chosen text")
        shown = [f"<b>{_e(k)}</b><pre>{_e(v)}</pre>" for k, v in dict(text.get("params", {})).items()]
        for node, demos in dict(text.get("demos", {})).items():
            for k, d in enumerate(demos if isinstance(demos, list) else [], 1):
                d = d if isinstance(d, dict) else {}
                shown.append(
                    f"<b>{_e(node)}, demonstration {k}</b><pre>{_e(d.get('prompt'))}</pre>"
                    f"<pre>&rarr; {_e(d.get('output'))}</pre>"
                )
        parts.append("<h3>Chosen text</h3>" + ("".join(shown) or "<p>the seed text, unchanged</p>"))
    if run.reflections.is_file():
        calls = [line.value for line in read_jsonl(run.reflections) if isinstance(line.value, dict)]
        folds = "".join(
            f"<details><summary>reflection {k}: {_e(_short(str(c.get('response')), 80))}</summary>"
            f"<pre>{_e(c.get('prompt'))}</pre><b>answer</b><pre>{_e(c.get('response'))}</pre></details>"
            for k, c in enumerate(calls, 1)
        )
        parts.append(f"<h3>Reflections ({len(calls)})</h3>{folds}")
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------- a train run


def _train(run: TrainRun, here: Path) -> str:
    settings = run.settings()
    parts = [
        f"<p>SysDPO of <code>{_e(settings.get('system', '?'))}</code> on "
        f"<code>{_e(settings.get('data', '?'))}</code>: loss {_e(settings.get('loss_type', '?'))}, "
        f"beta {_e(settings.get('beta', '?'))}."
        + (" Finished." if run.finished() else " Not finished.")
        + "</p>",
        "<h2>Training</h2>" + _curves(run),
    ]
    data = Path(str(settings.get("data", "")))
    if data.suffix == ".jsonl" and data.is_file():
        lines = [line for line in read_jsonl(data) if isinstance(line.value, dict)]
        shown = "".join(_pair_row(line.value, here, data.parent, None) for line in lines[:PAIRS_SHOWN])
        more = f"<p>... and {len(lines) - PAIRS_SHOWN} more rows</p>" if len(lines) > PAIRS_SHOWN else ""
        parts.append(
            f"<h2>Preference data</h2><p>{len(lines)} rows of <code>{_e(data)}</code></p>{shown}{more}"
        )
    return "".join(parts)


def _curves(run: TrainRun) -> str:
    rows = run.metrics()
    steps = [r["step"] for r in rows]

    def series(key: str) -> list[tuple[float, float]]:
        return [(x, r[key]) for x, r in zip(steps, rows, strict=True) if key in r]

    nodes = list(dict.fromkeys(k.split("/")[1] for r in rows for k in r if k.startswith("nodes/")))
    return (
        _chart("loss", {"loss": series("loss")})
        + _chart(
            "accuracy",
            {"system": series("rewards/accuracies"), "held out": series("eval_rewards/accuracies")},
        )
        + _chart("per-node margins", {n: series(f"nodes/{n}/margins") for n in nodes})
    )


# ---------------------------------------------------------------- samples and pairs


def _grouped(found: Sequence[saved.Sample], here: Path, fold: bool = True) -> str:
    """Each input's samples as cards, the best one marked; in a fold each unless `fold` is off."""
    out = []
    for k, group in enumerate(saved.by_input(found).values()):
        scores = [s.score for s in group if s.score is not None]
        best = max(scores) if len(set(scores)) > 1 else None  # samples that all score alike: none is best
        cards = "".join(_card(s, here, best) for s in group)
        head = _e(_short(", ".join(f"{key}: {v}" for key, v in group[0].input.items()), 120))
        where = f"<b>{head}</b> &middot; {len(group)} samples" + (
            f" &middot; best {best:+.3f}" if best is not None else ""
        )
        if fold:
            opened = " open" if k < 3 else ""
            out.append(
                f"<details class='input'{opened}><summary>{where}</summary>"
                f"<div class='cards'>{cards}</div></details>"
            )
        else:
            out.append(f"<div class='input'><p>{where}</p><div class='cards'>{cards}</div></div>")
    return "".join(out)


def _card(sample: saved.Sample, here: Path, best: float | None) -> str:
    marked = " best" if best is not None and sample.score == best else ""
    score = f"<div class='score'>score {sample.score:+.3f}</div>" if sample.score is not None else ""
    values = _values(sample.values, here, here)
    return f"<div class='card sample{marked}' data-id='{_e(sample.id)}'>{score}{values}</div>"


def _pairs(path: Path, found: Sequence[saved.Sample], here: Path) -> str:
    """pairs.jsonl's rows side by side, with each side's score from its sample."""
    scores = {_key(s.input, s.values): s.score for s in found}
    rows = [line.value for line in read_jsonl(path) if isinstance(line.value, dict)]
    return "".join(_pair_row(row, here, path.parent, scores) for row in rows) or "<p>No pairs.</p>"


def _pair_row(
    row: Mapping[str, Any], here: Path, base: Path, scores: Mapping[str, float | None] | None
) -> str:
    """One preference row: its input, and its sides (image paths relative to `base`, its file's folder)."""
    given = row.get("input", {}) if isinstance(row.get("input"), dict) else {}
    sides = [("chosen", row["chosen"]), ("rejected", row["rejected"])] if "chosen" in row else []
    if isinstance(row.get("ranked"), list):
        sides = [(f"ranked {k + 1}", v) for k, v in enumerate(row["ranked"])]
    cells = []
    for label, values in sides:
        if not isinstance(values, dict):
            continue
        score = scores.get(_key(given, values)) if scores is not None else None
        shown = f" <span class='score'>{score:+.3f}</span>" if score is not None else ""
        css = "chosen" if label in ("chosen", "ranked 1") else "rejected"
        cells.append(f"<div class='{css}'><b>{_e(label)}</b>{shown}{_values(values, here, base)}</div>")
    head = _e(_short(", ".join(f"{k}: {v}" for k, v in given.items()), 160))
    return f"<div class='pair'><div style='grid-column:1/-1'>{head}</div>{''.join(cells)}</div>"


def _key(given: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """A sample's identity by what it holds (image paths as absolute as the samples file has them)."""
    return json.dumps([given, {k: _plain(v) for k, v in values.items()}], sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value.endswith(".png"):
        return Path(value).name
    return [_plain(v) for v in value] if isinstance(value, list) else value


def _values(values: Mapping[str, Any], here: Path, base: Path) -> str:
    """Node values: text as text, images as lazily loaded pictures (a relative path is from `base`)."""
    out = []
    for name, value in values.items():
        items = value if isinstance(value, list) else [value]
        pictures = [v for v in items if isinstance(v, str) and v.endswith(".png")]
        if pictures and len(pictures) == len(items):
            shown = "".join(
                f"<img loading='lazy' src='{_e(_relative(base / p, here))}' width='96' height='96' "
                f"alt='{_e(name)}'>"
                for p in pictures
            )
        else:
            shown = "".join(f"<pre>{_e(str(v))}</pre>" for v in items)
        out.append(f"<div class='value'><b>{_e(name)}</b>{shown}</div>")
    return "".join(out)


def _relative(path: Path, here: Path) -> str:
    """An image's address from the page's folder (`base / p` is `p` itself when `p` is absolute)."""
    return Path(os.path.relpath(path.resolve(), here.resolve())).as_posix()


# ---------------------------------------------------------------- small pieces


def _table(keys: Sequence[str], rows: Sequence[Sequence[Any]], css: str = "") -> str:
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_e(_number(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='{css}'><tr>{head}</tr>{body}</table>"


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "" if value is None else str(value)


def _chart(title: str, series: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """A small line chart as inline SVG (one colour per series), its range in the labels."""
    drawn = {name: points for name, points in series.items() if points}
    if not drawn:
        return ""
    xs = [x for points in drawn.values() for x, _ in points]
    ys = [y for points in drawn.values() for _, y in points]
    width, height, pad = 360, 150, 28
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
    lines, legend = [], []
    for k, (name, points) in enumerate(drawn.items()):
        colour = colours[k % len(colours)]
        coords = " ".join(
            f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},"
            f"{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}"
            for x, y in points
        )
        lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{coords}'/>")
        legend.append(f"<tspan fill='{colour}'>{_e(name)} </tspan>")
    labels = (
        f"<text x='4' y='12' font-size='11'>{_e(title)}: {''.join(legend)}</text>"
        f"<text x='4' y='{height - 8}' font-size='9'>{y0:.3g}..{y1:.3g}, x {x0:g}..{x1:g}</text>"
    )
    return f"<svg class='chart' width='{width}' height='{height}' role='img'>{labels}{''.join(lines)}</svg>"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
