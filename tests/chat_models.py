"""Tiny chat LLMs of the real classes, with the real chat templates and special-token settings.

The templates are the originals TRL ships (`trl/chat_templates`) and the legacy Mistral-Instruct one; the
tokenizers are character-level (any text encodes) with the special tokens and the BOS/EOS/pad flags of
the real tokenizer configs (Llama-3 and Mistral have no pad token; Llama-3, Gemma and Mistral add a BOS
that their templates also write; Phi-3 and Qwen2.5 add none). Saved with `save_pretrained`, so they load
as a hub checkpoint does.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
FAMILIES = ("llama3", "gemma", "mistral", "phi3", "qwen2")


def _spm_vocab(specials: list[str]) -> dict[str, int]:
    vocab = {s: k for k, s in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in ["▁", *(string.ascii_letters + string.digits + string.punctuation)]:
        vocab.setdefault(c, len(vocab))
    return vocab


def tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import GemmaTokenizer, LlamaTokenizer, PreTrainedTokenizerFast

    if family in ("llama3", "qwen2"):
        specials = (
            ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
            if family == "llama3"
            else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        )
        vocab = {s: k for k, s in enumerate(specials)}
        for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab.setdefault(c, len(vocab))
        bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        bpe.decoder = decoders.ByteLevel()
        if family == "llama3":  # Llama-3 adds a BOS; Qwen2.5 none, and pads with <|endoftext|>
            bpe.post_processor = processors.TemplateProcessing(
                single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
            )
            found = PreTrainedTokenizerFast(
                tokenizer_object=bpe,
                bos_token="<|begin_of_text|>",
                eos_token="<|eot_id|>",
                additional_special_tokens=specials[1:4],
            )
        else:
            found = PreTrainedTokenizerFast(
                tokenizer_object=bpe,
                eos_token="<|im_end|>",
                pad_token="<|endoftext|>",
                additional_special_tokens=specials[1:2],
            )
        found.chat_template = (
            TEMPLATES / ("llama3.jinja" if family == "llama3" else "qwen2_5.jinja")
        ).read_text()
    elif family == "gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
        found = GemmaTokenizer(
            vocab=_spm_vocab(specials),
            merges=[],
            add_bos_token=True,
            add_eos_token=False,
            extra_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        )
        found.chat_template = (TEMPLATES / "gemma.jinja").read_text()
    elif family == "mistral":
        found = LlamaTokenizer(
            vocab=_spm_vocab(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]),
            merges=[],
            add_bos_token=True,
            add_eos_token=False,
        )
        found.chat_template = MISTRAL
    else:
        specials = [
            "<unk>",
            "<s>",
            "</s>",
            "<|endoftext|>",
            "<|assistant|>",
            "<|system|>",
            "<|end|>",
            "<|user|>",
        ]
        found = LlamaTokenizer(
            vocab=_spm_vocab(specials),
            merges=[],
            add_bos_token=False,
            add_eos_token=False,
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            extra_special_tokens=specials[4:],
        )
        found.chat_template = (TEMPLATES / "phi3.jinja").read_text()
    return found


def chat_lm(folder: Path, family: str, seed: int = 0) -> Path:
    """Save a tiny model of the family's real class and its tokenizer to `folder`."""
    import transformers

    tok = tokenizer(family)
    common = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 256,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config, model = {
        "llama3": ("LlamaConfig", "LlamaForCausalLM"),
        "gemma": ("GemmaConfig", "GemmaForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "phi3": ("Phi3Config", "Phi3ForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    }[family]
    extra = {"head_dim": 16} if family == "gemma" else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = getattr(transformers, model)(getattr(transformers, config)(**common, **extra))
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
