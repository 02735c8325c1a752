"""Estimators of system log ratios, siblings that both score through `compound.interpret.score`.

- `direct`: SysDPO-Direct, for pairs that give every sampled node;
- `marginal`: SysDPO-Sampling, for pairs that give only the inputs and outputs
  (the missing intermediates are summed over candidates).

`CompiledSystem.log_ratio` sends each pair to the one that fits it.
"""
