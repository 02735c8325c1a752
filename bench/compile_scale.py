"""How compile time grows with program size.

Generates programs of 1,000 and 10,000 nodes in three shapes and times the
front end's stages (parse, check, factorize) on each, best of --repeat runs.
The ratio column is time(10,000) / time(1,000): 10 means linear growth.

    python bench/compile_scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time

from compound.compiler import check, paused_gc
from compound.factorize import factorize
from compound.parse import parse

HEAD = 'system bench\ncomponent writer = causal_lm("models/writer")\ninput q : text\n'


def chain(n: int) -> str:
    """q -> n0 -> n1 -> ... : a path of n - 1 sampled nodes."""
    lines = ["n0 : text ~ writer(q)"] + [f"n{k} : text ~ writer(n{k - 1})" for k in range(1, n - 1)]
    return HEAD + "\n".join(lines) + f"\noutput n{n - 2}\n"


def fan_in(n: int) -> str:
    """n - 2 proposers of q, and one aggregator that reads them all (a 10,000-argument call)."""
    lines = [f"p{k} : text ~ writer(q)" for k in range(n - 2)]
    lines.append("final : text ~ writer(q, " + ", ".join(f"p{k}" for k in range(n - 2)) + ")")
    return HEAD + "\n".join(lines) + "\noutput final\n"


def plates(n: int, width: int = 50) -> str:
    """Layers of plates: layer k+1 reads layer k member-wise and its aggregate whole."""
    lines, layers = [], (n - 1) // (width + 1)
    for k in range(layers):
        source = "q" if k == 0 else f"agg{k - 1}, l{k - 1}[i]"
        lines.append(f"l{k}[{width}] : text ~ writer({source})")
        lines.append(f"agg{k} : text ~ writer(q, l{k})")
    return HEAD + "\n".join(lines) + f"\noutput agg{layers - 1}\n"


def run_once(text: str, pause: bool = True) -> dict[str, float]:
    """One compile, as a user runs it, with the time of each stage."""
    with paused_gc() if pause else contextlib.nullcontext():  # compile_source pauses the GC
        t0 = time.perf_counter()
        program = parse(text, "bench.cmp")
        t1 = time.perf_counter()
        system, _ = check(program)
        t2 = time.perf_counter()
        factorize(system)
        t3 = time.perf_counter()
    return {"parse": t1 - t0, "check": t2 - t1, "factorize": t3 - t2, "total": t3 - t0}


def measure(text: str, repeat: int, pause: bool = True) -> tuple[int, dict[str, float]]:
    """The fastest of `repeat` compiles, each from a collected heap (nothing else alive)."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        runs.append(run_once(text, pause))
    nodes = len(check(parse(text, "bench.cmp"))[0].nodes)
    return nodes, min(runs, key=lambda r: r["total"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'shape':<8} {'nodes':>7} {'parse s':>8} {'check s':>8} {'factor s':>8} {'total s':>8}  ratio")
    for name, make in (("chain", chain), ("fan-in", fan_in), ("plates", plates)):
        small_nodes, small = measure(make(1_000), args.repeat)
        large_nodes, large = measure(make(10_000), args.repeat)
        for nodes, t in ((small_nodes, small), (large_nodes, large)):
            ratio = f"{large['total'] / small['total']:.1f}x" if t is large else ""
            print(
                f"{name:<8} {nodes:>7} {t['parse']:>8.3f} {t['check']:>8.3f} {t['factorize']:>8.3f} "
                f"{t['total']:>8.3f}  {ratio}"
            )
    paused = measure(chain(10_000), args.repeat)[1]["total"]
    running = measure(chain(10_000), args.repeat, pause=False)[1]["total"]
    print(
        f"\nchain of 10,000 with the cyclic GC running: {running:.3f} s, "
        f"paused (as compile_source does): {paused:.3f} s, {running / paused:.1f}x"
    )


if __name__ == "__main__":
    main()
