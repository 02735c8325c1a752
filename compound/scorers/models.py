"""Scorers that are models, loaded from local folders (safetensors only, never a folder's own code):
a reward model, a pairwise LLM judge, text similarity to a reference answer, and image-text similarity.

Each scores a group of rows at once (`score_group`: the samples of one input), in batches; the
judge only so, since its verdicts compare two outputs. Texts come from a row's `field`, or from a
`template` whose `{name}` fields name row values (plain names only: a template reaches no Python
attribute).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from compound.backends.fn import fill, render, template_fields
from compound.diagnostics import error, needs

Row = Mapping[str, Any]

JUDGE_TEMPLATE = (
    "Question: {question}\n\nAnswer A: {a}\n\nAnswer B: {b}\n\n"
    "Which answer is better, A or B? Reply with the letter only."
)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(what: str, loader: Any, path: str | Path, **options: Any) -> Any:
    """`loader.from_pretrained(path)` from local files and safetensors only, errors as one clear line."""
    folder = Path(path)
    if not folder.is_dir():
        raise error("config", f"scorer {what}: no model folder at {folder}")
    try:
        return loader.from_pretrained(folder, local_files_only=True, trust_remote_code=False, **options)
    except ImportError as e:
        raise error(
            "config", f"scorer {what}: loading {folder} needs a package that is not installed: {needs(e)}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error("config", f"scorer {what}: cannot load {folder}: {reason}") from None


def _weights(what: str, loader: Any, path: str | Path, **options: Any) -> Any:
    model = _load(what, loader, path, use_safetensors=not options.get("gguf_file"), **options)
    return model.to(_device()).eval()


class Texts:
    """The text of a row a scorer reads: a template filled with row values, or one field's value."""

    def __init__(self, field: str, template: str | None = None):
        self.field, self.template = field, template
        if template is not None:
            try:
                template_fields(template)
            except ValueError as e:
                raise error("config", f"template: {e}") from None

    def __call__(self, row: Row, **extra: Any) -> str:
        values = {**row, **extra}
        if self.template is None:
            if self.field not in values:
                raise KeyError(f"the row has no '{self.field}' (it has {', '.join(sorted(values))})")
            return render(values[self.field])
        missing = [f for f in template_fields(self.template) if f not in values]
        if missing:
            raise KeyError(f"the template's field {{{missing[0]}}} names nothing in the row")
        return fill(self.template, values)


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


