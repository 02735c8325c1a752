"""Decoding for `causal_lm` nodes: regular-expression constraints and diverse beam search.

- `RegexConstraint` keeps generation inside a pattern (`pattern="..."` on a node):
  at each step only tokens after which the text can still match are allowed,
  and EOS only once it matches. It checks the `top` most likely tokens only.
- `diverse_beams` is diverse (group) beam search (Vijayakumar et al. 2016),
  which left transformers' core: beams in G groups; each group's choice of the
  next token is penalised by `diversity` for every earlier group that picked
  that token at the same step. SysDPO-Sampling uses it for candidates of missing
  intermediate nodes (docs/method.md, "Two variants").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import regex
import torch
from torch import nn

Mask = Callable[[Sequence[int]], torch.Tensor | None]


class PatternTooSlow(ValueError):
    """A pattern took longer than its time bound to test one text (catastrophic backtracking)."""


class RegexConstraint:
    """A logits processor (and a mask for beam search) that keeps completions inside `pattern`.

    Each test of a text against the pattern may take at most `timeout` seconds: a pattern that
    backtracks catastrophically (`(a|aa)+$`) raises `PatternTooSlow` instead of running for hours.
    """

    def __init__(self, pattern: str, tokenizer: Any, eos_id: int, top: int = 64, timeout: float = 0.5):
        self.pattern = regex.compile(pattern, regex.DOTALL)
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.top = top
        self.timeout = timeout
        self.start = 0  # where the completion starts in input_ids (set before generation)

    def _matches(self, text: str, partial: bool = False) -> bool:
        try:
            return self.pattern.fullmatch(text, partial=partial, timeout=self.timeout) is not None
        except TimeoutError:
            raise PatternTooSlow(
                f"pattern {self.pattern.pattern!r} took more than {self.timeout} s to test a text of "
                f"{len(text)} characters (it backtracks catastrophically; write it without nested repeats)"
            ) from None

    def allowed(self, completion: Sequence[int], scores: torch.Tensor) -> torch.Tensor:
        """A boolean mask over the vocabulary: the tokens that keep the completion matchable.

        The `top` likeliest tokens are tried first; only if none of them fits is
        the rest of the vocabulary searched, likeliest first.
        """
        text = self.tokenizer.decode(list(completion), skip_special_tokens=True)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        order = scores.argsort(descending=True).tolist()
        for start in (0, self.top):
            for token in order[start : self.top if start == 0 else None]:
                if token == self.eos_id:
                    continue
                piece = self.tokenizer.decode([*list(completion), token], skip_special_tokens=True)
                if piece != text and self._matches(piece, partial=True):
                    mask[token] = True
            if mask.any() or self._matches(text):
                break
        if self._matches(text) or not mask.any():
            mask[self.eos_id] = True
        return mask

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            mask = self.allowed(input_ids[row, self.start :].tolist(), scores[row])
            out[row, mask] = scores[row, mask]
        return out


@dataclass(frozen=True)
class Beam:
    tokens: tuple[int, ...]
    logp: float


def diverse_beams(
    model: nn.Module,
    prompt: Sequence[int],
    k: int,
    eos_id: int,
    groups: int | None = None,
    diversity: float = 0.5,
    max_new_tokens: int = 64,
    constraint: RegexConstraint | None = None,
) -> list[Beam]:
    """Up to k distinct completions of `prompt` (each ending with EOS unless cut at max_new_tokens),
    most probable first. `groups` defaults to k: every beam its own group, the most diverse setting."""
    groups = max(1, min(groups or k, k))
    width = -(-k // groups)
    device = next(model.parameters()).device
    active: list[list[Beam]] = [[Beam((), 0.0)] for _ in range(groups)]
    finished: list[Beam] = []
    for _ in range(max_new_tokens):
        used: Counter[int] = Counter()
        for g in range(groups):
            beams = active[g]
            if not beams:
                continue
            ids = torch.tensor([list(prompt) + list(b.tokens) for b in beams], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            if constraint is not None:
                for row, beam in enumerate(beams):
                    logp[row, ~constraint.allowed(beam.tokens, logp[row])] = float("-inf")
            penalty = torch.zeros(logp.shape[-1], device=device)
            for token, count in used.items():
                penalty[token] = diversity * count
            total = torch.tensor([b.logp for b in beams], device=device)[:, None] + logp
            chosen = (total - penalty).flatten().topk(min(width, total.numel())).indices.tolist()
            nxt: list[Beam] = []
            for index in chosen:
                row, token = divmod(index, logp.shape[-1])
                if total[row, token] == float("-inf"):
                    continue
                beam = Beam((*beams[row].tokens, token), float(total[row, token]))
                used[token] += 1
                (finished if token == eos_id else nxt).append(beam)
            active[g] = nxt
        if len(finished) >= k or not any(active):
            break
    seen, out = set(), []
    for beam in sorted(finished, key=lambda b: -b.logp) + sorted(
        (b for g in active for b in g), key=lambda b: -b.logp
    ):
        key = beam.tokens[:-1] if beam.tokens and beam.tokens[-1] == eos_id else beam.tokens
        if key not in seen:
            seen.add(key)
            out.append(beam)
    return out[:k]
