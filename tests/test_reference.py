"""The three reference strategies agree; `adapter` keeps one copy of the weights; weights save and load."""

import json

import pytest
import torch
from conftest import perturb
from test_log_ratio import pictures

import compound
from compound.reference import ReferenceCache


def system_text(tiny) -> str:
    return (
        f'system s\ncomponent writer = causal_lm("{tiny["lm"]}", lora(r=4))\n'
        f'component painter = diffusion("{tiny["painter"]}", lora(r=4), timesteps=2)\n'
        'input request : text\nplan : text ~ writer(request, template="Plan {request}:")\n'
        "scene[2] : text = line(plan, i)\nimage[2] : image ~ painter(scene[i])\noutput image\n"
    )


ROWS = (
    [
        {"request": "a disc", "plan": "small\nlarge", "image": pictures(0, 2)},
        {"request": "a dot", "plan": "left\nright", "image": pictures(1, 2)},
    ],
    [
        {"request": "a disc", "plan": "large\nsmall", "image": pictures(2, 2)},
        {"request": "a dot", "plan": "right\nleft", "image": pictures(3, 2)},
    ],
)


def trained(system) -> None:
    """The same 'training' for every strategy: move the LoRA weights deterministically."""
    for k, name in enumerate(("writer", "painter")):
        perturb(system.backend(name).model, scale=0.3, seed=k, only="lora_")


def storages(system) -> int:
    """Bytes of distinct tensor storage held by the system: parameters, buffers, reference copies."""
    seen, total = set(), 0
    modules = [system] + [ref for name in system.components for ref in system.backend(name)._reference_copy]
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def test_copy_adapter_and_cached_give_the_same_loss(tiny, write_system, tmp_path):
    cmp = write_system(system_text(tiny))
    chosen, rejected = ROWS
    losses = {}
    for strategy in ("copy", "adapter", "cached"):
        system = compound.load(cmp, reference=strategy)
        cache = None
        if strategy == "cached":
            cache = system.reference_cache(chosen, rejected, generator=torch.Generator().manual_seed(3))
            cache = ReferenceCache.load(cache.save(tmp_path / "reference.safetensors"))
            system.check_cache(cache)
        trained(system)
        out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(3), cache=cache)
        losses[strategy] = compound.sysdpo_loss(out, beta=0.1).item()
        assert (
            abs(out.per_node["plan"][0][0].item()) > 1e-3
            and abs(out.per_node["image[1]"][1][0].item()) > 1e-4
        )
    assert losses["adapter"] == pytest.approx(losses["copy"], abs=1e-6)
    assert losses["cached"] == pytest.approx(losses["copy"], abs=1e-6)


def test_a_cache_refuses_other_weights_and_other_rows(tiny, write_system):
    system = compound.load(write_system(system_text(tiny)), reference="cached")
    chosen, rejected = ROWS
    cache = system.reference_cache(chosen, rejected)
    trained(system)  # the reference is still the base model: the cache stays valid, but none can be made now
    system.check_cache(cache)
    with pytest.raises(
        compound.CompoundError, match="compute the cache from a system loaded without weights="
    ):
        system.reference_cache(chosen, rejected)
    other = compound.load(
        write_system(system_text(tiny).replace(str(tiny["lm"]), str(tiny["lm2"]))), reference="cached"
    )
    with pytest.raises(
        compound.CompoundError, match="differ from those the reference cache was computed with"
    ):
        other.check_cache(cache)
    other = [dict(chosen[0], plan="tiny\nhuge"), chosen[1]]
    with pytest.raises(compound.CompoundError, match="pair 0 is not in the reference cache"):
        system.log_ratio(other, rejected, cache=cache)
    with pytest.raises(compound.CompoundError, match="no reference cache was given"):
        system.log_ratio(chosen, rejected)