class RewardModel:
    """A transformers sequence classifier (`AutoModelForSequenceClassification`) as the score: its
    logit when it has one label, else the log-probability of `label` (by default its last).

    The text is the row's `field`, or `template` filled; with `prompt=` (a row value, the question)
    and a tokenizer that has a chat template, the prompt and the field's value are rendered as a user
    and an assistant turn, as TRL's reward trainer renders conversations."""

    def __init__(
        self,
        path: str,
        field: str = "final",
        prompt: str | None = None,
        template: str | None = None,
        label: int | None = None,
        batch_size: int = 16,
        max_length: int = 512,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = _load("reward_model", AutoTokenizer, path)
        self.model = _weights("reward_model", AutoModelForSequenceClassification, path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        labels = int(self.model.config.num_labels)
        self.label = labels - 1 if label is None else int(label)
        if not 0 <= self.label < labels:
            raise error("config", f"scorer reward_model: label={label}, but the model has {labels} labels")
        self.texts, self.prompt = Texts(field, template), prompt
        self.batch_size, self.max_length = int(batch_size), int(max_length)

    def text(self, row: Row) -> str:
        answer = self.texts(row)
        if self.prompt is None:
            return answer
        if getattr(self.tokenizer, "chat_template", None):
            turns = [
                {"role": "user", "content": render(row[self.prompt])},
                {"role": "assistant", "content": answer},
            ]
            rendered: str = self.tokenizer.apply_chat_template(turns, tokenize=False)
            return rendered
        return f"{render(row[self.prompt])}\n{answer}"

    @torch.no_grad()
    def score_group(self, rows: Sequence[Row]) -> list[float]:
        out: list[float] = []
        for part in _batches([self.text(r) for r in rows], self.batch_size):
            batch = self.tokenizer(
                list(part), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.model.device)
            logits = self.model(**batch).logits.float()
            if logits.shape[-1] == 1:
                out += logits[:, 0].tolist()
            else:
                out += logits.log_softmax(-1)[:, self.label].tolist()
        return out

    def __call__(self, row: Row) -> float:
        return self.score_group([row])[0]


class Judge:
    """An LLM judge, pairwise: P(a better than b) from the judge's log-probabilities of the two
    verdicts after `template` (fields `{a}`, `{b}` and row values, by default `{question}`), with a
    and b in both positions and the two verdicts averaged, so that position bias cancels and
    prefer(a, b) = 1 - prefer(b, a) exactly. A group's scores are each output's mean preference over
    the others (a round robin). With a chat template the prompt is the user turn, as for `chat=true`."""

    def __init__(
        self,
        path: str,
        field: str = "final",
        template: str = JUDGE_TEMPLATE,
        verdicts: str = "A,B",
        gguf_file: str | None = None,
        chat: bool = True,
        max_length: int = 2048,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = _load("judge", AutoTokenizer, path, **options)
        self.model = _weights("judge", AutoModelForCausalLM, path, **options)
        found = [v.strip() for v in verdicts.split(",")]
        if len(found) != 2 or not all(found) or found[0] == found[1]:
            raise error("config", f"scorer judge: verdicts={verdicts!r}: give two, such as 'A,B'")
        self.verdicts = found
        self.texts = Texts(field, template)
        self.field, self.chat, self.max_length = field, bool(chat), int(max_length)
        if "a" not in template_fields(template) or "b" not in template_fields(template):
            raise error("config", "scorer judge: the template needs the fields {a} and {b}")

    def prompt(self, a: Row, b: Row) -> list[int]:
        text = self.texts(a, a=render(a[self.field]), b=render(b[self.field]))
        if self.chat and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
            return list(ids)[-self.max_length :]
        return list(self.tokenizer(text + "\n")["input_ids"])[-self.max_length :]

    @torch.no_grad()
    def first(self, a: Row, b: Row) -> float:
        """P(the first verdict) for a shown as A and b as B: the two verdicts' log-probabilities
        (summed over their tokens), normalized over the two."""
        prompt = self.prompt(a, b)
        logps = []
        for verdict in self.verdicts:
            ids = list(self.tokenizer(verdict, add_special_tokens=False)["input_ids"])
            tokens = torch.tensor([prompt + ids], device=self.model.device)
            logits = self.model(tokens).logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
            logps.append(logits.gather(-1, torch.tensor(ids, device=logits.device)[:, None]).sum())
        return float(torch.stack(logps).softmax(0)[0])

    def prefer(self, a: Row, b: Row) -> float:
        """P(a is better than b), position-swapped."""
        return 0.5 * (self.first(a, b) + 1.0 - self.first(b, a))

    def score_group(self, rows: Sequence[Row]) -> list[float]:
        if len(rows) < 2:
            return [0.5] * len(rows)
        table = [[0.0] * len(rows) for _ in rows]
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                table[i][j] = self.prefer(rows[i], rows[j])
                table[j][i] = 1.0 - table[i][j]
        return [sum(line) / (len(rows) - 1) for line in table]

    def __call__(self, row: Row) -> float:
        raise TypeError("the judge compares outputs: it scores the samples of an input together")


class TextSimilarity:
    """Cosine similarity between the embeddings of a row's `field` and its reference answer
    (`reference`, a row value such as an input's `answer`), from a sentence encoder folder (a
    transformers encoder; pooled as its sentence-transformers `1_Pooling/config.json` says, by
    default the mean over tokens)."""

    def __init__(self, path: str, field: str = "final", reference: str = "answer", batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = _load("similarity", AutoTokenizer, path)
        self.model = _weights("similarity", AutoModel, path)
        self.pooling = _pooling(Path(path))
        self.field, self.reference, self.batch_size = field, reference, int(batch_size)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for part in _batches(list(texts), self.batch_size):
            batch = self.tokenizer(list(part), padding=True, truncation=True, return_tensors="pt").to(
                self.model.device
            )
            states = self.model(**batch).last_hidden_state.float()
            if self.pooling == "cls":
                pooled = states[:, 0]
            else:
                mask = batch["attention_mask"][..., None].float()
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out)

    def score_group(self, rows: Sequence[Row]) -> list[float]:
        for row in rows:
            for key in (self.field, self.reference):
                if key not in row:
                    raise KeyError(f"the row has no '{key}' (it has {', '.join(sorted(row))})")
        found = self.embed([render(r[self.field]) for r in rows])
        wanted = self.embed([render(r[self.reference]) for r in rows])
        return (found * wanted).sum(-1).tolist()

    def __call__(self, row: Row) -> float:
        return self.score_group([row])[0]


def _pooling(folder: Path) -> str:
    """'cls' or 'mean', as a sentence-transformers folder's pooling config says (mean without one)."""
    try:
        config = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mean"
    return "cls" if config.get("pooling_mode_cls_token") else "mean"


class ImageTextSimilarity:
    """Cosine similarity between a CLIP model's embeddings of a row's image (`image`; a plate of
    images: their mean similarity) and a text (`text`, a row value, or `template` filled)."""

    def __init__(self, path: str, image: str = "image", text: str = "caption", template: str | None = None):
        from transformers import AutoProcessor, CLIPModel

        self.processor = _load("clip_similarity", AutoProcessor, path)
        self.model = _weights("clip_similarity", CLIPModel, path)
        self.image, self.texts = image, Texts(text, template)

    @torch.no_grad()
    def score_group(self, rows: Sequence[Row]) -> list[float]:
        from PIL import Image

        out = []
        for row in rows:
            if self.image not in row:
                raise KeyError(f"the row has no '{self.image}' (it has {', '.join(sorted(row))})")
            value = row[self.image]
            images = [
                i if isinstance(i, Image.Image) else Image.open(i).convert("RGB")
                for i in (value if isinstance(value, list) else [value])
            ]
            batch = self.processor(
                text=[self.texts(row)],
                images=[i.convert("RGB") for i in images],
                return_tensors="pt",
                padding=True,
            ).to(self.model.device)
            pictures = self.model.get_image_features(pixel_values=batch["pixel_values"])
            words = self.model.get_text_features(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
            pictures = torch.nn.functional.normalize(_tensor(pictures).float(), dim=-1)
            words = torch.nn.functional.normalize(_tensor(words).float(), dim=-1)
            out.append(float((pictures @ words[0]).mean()))
        return out

    def __call__(self, row: Row) -> float:
        return self.score_group([row])[0]


def _tensor(found: Any) -> torch.Tensor:
    """transformers 5's `get_*_features` may return an output object: its pooled embedding."""
    if isinstance(found, torch.Tensor):
        return found
    pooled: torch.Tensor = found.pooler_output
    return pooled
