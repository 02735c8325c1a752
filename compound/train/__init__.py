"""Training: the SysDPO loop (`trainer`) and its collaborators, one job per module.

- `config`: `TrainConfig`, every setting of a run;
- `schedule`: which pairs and seeds each step takes, on any number of processes;
- `candidates`: SysDPO-Sampling candidates from the current policy;
- `checkpoint`: the run folder (checkpoints, final weights, metrics log);
- `metrics`: a step's metrics, a pure function;
- `trainer`: the loop that uses them.
"""

from compound.train.config import TrainConfig, read_config
from compound.train.trainer import Trainer, TrainingError

__all__ = ["TrainConfig", "Trainer", "TrainingError", "read_config"]
