"""Each node's DPO beta in a run.

A node's beta is, by precedence: the training config's `node_betas` (by node, or
by an array's name for all its instances), its own or
its component's `beta=` in the `.cmp` file, and the run's `beta`. With
`auto_beta`, every node that none of these sets and whose score is a surrogate
(a diffusion node's ELBO, not an exact log-likelihood) gets the beta that makes
the spread of its implicit rewards on the first batch match the exact nodes':

    beta_n = mean over exact nodes e of (beta_e * s_e)  /  s_n,

with s_n the root mean square over the batch of the node's weighted reference
score margin, weight_n * (score_ref(chosen) - score_ref(rejected)). The
surrogate's scale is arbitrary (T times a mean squared error), so this puts a
painter's rewards on the writer's scale before training starts; the reference
scores do not change during training, so a resumed run finds the same betas.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from compound import ir
from compound.types import Scores


def by_node(given: Mapping[str, float], bases: Mapping[str, str]) -> dict[str, float]:
    """Per-node settings keyed by a node (`image[1]`) or by its declaration's name (`image`: every
    instance), an instance's own key winning; `bases` maps each node to that name (the IR's `base`)."""
    return {
        **{node: given[base] for node, base in bases.items() if base in given},
        **{key: value for key, value in given.items() if key in bases},
    }


def given_betas(system: ir.System, config_betas: Mapping[str, float]) -> dict[str, float]:
    """The betas the `.cmp` file and the config set, by node (config first)."""
    found = {f.node: f.beta for f in system.factors if f.beta is not None}
    return {**found, **config_betas}


def auto_betas(
    system: ir.System,
    scores: Scores,
    exact: Collection[str],
    beta: float,
    given: Mapping[str, float],
) -> dict[str, float]:
    """Betas for the surrogate nodes `given` leaves unset, from a batch's reference `scores`; empty when
    the system has no exact node to match or no surrogate node to set."""
    weights = {f.node: f.weight for f in system.factors}
    spread = {
        node: float((weights[node] * (c - r)).pow(2).mean().sqrt())
        for node, (c, r) in scores.reference.items()
    }
    anchors = [given.get(n, beta) * spread[n] for n in spread if n in exact and spread[n] > 0]
    if not anchors:
        return {}
    target = sum(anchors) / len(anchors)
    return {
        node: target / s for node, s in spread.items() if node not in exact and node not in given and s > 0
    }
