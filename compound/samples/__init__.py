"""Samples of a system: run over a file of inputs, stored, scored, paired into preferences, shown.

- `store`: DIR/samples.jsonl and its images (`Sample`, `write`, `read`, `by_input`);
- `score`: every sample scored by a scorer, best-of-N;
- `run`: `compound sample`, a system over inputs on one process or many (imports the model stack);
- `pairing`: `compound pairs`, preference rows from scored samples;
- `contact`: contact sheets, a folder's samples at a glance.
"""

from compound.samples.score import best_of, score
from compound.samples.store import Sample, by_input, read, split, write

__all__ = ["Sample", "best_of", "by_input", "read", "score", "split", "write"]