def test_adapter_keeps_one_copy_of_the_base_weights(tiny, write_system):
    cmp = write_system(system_text(tiny))
    adapter, copy = compound.load(cmp, reference="adapter"), compound.load(cmp, reference="copy")
    base = sum(p.numel() * p.element_size() for p in adapter.parameters() if "lora_" not in str(p))
    lora = sum(p.numel() * p.element_size() for n, p in adapter.named_parameters() if "lora_" in n)
    assert all(not adapter.backend(n)._reference_copy for n in adapter.components)
    assert storages(adapter) < 1.1 * (
        storages(copy) - storages(adapter)
    )  # copy holds a second set of weights
    frozen = sum(storages_of(ref) for n in copy.components for ref in copy.backend(n)._reference_copy)
    assert frozen > 0.4 * storages(copy)
    assert base > 0 and lora > 0


def storages_of(module) -> int:
    return sum(t.untyped_storage().nbytes() for t in [*module.parameters(), *module.buffers()])


def test_save_pretrained_then_load_weights_reproduces_the_scores(tiny, write_system, tmp_path):
    for text in (system_text(tiny), system_text(tiny).replace(", lora(r=4)", "")):
        cmp = write_system(text)
        system = compound.load(cmp)
        if "lora" in text:
            trained(system)
        else:
            perturb(system.backend("writer").model, scale=0.1)
            perturb(system.backend("painter").model, scale=0.01)
        system.save_pretrained(tmp_path / "final")
        again = compound.load(cmp, weights=tmp_path / "final")
        fresh = compound.load(cmp)
        args = (*ROWS,)
        with torch.no_grad():
            a = system.scores(*args, generator=torch.Generator().manual_seed(0)).policy
            b = again.scores(*args, generator=torch.Generator().manual_seed(0)).policy
            c = fresh.scores(*args, generator=torch.Generator().manual_seed(0)).policy
        for node in a:
            assert torch.allclose(a[node][0], b[node][0], atol=1e-5)
            assert not torch.allclose(a[node][0], c[node][0], atol=1e-5)


def plan_prefs(folder, name: str, count: int, seed: int):
    """The storyboard's synthetic preferences on the plan alone: ascending plans over descending ones."""
    from synth import storyboard_prefs

    rows = [json.loads(line) for line in storyboard_prefs(folder, name, count, seed).read_text().splitlines()]
    for row in rows:
        for side in ("chosen", "rejected"):
            row[side].pop("image")
    path = folder / f"{name}-plans.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("strategy", ["copy", "adapter", "cached"])
def test_a_reloaded_system_scores_against_its_base_model(tiny, tmp_path, strategy):
    """compound.load(..., weights=RUN/final): the reference is the model the .cmp names, so the trained
    system's implicit reward survives the reload, equal to the trainer's in-memory log ratios."""
    from compound.train import Trainer

    lora = ", lora(r=4)" if strategy == "adapter" else ""
    cmp = tmp_path / "single.cmp"
    cmp.write_text(
        f'system single\ncomponent writer = causal_lm("{tiny["lm"]}"{lora})\ninput request : text\n'
        'plan : text ~ writer(request, template="Two scenes, {request}:\\n")\noutput plan\n'
    )
    train, held = plan_prefs(tmp_path, "train", 48, seed=0), plan_prefs(tmp_path, "held", 24, seed=1)
    trainer = Trainer(
        cmp,
        train,
        tmp_path / "run",
        steps=20,
        batch_size=8,
        learning_rate=1e-3,
        reference=strategy,
        eval_data=held,
        quiet=True,
        report_to=[],
    )
    trainer.train()
    pairs = trainer.eval_data.pairs
    chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    with torch.no_grad():
        trained = trainer.log_ratio(pairs, 0, trainer.system, source="eval")
        again = compound.load(cmp, weights=tmp_path / "run" / "final", reference=strategy)
        cache = None
        if strategy == "cached":  # the run's cache, computed before training next to the data
            (found,) = (tmp_path / "train-plans.jsonl.reference").glob("*.safetensors")
            cache = ReferenceCache.load(found)
            again.check_cache(cache)
        reloaded = again.log_ratio(chosen, rejected, cache=cache)
    assert torch.allclose(reloaded.chosen, trained.chosen, atol=1e-5)
    assert torch.allclose(reloaded.rejected, trained.rejected, atol=1e-5)
    assert ((reloaded.chosen - reloaded.rejected) > 0).float().mean().item() > 0.9
    assert reloaded.chosen.abs().min().item() > 0  # not a copy of the trained weights: ratios are not 0
