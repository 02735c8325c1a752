"""`compound report RUN`: plots and a markdown summary of a training run's metrics.

Reads RUN/metrics.jsonl and writes RUN/report/: loss.png, accuracy.png,
margins.png (each node's reward margin over the steps), shares.png (each node's
share of the margin: which component the preferences credit) and REPORT.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compound.io import atomic_write
from compound.run_folder import TrainRun


def report(run: str | Path) -> Path:
    """Write RUN/report/ and return the path of REPORT.md."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    run = Path(run)
    rows = TrainRun(run).metrics()
    out = run / "report"
    out.mkdir(exist_ok=True)
    steps = [r["step"] for r in rows]
    nodes = list(dict.fromkeys(k.split("/")[1] for r in rows for k in r if k.startswith("nodes/")))

    def plot(name: str, series: dict[str, list[float]], ylabel: str, zero: bool = False) -> None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for label, values in series.items():
            ax.plot(steps, values, label=label, linewidth=1.5)
        if zero:
            ax.axhline(0, color="#888888", linewidth=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)

    plot("loss", {"loss": [r["loss"] for r in rows]}, "SysDPO loss")
    accuracy = {"system": [r.get("rewards/accuracies", float("nan")) for r in rows]}
    accuracy |= {n: [r.get(f"nodes/{n}/accuracies", float("nan")) for r in rows] for n in nodes}
    if any("eval_rewards/accuracies" in r for r in rows):
        accuracy["held out"] = [r.get("eval_rewards/accuracies", float("nan")) for r in rows]
    plot("accuracy", accuracy, "preference accuracy")
    plot(
        "margins",
        {n: [r.get(f"nodes/{n}/margins", float("nan")) for r in rows] for n in nodes},
        "reward margin (beta x log-ratio gap)",
        zero=True,
    )
    plot(
        "shares",
        {n: [r.get(f"nodes/{n}/share", float("nan")) for r in rows] for n in nodes},
        "share of the margin",
        zero=True,
    )
    path = out / "REPORT.md"
    atomic_write(path, _markdown(run, rows, nodes))
    return path


def _markdown(run: Path, rows: list[dict[str, Any]], nodes: list[str]) -> str:
    config = TrainRun(run).settings()
    first, last = rows[0], rows[-1]
    window = rows[-max(1, len(rows) // 10) :]

    def mean(key: str) -> float:
        values = [r[key] for r in window if key in r]
        return sum(values) / len(values) if values else float("nan")

    def at(row: dict[str, Any], key: str) -> float:
        return row.get(key, float("nan"))

    lines = [
        f"# Training report: {run.name}",
        "",
        f"System `{config.get('system', '?')}`, data `{config.get('data', '?')}`; {len(rows)} steps, "
        f"loss `{config.get('loss_type', '?')}`, beta {config.get('beta', '?')}, "
        f"trained: {', '.join(config.get('train') or ['all components'])}.",
        "",
        "| | first step | last step | mean of the last 10% |",
        "|---|---|---|---|",
        f"| loss | {first['loss']:.4f} | {last['loss']:.4f} | {mean('loss'):.4f} |",
        f"| accuracy | {at(first, 'rewards/accuracies'):.3f} | {at(last, 'rewards/accuracies'):.3f} | "
        f"{mean('rewards/accuracies'):.3f} |",
        f"| margin | {at(first, 'rewards/margins'):.4f} | {at(last, 'rewards/margins'):.4f} | "
        f"{mean('rewards/margins'):.4f} |",
        "",
        "Per node, mean of the last 10% of steps (share: the node's margin over the sum of every node's "
        "|margin|):",
        "",
        "| node | margin | accuracy | share |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {mean(f'nodes/{n}/margins'):.4f} | {mean(f'nodes/{n}/accuracies'):.3f} | "
        f"{mean(f'nodes/{n}/share'):+.3f} |"
        for n in nodes
    ]
    skipped = sum(r.get("skipped", 0) for r in rows)
    lines += [
        "",
        f"Skipped steps (non-finite loss or gradient): {skipped:g}. Throughput: "
        f"{mean('pairs_per_second'):.1f} pairs/s.",
        "",
    ]
    lines += [f"![{name}]({name}.png)" for name in ("loss", "accuracy", "margins", "shares")]
    credit = run / "credit" / "CREDIT.md"
    if credit.is_file():  # `compound credit` ran on this run
        lines += ["", "Held-out credit (`compound credit`): each component reverted to its base model:", ""]
        lines += [credit.read_text().rstrip()]
    return "\n".join(lines) + "\n"
