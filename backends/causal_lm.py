"""`causal_lm`: a transformers causal LM, scored exactly.

A node's score is log p(text | prompt), summed over the completion's tokens,
with TRL's `DPOTrainer` conventions: prompt and prompt+completion are
tokenized, and the completion is what follows their common prefix (where a
token merges across the boundary, the merged token belongs to the completion).
As plain text, the EOS token is appended to the completion; with `chat=true`
the conversation is tokenized by the tokenizer's chat template itself
(`apply_chat_template(tokenize=True)`: one BOS, however the template and the
tokenizer each add one), the node's value as the assistant's turn, so the
completion ends with the template's own end of turn (`<|eot_id|>`,
`<end_of_turn>`, `<|end|>`, ...) and generation stops there. So for a
single-LLM system, `log_ratio` gives TRL's `logps/chosen` and `logps/rejected`,
for plain and for conversational rows.

Component options: `lora(r=, alpha=, dropout=, target_modules=)`, `reference=`,
`batch_size=` (sequences per forward pass), `dtype=` ("float32", "bfloat16",
"float16"), `max_length=` (tokens per sequence; default: the model's context
length), `gguf_file=` (load a GGUF file in the component's folder: transformers
dequantizes it), `chat=true` (render each node's prompt as the user turn of the
tokenizer's chat template, after an optional `system_prompt=` message; a
template's refusal, such as Gemma's "System role not supported", is an error
naming the component). A tokenizer without a pad token pads with EOS (in
memory; the folder is not changed). A sequence longer than
`max_length` loses the start of its prompt, never its completion (the score
always covers the whole node value); generation keeps the prompt's last
`max_length - max_new_tokens` tokens.

Node options shape a node's outputs. `choice="small|medium|large"` makes the
node a categorical distribution over those values, with probabilities
proportional to the LM's probability of each (completion and EOS): it is scored
exactly (log-probability of the value minus the log-sum over all choices) and
sampled exactly; its values share one forward pass of their prompt (the
prompt's keys and values kept, each value going on from them), the same
log-probabilities for a fraction of the tokens. `pattern="REGEX"` keeps generation inside a regular expression
(token by token, so that sampled intermediates are well formed); its score
stays the LM's log-probability, not renormalized to the pattern.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compound import ir
from compound.backends import BUILTIN, DEMONSTRATIONS
from compound.backends.base import Backend, int_option, load_failed
from compound.backends.decoding import PatternTooSlow, RegexConstraint, diverse_beams
from compound.backends.loading import checkpointing, dtype_option, lora, resolve, safetensors_only
from compound.console import once


@dataclass(frozen=True)
class Choice:
    """A value of a node with `choice=`: every choice's tokens, and which one the value is."""

    options: tuple[Tokens, ...]
    index: int


@dataclass(frozen=True)
class Tokens:
    """One completion to score: the prompt's token ids and the completion's."""

    prompt: tuple[int, ...]
    completion: tuple[int, ...]


