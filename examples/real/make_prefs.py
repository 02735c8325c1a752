"""Write prefs.jsonl: 64 preference rows for real.cmp (run from this folder; deterministic).

Each row holds a held-out question of the mixture-of-agents demo, three proposals
made with the demo's proposer noise, and two final answers: the right one
(chosen) and a wrong one (rejected), both with the same proposals.
"""

import json
import random

from compound_demos import moa

rng = random.Random(0)
with open("prefs.jsonl", "w") as out:
    for question in moa.questions("held")[:64]:
        answers = [moa.noisy(question.answer, rng) for _ in range(moa.PROPOSERS)]
        wrong = next((a for a in answers if a != question.answer), question.answer)
        while wrong == question.answer:
            wrong = moa.noisy(question.answer, rng, 0.5)
        out.write(
            json.dumps(
                {
                    "input": question.inputs,
                    "chosen": {"answer": answers, "final": question.answer},
                    "rejected": {"answer": answers, "final": wrong},
                }
            )
            + "\n"
        )
