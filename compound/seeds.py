"""Seeds keyed by what they are for: every random draw of a run derives from integers, not a running
generator, so that a resumed, batched or multi-process run draws what an uninterrupted one draws."""

from __future__ import annotations


def splitmix(*values: int) -> int:
    """A well-mixed 62-bit seed from integers (SplitMix64 steps)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x >> 2
