"""The progression task of the paper's first experiment, at a size two CPU cores can run.

A request asks for three images in which one visual attribute progresses: a
disc growing, a sky darkening, a dot moving right. The writer first names the
intent ("disc up", "sky down"), then plans three captions for it ("disc tiny",
"disc medium", "disc huge"); the painter renders each as a 16x16 grayscale
image; the attribute is measured exactly on each image:

| attribute | noun | levels (canonical words) | synonyms | measure |
|---|---|---|---|---|
| size  | disc | tiny small medium large huge | minute little midsize big giant | area (bright share) |
| light | sky  | black dark gray pale white | inky dim ashen light snowy | brightness (mean) |
| place | dot  | far-left left center right far-right | west leftish middle rightish east | x (centroid) |

and `compound.scorers.Progression` turns the three measurements into the
preference score q and order consistency.

Both components are imperfect in ways preference training can fix:

- the writer names intents right, but was pretrained on plans that follow the
  intent only `P_FOLLOW` of the time; `P_HABIT` of the time it lists levels
  in ascending order whatever the intent (as language models list "small,
  medium, large"), else three random levels; in canonical words or synonyms
  alike. So its failures depend on the request, as in the paper (32% before
  alignment, 67% best-of-4, where failures independent of the request would
  give 79%): a plan is in order 63% of the time for an increasing request
  (`P_FOLLOW + P_HABIT` + random luck) but only 13% for a decreasing one, so
  sampling it again helps little there. The two rates were set, before any
  training, so that the base system and best-of-4 land near the paper's 32%
  and 67% (with the painter rendering ~85% of in-order plans in order:
  single sample 0.54 and 0.11, best of four 0.95 and 0.38);
- the painter was pretrained on renderings that are right for most captions but
  one level off for some: a synonym half of the time (`SYNONYM_OFF`), and the
  middle level ("disc medium", "sky gray", "dot center"), which even plans
  need, `MIDDLE_OFF` of the time; every level jitters a little (`JITTER`).

So the writer can learn to follow the intent it names, for every intent at
once (the plan depends on the intent, not on the request's wording), and to
prefer the words the painter renders well; the painter can learn to render its
unreliable captions at the right level. The preferences credit both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIZE = 16
JITTER = 0.25
SYNONYM_OFF = 0.5
MIDDLE_OFF = 0.4


@dataclass(frozen=True)
class Attribute:
    name: str
    noun: str
    levels: tuple[str, ...]
    synonyms: tuple[str, ...]
    measure: str
    up: tuple[str, ...]
    down: tuple[str, ...]


ATTRIBUTES = (
    Attribute(
        "size",
        "disc",
        ("tiny", "small", "medium", "large", "huge"),
        ("minute", "little", "midsize", "big", "giant"),
        "area",
        ("a disc growing", "a circle getting bigger", "a ball swelling", "a disc expanding"),
        ("a disc shrinking", "a circle getting smaller", "a ball deflating", "a disc contracting"),
    ),
    Attribute(
        "light",
        "sky",
        ("black", "dark", "gray", "pale", "white"),
        ("inky", "dim", "ashen", "light", "snowy"),
        "brightness",
        ("a sky brightening", "a scene getting lighter", "dawn breaking", "the dark lifting"),
        ("a sky darkening", "a scene getting darker", "night falling", "the light fading"),
    ),
    Attribute(
        "place",
        "dot",
        ("far-left", "left", "center", "right", "far-right"),
        ("west", "leftish", "middle", "rightish", "east"),
        "x",
        ("a dot moving right", "a dot sliding east", "a ball rolling right", "a dot drifting rightward"),
        ("a dot moving left", "a dot sliding west", "a ball rolling left", "a dot drifting leftward"),
    ),
)
BY_NAME = {a.name: a for a in ATTRIBUTES}
PREFIXES = ("", "show ", "draw ", "three frames of ")
HELD_OUT_PREFIX = "picture "
HELD_OUT_INTENT = ("place", -1)  # no training pair asks for a dot moving left
VALIDATION_INTENT = ("size", -1)  # left out of the pairs when tuning on the "validation" split


@dataclass(frozen=True)
class Request:
    text: str
    attribute: str
    direction: int  # +1: the attribute grows over the three images, -1: it shrinks

    @property
    def inputs(self) -> dict[str, str]:
        """The system's input row."""
        return {"request": self.text}


def requests(split: str) -> list[Request]:
    """Training requests (phrasings 0-2, the usual prefixes, all intents but the held-out one),
    held-out requests (phrasing 3 of every intent, and every phrasing of the held-out intent, with a
    prefix never seen in training), or validation requests: the training requests of one intent, which
    tuning keeps out of the pairs (an unseen intent, as in the held-out split)."""
    if split == "validation":
        return [r for r in requests("train") if (r.attribute, r.direction) == VALIDATION_INTENT]
    out = []
    for attribute in ATTRIBUTES:
        for direction, phrasings in ((1, attribute.up), (-1, attribute.down)):
            held_intent = (attribute.name, direction) == HELD_OUT_INTENT
            for k, phrase in enumerate(phrasings):
                if split == "train" and k < 3 and not held_intent:
                    out += [Request(p + phrase, attribute.name, direction) for p in PREFIXES]
                elif split == "held" and (k == 3 or held_intent):
                    out += [Request(p + phrase, attribute.name, direction) for p in ("", HELD_OUT_PREFIX)]
    return out