class CausalLM(Backend):
    spec = BUILTIN["causal_lm"]
    exact = True

    def __init__(
        self, component: ir.Component, model: nn.Module, tokenizer: Any, reference: str | None = None
    ):
        super().__init__(component, model, reference)
        self.tokenizer = tokenizer
        if tokenizer.eos_token is None:
            raise self.error("its tokenizer has no EOS token; completions end with EOS, so set one")
        if tokenizer.pad_token is None:  # Llama, Mistral: pad (masked out) with EOS, as TRL does
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = int_option(component, component.options, "max_length", int(context or 1_000_000))
        self.chat = bool(component.options.get("chat", False))
        if self.chat and not getattr(tokenizer, "chat_template", None):
            raise self.error("chat=true, but its tokenizer has no chat template")
        #: Generation stops at EOS, and with `chat=true` at the template's end of turn.
        self.stop = self._end_of_turn() if self.chat else int(tokenizer.eos_token_id)
        self._tokens = lru_cache(maxsize=65536)(self._tokenize)

    @property
    def system_prompt(self) -> str | None:
        """The component's `system_prompt=` (a param's current text, when a param gives it)."""
        found = self.component.options.get("system_prompt")
        return None if found is None else str(found)

    def _messages(
        self, condition: str, answer: str | None = None, demos: Sequence[ir.Demo] = ()
    ) -> list[dict[str, str]]:
        """The conversation: the system prompt, each demonstration as an earlier user and assistant turn,
        then the node's prompt (and its answer)."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        shots = [
            turn
            for d in demos
            for turn in ({"role": "user", "content": d.prompt}, {"role": "assistant", "content": d.output})
        ]
        turns = [*system, *shots, {"role": "user", "content": condition}]
        return [*turns, {"role": "assistant", "content": answer}] if answer is not None else turns

    def _template(self, messages: list[dict[str, str]], tokenize: bool, generation: bool) -> Any:
        """The chat template applied; its own refusals (a role it does not support) name the component."""
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=tokenize, add_generation_prompt=generation, return_dict=False
            )
        except TemplateError as e:
            raise self.error(f"its chat template refused the conversation: {e}") from None

    def _end_of_turn(self) -> int:
        """The token that ends an assistant's turn in the chat template (what follows the answer in a
        conversation that goes on), so that generation stops where the template ends a turn."""
        sentinel = "\u2063ANSWER\u2063"
        last = self._template(self._messages("x", sentinel), tokenize=False, generation=False)
        going_on = self._template(
            [*self._messages("x", sentinel), {"role": "user", "content": "y"}],
            tokenize=False,
            generation=False,
        )
        after = last.split(sentinel, 1)[-1]
        later = going_on.split(sentinel, 1)[-1]
        shared = after[
            : next((k for k, (a, b) in enumerate(zip(after, later, strict=False)) if a != b), len(after))
        ]
        special = set(self.tokenizer.all_special_ids) | set(
            getattr(self.tokenizer, "added_tokens_decoder", {})
        )
        ids = self.tokenizer(shared, add_special_tokens=False)["input_ids"]
        return next((i for i in ids if i in special), int(self.tokenizer.eos_token_id))

    def prompt(self, condition: str, demos: Sequence[ir.Demo] = ()) -> str:
        """A node's rendered template, after its demonstrations: as plain text, each demonstration's
        prompt and output and a blank line; with `chat=true`, the user's turn of the tokenizer's chat
        template (after the component's `system_prompt=` message and the demonstrations as earlier
        turns), ready for the assistant's answer."""
        if not self.chat:
            return "".join(f"{d.prompt}{d.output}\n\n" for d in demos) + condition
        rendered: str = self._template(
            self._messages(condition, demos=demos), tokenize=False, generation=True
        )
        return rendered

    @classmethod
    def load(
        cls,
        component: ir.Component,
        root: Path,
        reference: str | None = None,
        trust_remote_code: bool = False,
    ) -> CausalLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = resolve(component, root)
        safetensors_only(component, Path(source))
        options = component.options
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        gguf = {"gguf_file": str(options["gguf_file"])} if "gguf_file" in options else {}
        weights: dict[str, Any] = {**gguf} if gguf else {"use_safetensors": True}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs, **gguf)
            model: nn.Module = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype_option(component), **kwargs, **weights
            )
        except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
            what = (
                f"the GGUF file {gguf['gguf_file']!r}"
                if gguf
                else "a transformers causal LM and its tokenizer"
            )
            raise load_failed(component, source, what, e) from None
        checkpointing(model, component)
        model = lora(model, component, cls.lora_targets)
        backend = cls(component, model, tokenizer, reference)
        backend.source = source
        return backend

    # ------------------------------------------------------------ scoring

    def _tokenize(
        self, condition: str, text: str, demos: tuple[ir.Demo, ...], system_prompt: str | None
    ) -> Tokens:
        """One completion's tokens (cached by everything they depend on: the system prompt a param may
        change, the demonstrations an optimizer gave)."""
        if self.chat:
            prompt_ids = list(
                self._template(self._messages(condition, demos=demos), tokenize=True, generation=True)
            )
            full = list(
                self._template(self._messages(condition, text, demos), tokenize=True, generation=False)
            )
        else:
            prompt = self.prompt(condition, demos)
            prompt_ids = self.tokenizer(prompt)["input_ids"]
            full = self.tokenizer(prompt + text + self.tokenizer.eos_token)["input_ids"]
        shared = 0
        while shared < min(len(prompt_ids), len(full)) and prompt_ids[shared] == full[shared]:
            shared += 1
        return Tokens(tuple(full[:shared]), tuple(full[shared:]))

    def tokens(self, condition: str, text: str, options: Mapping[str, Any]) -> Tokens:
        """A completion's tokens, with the node's demonstrations (in `options`) before its prompt."""
        return self._tokens(condition, text, _demos(options), self.system_prompt)

    def prepare(self, condition: str, value: Any, options: Mapping[str, Any]) -> Tokens | Choice:
        choices = _choices(options)
        if choices is None:
            return self.tokens(condition, value, options)
        if value not in choices:
            raise self.error(f"the value {value!r} is not one of its node's choices ({'|'.join(choices)})")
        return Choice(tuple(self.tokens(condition, c, options) for c in choices), choices.index(value))

    def size(self, item: Tokens | Choice) -> int:
        return len((item.options[item.index] if isinstance(item, Choice) else item).completion)

    def _score(
        self, model: nn.Module, items: Sequence[Tokens | Choice], draws: Sequence[Any]
    ) -> torch.Tensor:
        """Log-probabilities of the items: of a completion, or of a choice among its node's choices."""
        flat = [s for item in items for s in (item.options if isinstance(item, Choice) else (item,))]
        logps = self._logps(model, flat)
        out, at = [], 0
        for item in items:
            if isinstance(item, Choice):
                block = logps[at : at + len(item.options)]
                out.append(block[item.index] - torch.logsumexp(block, dim=0))
                at += len(item.options)
            else:
                out.append(logps[at])
                at += 1
        return torch.stack(out)

    def _logps(self, model: nn.Module, items: Sequence[Tokens]) -> torch.Tensor:
        """Sum of completion-token log-probs. Items with one prompt (a `choice=` node's values) share its
        forward pass: the prompt runs once and each completion goes on from its keys and values, the
        same sums for a fraction of the tokens."""
        rows = [self._fit(s) for s in items]
        prompts = list(dict.fromkeys(prompt for prompt, _ in rows))
        if len(prompts) < len(rows) and self.component.options.get("gradient_checkpointing") is not True:
            shared = self._shared_logps(model, rows, prompts)
            if shared is not None:
                return shared
        return self._whole_logps(model, rows)

    def _fit(self, s: Tokens) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(prompt, completion) within `max_length`: the prompt loses its first tokens, never the value."""
        if len(s.completion) > self.max_length:
            raise self.error(
                f"a value of {len(s.completion)} tokens does not fit max_length={self.max_length}"
            )
        cut = max(0, len(s.prompt) + len(s.completion) - self.max_length)
        if cut:
            once(
                f"{self.component.name}:score-cut",
                f"component '{self.component.name}': a prompt and value of "
                f"{len(s.prompt) + len(s.completion)} tokens do not fit max_length={self.max_length}: "
                "the prompt loses its first tokens when scored (and so does every longer one)",
            )
        return tuple(s.prompt[cut:]), tuple(s.completion)

    def _whole_logps(
        self, model: nn.Module, rows: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]
    ) -> torch.Tensor:
        """One forward pass over the right-padded prompt+completion sequences."""
        width = max(len(p) + len(c) for p, c in rows)
        device = next(model.parameters()).device
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        completion = torch.zeros((len(rows), width), dtype=torch.bool)
        for k, (prompt, value) in enumerate(rows):
            ids = prompt + value
            input_ids[k, : len(ids)] = torch.tensor(ids)
            attention[k, : len(ids)] = 1
            completion[k, len(prompt) : len(ids)] = True
        input_ids, attention, completion = input_ids.to(device), attention.to(device), completion.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        labels = input_ids[:, 1:]
        token_logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return (token_logps * completion[:, 1:]).sum(dim=1)

    def _shared_logps(
        self,
        model: nn.Module,
        rows: Sequence[tuple[tuple[int, ...], tuple[int, ...]]],
        prompts: Sequence[tuple[int, ...]],
    ) -> torch.Tensor | None:
        """The distinct prompts, left-padded, in one pass that keeps their keys and values; then every
        completion in one pass after its prompt's. None for a model whose cache is not full attention
        (a sliding window shorter than the sequences, linear attention, quantized): those score whole
        sequences."""
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

        device = next(model.parameters()).device
        width = max(map(len, prompts))
        prompt_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for g, prompt in enumerate(prompts):
            prompt_ids[g, width - len(prompt) :] = torch.tensor(prompt)
            prompt_mask[g, width - len(prompt) :] = 1
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        before = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = before.past_key_values
        longest = max(len(value) for _, value in rows)

        def full(layer: object) -> bool:  # a window the sequences fit in attends to all of them
            if type(layer) is DynamicSlidingWindowLayer:
                return width + longest < int(layer.sliding_window)
            return type(layer) is DynamicLayer

        if type(cache) is not DynamicCache or not all(map(full, cache.layers)):
            return None
        at = {prompt: g for g, prompt in enumerate(prompts)}
        index = torch.tensor([at[prompt] for prompt, _ in rows], dtype=torch.long, device=device)
        cache.reorder_cache(index)  # type: ignore[arg-type]  # a LongTensor: typed as Tensor by torch.tensor  # each row the keys and values of its prompt
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for k, (_, value) in enumerate(rows):
            ids[k, : len(value)] = torch.tensor(value, dtype=torch.long)
            mask[k, : len(value)] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = prompt_mask.sum(1)[index, None] + torch.arange(longest, device=device)
        after = model(
            input_ids=ids,
            attention_mask=torch.cat([prompt_mask[index], mask], dim=1),
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        first = before.logits[:, -1:].float()[index]  # the prompt's last position predicts the first token
        logits = torch.cat([first, after.logits[:, :-1].float()], dim=1)
        token_logps = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        return (token_logps * mask).sum(dim=1)

    # ------------------------------------------------------------ sampling

    def sample(self, conditions: Sequence[str], generator: torch.Generator, **options: Any) -> list[str]:
        """One completion per prompt: `generate` in left-padded batches (inside a node's `pattern=`),
        or a draw from the node's categorical distribution over its `choice=` values."""
        choices = _choices(options)
        if choices is not None:
            return [choices[int(i)] for i in self._pick(conditions, choices, 1, options, generator)[:, 0]]
        settings = {"max_new_tokens": 64, "do_sample": True, "temperature": 1.0, "top_k": 0} | {
            k: v for k, v in options.items() if k not in ("pattern", "choice", "diversity", DEMONSTRATIONS)
        }
        constraint = self._constraint(options)
        device = next(self.model.parameters()).device
        out: list[str] = []
        sides = self.tokenizer.padding_side, self.tokenizer.truncation_side
        self.tokenizer.padding_side = self.tokenizer.truncation_side = "left"
        room = max(1, self.max_length - int(settings["max_new_tokens"]))
        try:
            for start in range(0, len(conditions), self.batch_size):
                prompts = [
                    self.prompt(c, _demos(options)) for c in conditions[start : start + self.batch_size]
                ]
                self._say_if_cut(prompts, room)
                batch = self.tokenizer(
                    prompts,
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=room,
                    add_special_tokens=not self.chat,  # a rendered chat template holds its own BOS
                ).to(device)
                if constraint is not None:
                    constraint.start = batch["input_ids"].shape[1]
                    settings["logits_processor"] = [constraint]
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                with (
                    torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                    torch.no_grad(),
                ):
                    torch.manual_seed(seed)
                    lm: Any = self.model
                    try:
                        stop = {"eos_token_id": [self.tokenizer.eos_token_id, self.stop]} if self.chat else {}
                        generated = lm.generate(**batch, pad_token_id=self.pad_id, **(stop | settings))
                    except PatternTooSlow as e:
                        raise self.error(str(e)) from None
                new = generated[:, batch["input_ids"].shape[1] :]
                out += [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
        finally:
            self.tokenizer.padding_side, self.tokenizer.truncation_side = sides
        return out

    def _say_if_cut(self, prompts: Sequence[str], room: int) -> None:
        """Say once that prompts longer than the room generation leaves lose their start (the tokenizer's
        own warning is off: it quotes the whole text)."""
        for prompt in prompts:
            if len(prompt) > room // 4 and len(self.tokenizer(prompt)["input_ids"]) > room:
                once(
                    f"{self.component.name}:sample-cut",
                    f"component '{self.component.name}': prompts longer than {room} tokens (max_length "
                    f"{self.max_length} less max_new_tokens) keep only their last {room} when sampling",
                )
                return

    def candidates(
        self, condition: str, k: int, strategy: str, generator: torch.Generator, **options: Any
    ) -> list[str]:
        """Up to k distinct likely values (SysDPO-Sampling): diverse beam search (`beam`), or draws."""
        choices = _choices(options)
        if choices is not None:
            picks = self._pick([condition], choices, k, options, generator, greedy=strategy == "beam")[0]
            return list(dict.fromkeys(choices[int(i)] for i in picks))
        if strategy == "sample":
            return list(dict.fromkeys(self.sample([condition] * k, generator, **options)))
        prompt = self.tokenizer(self.prompt(condition, _demos(options)))["input_ids"][
            -(self.max_length - 1) :
        ]
        try:
            beams = diverse_beams(
                self.model,
                prompt,
                2
                * k,  # distinct token sequences can spell the same text: search wider, keep k distinct texts
                self.stop,
                diversity=float(options.get("diversity", 0.5)),
                max_new_tokens=int(options.get("max_new_tokens", 64)),
                constraint=self._constraint(options),
            )
        except PatternTooSlow as e:
            raise self.error(str(e)) from None
        texts = [self.tokenizer.decode(list(b.tokens), skip_special_tokens=True) for b in beams]
        return list(dict.fromkeys(texts))[:k]

    def _pick(
        self,
        conditions: Sequence[str],
        choices: list[str],
        k: int,
        options: Mapping[str, Any],
        generator: torch.Generator,
        greedy: bool = False,
    ) -> torch.Tensor:
        """Indices [len(conditions), k] of choices: drawn from the node's distribution, or the k likeliest."""
        with torch.no_grad():
            items = [self.tokens(c, v, options) for c in conditions for v in choices]
            logps = self._logps(self.model, items)
        logps = logps.view(len(conditions), len(choices)).cpu()
        if greedy or not options.get("do_sample", True):
            return logps.topk(min(k, len(choices)), dim=1).indices
        temperature = float(options.get("temperature", 1.0))
        return torch.multinomial(
            torch.softmax(logps / temperature, dim=1), k, replacement=True, generator=generator
        )

    def _constraint(self, options: Mapping[str, Any]) -> RegexConstraint | None:
        pattern = options.get("pattern")
        return RegexConstraint(str(pattern), self.tokenizer, self.tokenizer.eos_token_id) if pattern else None

    def save_pretrained(self, path: Path) -> None:
        super().save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def export(self, path: Path, merge: bool = True) -> None:
        """A transformers folder (AutoModelForCausalLM), or a PEFT adapter on its base with `merge=False`."""
        merged: Any = self.merged(merge)
        merged.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)


def _demos(options: Mapping[str, Any]) -> tuple[ir.Demo, ...]:
    """The node's demonstrations, as the core hands them (`SampleNode.demos`)."""
    return tuple(options.get(DEMONSTRATIONS, ()))


def _choices(options: Mapping[str, Any]) -> list[str] | None:
    """A node's `choice="a|b|c"` option as a list (None without one)."""
    choice = options.get("choice")
    return [c for c in str(choice).split("|")] if choice is not None else None
