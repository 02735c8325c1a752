"""What a command's console shows: compound's own progress and messages, not its libraries'.

transformers, diffusers, accelerate, datasets and the Hub print loading and
saving bars, fall-back notices and deprecation warnings, and a tokenizer's
truncation warning quotes the whole text it cut: a run's own progress drowns in
them. `quiet()` turns them off for the process (environment variables the
libraries read when they are imported, their loggers, Python warnings other
than compound's own); `compound --verbose` or `COMPOUND_VERBOSE=1` keeps them.
What matters of them compound says itself, once, in its words (a prompt cut to a
model's context, a caption cut to its text encoder's length).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: The libraries whose consoles `quiet` turns off.
LIBRARIES = ("transformers", "diffusers", "accelerate", "datasets", "huggingface_hub", "peft", "torch", "PIL")


#: What the libraries read when they are imported, set by `quiet` (unless already set).
ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def verbose() -> bool:
    """Whether the user asked to see the libraries' output (`COMPOUND_VERBOSE=1`)."""
    return os.environ.get("COMPOUND_VERBOSE", "") not in ("", "0")


def quiet() -> None:
    """Libraries' bars, logs and warnings off for this process (unless `verbose()`)."""
    if verbose():
        return
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    from compound.compiler import CompoundWarning

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", category=CompoundWarning)
    _already_imported()


def _already_imported() -> None:
    """Libraries imported before `quiet` ran read their settings then: set them through their own APIs."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def say(text: str) -> None:
    """One line of compound's own on stderr (stdout stays for what a command outputs)."""
    print(text, file=sys.stderr, flush=True)


_said: set[str] = set()


def once(key: str, message: str) -> None:
    """Say `message` on stderr the first time `key` comes up in this process (a library's warning that
    matters, in compound's words, once however many times it happens)."""
    if key in _said:
        return
    _said.add(key)
    print(f"warning: {message}", file=sys.stderr, flush=True)