def caption(attribute: Attribute, level: int, synonym: bool) -> str:
    return f"{attribute.noun} {(attribute.synonyms if synonym else attribute.levels)[level]}"


def parse(text: str) -> tuple[Attribute, int, bool] | None:
    """(attribute, level, is a synonym) of a caption, or None when it names no known one."""
    for attribute in ATTRIBUTES:
        for words, synonym in ((attribute.levels, False), (attribute.synonyms, True)):
            for level, word in enumerate(words):
                if text.strip() == f"{attribute.noun} {word}":
                    return attribute, level, synonym
    return None


def caption_of(text: str) -> tuple[Attribute, int, bool]:
    """(attribute, level, is a synonym) of a caption the task itself wrote; ValueError for any other text."""
    parsed = parse(text)
    if parsed is None:
        raise ValueError(f"not a caption of the task: {text!r}")
    return parsed


PATTERN = (
    "(?:"
    + "|".join(f"{a.noun} (?:{'|'.join(a.levels + a.synonyms)})" for a in ATTRIBUTES)
    + ")(?:\\n(?:"
    + "|".join(f"{a.noun} (?:{'|'.join(a.levels + a.synonyms)})" for a in ATTRIBUTES)
    + ")){2}"
)
PROMPT = "Three scenes, {request}. Intent: "
PLAN_PROMPT = "Plan for {intent}:\n"
INTENT_PATTERN = "(?:" + "|".join(a.noun for a in ATTRIBUTES) + ") (?:up|down)"
P_FOLLOW, P_HABIT = 0.1, 0.5


# ---------------------------------------------------------------- the writer's imperfect plans


def intent(attribute: str, direction: int) -> str:
    """The writer's first output: what the request asks for, in two words ("disc up", "dot down")."""
    return f"{BY_NAME[attribute].noun} {'up' if direction > 0 else 'down'}"


def plan(attribute: Attribute, direction: int, rng: random.Random, p_synonym: float = 0.5) -> str:
    """A plan as the base writer learned to write them for an intent: three distinct levels in its order
    (`P_FOLLOW`), or ascending whatever the intent (`P_HABIT`), else three random levels."""
    draw = rng.random()
    if draw < P_FOLLOW + P_HABIT:
        levels = sorted(rng.sample(range(5), 3), reverse=draw < P_FOLLOW and direction < 0)
    else:
        levels = [rng.randrange(5) for _ in range(3)]
    return "\n".join(caption(attribute, level, rng.random() < p_synonym) for level in levels)


# ---------------------------------------------------------------- the painter's renderings


def render(attribute: Attribute, level: float, rng: np.random.Generator) -> Image.Image:
    """A 16x16 grayscale image of an attribute at a (continuous) level in [0, 4]."""
    level = float(np.clip(level, -0.4, 4.4))
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    if attribute.name == "light":
        pixels = np.full((SIZE, SIZE), 0.1 + 0.2 * level) + rng.normal(0, 0.02, (SIZE, SIZE))
    else:
        cy = 7.5 + rng.uniform(-0.75, 0.75)
        if attribute.name == "size":  # the disc's area, not its radius, grows evenly with the level
            area = 0.04 + 0.1 * max(level, -0.3)
            cx, radius = 7.5 + rng.uniform(-0.75, 0.75), float(np.sqrt(area * SIZE * SIZE / np.pi))
        else:
            cx, radius = 2.5 + 2.5 * level, 2.0
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        pixels = np.where(inside, 0.9, 0.08)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), mode="L")


def painting(text: str, rng: np.random.Generator) -> Image.Image:
    """A training image for a caption, imperfect as the painter's data was: a synonym, or the middle
    level, is rendered one level off (either way; inwards at the ends) some of the time."""
    attribute, level, synonym = caption_of(text)
    off = SYNONYM_OFF if synonym else MIDDLE_OFF if level == 2 else 0.0
    if rng.random() < off:
        level = level + (1 if level == 0 else -1 if level == 4 else rng.choice([-1, 1]))
    return render(attribute, level + rng.normal(0, JITTER), rng)


def captions() -> list[str]:
    return [caption(a, level, s) for a in ATTRIBUTES for level in range(5) for s in (False, True)]


def corpus() -> list[str]:
    """Every text the task uses: for training the tokenizers."""
    texts = [
        PROMPT.format(request=p + r)
        for a in ATTRIBUTES
        for r in a.up + a.down
        for p in (*PREFIXES, HELD_OUT_PREFIX)
    ]
    texts += [PLAN_PROMPT.format(intent=intent(a.name, d)) for a in ATTRIBUTES for d in (1, -1)]
    return texts + captions() + ["\n".join(captions())]
