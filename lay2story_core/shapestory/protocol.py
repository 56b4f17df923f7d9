"""Evaluation protocols on ShapeStory: story sets by character count, and the consistency protocol.

When a story's identity text names every attribute, a good plain model is consistent by itself, so consistency
says nothing about the story mechanism. The consistency protocol therefore writes the identity text in a partial
form (:data:`~.vocab.PARTIAL_FORMS`: "a striped star" without its colour, or only "a character") and measures the
attributes the text leaves out: how often they agree across the story's frames (``attribute_agreement``, pairwise
over frames) and how often they match the character's reference, which shows the whole character
(``reference_match``). A model without a cross-frame path agrees by chance (about 1/9 for colour); 3D attention and
the reference are what can raise them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ..story import Story
from .generator import ShapeStoryConfig, character_look, generate_story, partial_identity_story
from .metrics import identify
from .segment import label_palette
from .vocab import IDENTITY_FORMS, PARTIAL_FORMS

__all__ = ["ProtocolStory", "agreement_with_others", "attribute_agreement", "partial_stories",
           "stories_with_characters"]

ATTRIBUTES = ("colour", "shape", "pattern")


def stories_with_characters(count: int, characters: int, seed: int, split: str,
                            config: ShapeStoryConfig | None = None) -> list[Story]:
    """``count`` stories whose main character has ``characters - 1`` companions in some frames (1, 2 or 3)."""
    if characters not in (1, 2, 3):
        raise ValueError(f"characters: expected 1, 2 or 3, got {characters!r}")
    base = config or ShapeStoryConfig()
    cfg = replace(base, second_character_prob=float(characters >= 2), third_character_prob=float(characters == 3))
    return [generate_story(seed + i, cfg, split) for i in range(count)]


@dataclass(frozen=True)
class ProtocolStory:
    """A story of the consistency protocol: ``truth`` (full texts, what the frames should show) and ``prompt``
    (the same story with the main character's texts in ``form``), which is what the model is given."""

    truth: Story
    prompt: Story
    form: str

    @property
    def unnamed(self) -> tuple[str, ...]:
        named = IDENTITY_FORMS[self.form]
        return tuple(a for a in ATTRIBUTES if a not in named)


def partial_stories(count: int, seed: int, split: str, config: ShapeStoryConfig | None = None,
                    forms: Sequence[str] = PARTIAL_FORMS) -> list[ProtocolStory]:
    """``count`` single-character stories, the character's texts in ``forms`` in turn."""
    out = []
    for i, truth in enumerate(stories_with_characters(count, 1, seed, split, config)):
        form = forms[i % len(forms)]
        out.append(ProtocolStory(truth, partial_identity_story(truth, {"c0": form}), form))
    return out


def _found_attributes(image: Image.Image | np.ndarray, story: Story, frame: int, character: str) -> dict | None:
    subject = next((s for s in story.resolve_frame(frame) if s.character == character), None)
    if subject is None:
        return None
    found = identify(label_palette(np.asarray(image)), subject.box if subject.has_box else None, [])
    return {"colour": found.colour, "shape": found.shape, "pattern": found.pattern}


def attribute_agreement(images: Sequence[Image.Image | np.ndarray], item: ProtocolStory,
                        character: str = "c0") -> dict[str, float | None]:
    """For the attributes ``item``'s prompt leaves out: ``agreement`` (share of pairs of the character's frames
    that show the same value; a frame where the character is not found disagrees with every other) and
    ``reference_match`` (share of frames that show the true value, which the reference shows)."""
    truth = character_look(item.truth, character)
    per_frame = [_found_attributes(im, item.truth, f, character) for f, im in enumerate(images)]
    per_frame = [p for p in per_frame if p is not None]  # frames the character is in
    agree, match = [], []
    for attribute in item.unnamed:
        values = [None if p is None else p[attribute] for p in per_frame]
        want = getattr(truth, attribute)
        match += [float(v == want) for v in values]
        for a in range(len(values)):
            for b in range(a + 1, len(values)):
                agree.append(float(values[a] is not None and values[a] == values[b]))
    return {"agreement": float(np.mean(agree)) if agree else None,
            "reference_match": float(np.mean(match)) if match else None}


def agreement_with_others(images: Sequence[Image.Image | np.ndarray], item: ProtocolStory, frames: Sequence[int],
                          character: str = "c0") -> float | None:
    """For the attributes ``item``'s prompt leaves out: the share of pairs (a frame of ``frames``, a frame not in
    ``frames``) of the character's frames that show the same value, e.g. redone frames against the kept ones of a
    story (a frame where the character is not found disagrees, as in :func:`attribute_agreement`)."""
    found = {f: _found_attributes(im, item.truth, f, character) for f, im in enumerate(images)}
    found = {f: p for f, p in found.items() if p is not None}  # frames the character is in
    ours = [f for f in found if f in set(frames)]
    others = [f for f in found if f not in set(frames)]
    agree = [float(found[a][attribute] is not None and found[a][attribute] == found[b][attribute])
             for attribute in item.unnamed for a in ours for b in others]
    return float(np.mean(agree)) if agree else None
