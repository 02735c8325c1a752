"""A single-LLM system gives TRL's DPOTrainer numbers: per-row log-probs and the loss."""

import math

import pytest
import torch
from conftest import perturb

import compound

ROWS = [
    ("Q: two plus two?\nA:", " four", " five"),
    ("Q: the sky is?\nA:", " blue and wide", " green"),
    ("Three scenes, a lake:\n", "ice thin\nice thick\nice everywhere", "a cat"),
    ("Say something.\n", "hello world", "hi"),
]


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    cmp = tmp_path_factory.mktemp("single") / "single.cmp"
    cmp.write_text(
        f'system single\ncomponent policy = causal_lm("{tiny["lm"]}")\n'
        "input prompt : text\nanswer : text ~ policy(prompt)\noutput answer\n"
    )
    system = compound.load(cmp)  # reference: a frozen copy of the loaded weights
    perturb(system.backend("policy").model, scale=0.2)
    chosen = [{"prompt": p, "answer": c} for p, c, _ in ROWS]
    rejected = [{"prompt": p, "answer": r} for p, _, r in ROWS]
    return system, chosen, rejected


def make_trainer(system, tiny, out, loss_type=("sigmoid",), loss_weights=None, label_smoothing=0.0):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    policy = system.backend("policy").model
    reference = AutoModelForCausalLM.from_pretrained(tiny["lm"])
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ROWS])
    args = DPOConfig(
        output_dir=str(out),
        beta=0.1,
        per_device_train_batch_size=len(ROWS),
        max_steps=1,
        learning_rate=0.0,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        max_length=None,
        seed=0,
        loss_type=list(loss_type),
        loss_weights=loss_weights,
        label_smoothing=label_smoothing,
    )
    return DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(tiny["lm"]),
    )


@pytest.fixture(scope="module")
def trainer(setup, tiny, tmp_path_factory):
    return make_trainer(setup[0], tiny, tmp_path_factory.mktemp("trl"))


def trl_logps(trainer, indices):
    batch = trainer.data_collator([trainer.train_dataset[k] for k in indices])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    return loss.item(), metrics["logps/chosen"][-1], metrics["logps/rejected"][-1]


def test_per_row_log_probs_equal_trls(setup, trainer):
    system, chosen, rejected = setup
    with torch.no_grad():
        ours = system.scores(chosen, rejected).policy["answer"]
    for k in range(len(ROWS)):
        _, trl_chosen, trl_rejected = trl_logps(trainer, [k])
        assert ours[0][k].item() == pytest.approx(trl_chosen, abs=1e-4)
        assert ours[1][k].item() == pytest.approx(trl_rejected, abs=1e-4)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({"loss_type": "sigmoid"}, {"loss_type": ["sigmoid"]}),
        ({"loss_type": "hinge"}, {"loss_type": ["hinge"]}),
        ({"loss_type": "ipo"}, {"loss_type": ["ipo"]}),
        ({"loss_type": "robust", "label_smoothing": 0.2}, {"loss_type": ["robust"], "label_smoothing": 0.2}),
        ({"loss_type": "sigmoid", "nll": 0.3}, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.3]}),
    ],
    ids=["sigmoid", "hinge", "ipo", "robust", "rpo"],
)
def test_each_loss_type_equals_trls_first_step_loss(setup, tiny, tmp_path, ours, theirs):
    system, chosen, rejected = setup
    with torch.no_grad():
        loss = compound.sysdpo_loss(system.log_ratio(chosen, rejected), beta=0.1, **ours).item()
    trl_loss, _, _ = trl_logps(make_trainer(system, tiny, tmp_path, **theirs), range(len(ROWS)))
    assert loss == pytest.approx(trl_loss, abs=1e-5)
    assert abs(loss - {"hinge": 1.0, "ipo": 25.0}.get(ours["loss_type"], math.log(2))) > 1e-3  # not trivial


def test_trl_first_training_step_logs_the_same_loss(setup, trainer):
    system, chosen, rejected = setup
    with torch.no_grad():
        loss = compound.sysdpo_loss(system.log_ratio(chosen, rejected), beta=0.1).item()
    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert first["loss"] == pytest.approx(loss, abs=1e-4)
