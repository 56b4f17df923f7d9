"""What a model says it was trained for (``lay2story.json``'s ``"trained_for"``), and the one warning a story that
asks for something else gets.

A model folder may declare the frame size it was trained at and, for a model with a closed vocabulary (the
ShapeStory demo), the words its captions use::

    "trained_for": {"width": 64, "height": 64, "vocabulary": ["a", "an", "at", ...]}

A story asking for another size, or whose captions (identities, frame prompts, subject captions, the negative
prompt) use other words, samples as asked but gets one warning line naming the size or the words (the pipeline
logs it; the CLI prints it, the sampler node shows it too). A model without the declaration gets no warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ..story import Story
from ..text import caption_words

logger = logging.getLogger(__name__)

__all__ = ["TrainedFor", "story_texts"]

NAMED_WORDS = 8  # a warning names this many unknown words, then counts the rest


def story_texts(story: Story, negative_prompt: str | None = None) -> list[str]:
    """Every caption text of ``story`` the model reads: identities, frame prompts, subject captions and the negative
    prompt (``None``: the story's)."""
    texts = [c.identity for c in story.characters] + [f.prompt for f in story.frames]
    texts += [s.caption for f in story.frames for s in f.subjects if s.caption]
    texts.append(story.negative_prompt if negative_prompt is None else negative_prompt)
    return texts


def _positive_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}: expected a positive integer (pixels), got {value!r}")
    return value


@dataclass(frozen=True)
class TrainedFor:
    """A model's declaration: its training frame size (``width`` and ``height`` in pixels, both or neither) and
    vocabulary (``None``: open, as any T5 model's)."""

    width: int | None = None
    height: int | None = None
    vocabulary: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError(f"trained_for: width and height go together, got width {self.width!r} and height "
                             f"{self.height!r}")
        if self.width is not None:
            _positive_int(self.width, "trained_for.width")
            _positive_int(self.height, "trained_for.height")
        if self.vocabulary is not None:
            words = self.vocabulary
            if isinstance(words, str) or not all(isinstance(w, str) and w for w in words):
                raise ValueError(f"trained_for.vocabulary: expected a list of words, got {words!r}")
            object.__setattr__(self, "vocabulary", tuple(sorted(set(words))))

    @classmethod
    def from_dict(cls, data: object, where: str = "trained_for") -> TrainedFor:
        """The manifest's object; ``ValueError`` naming the field and the value."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        unknown = sorted(set(data) - {"width", "height", "vocabulary"})
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected width, height, vocabulary)")
        vocabulary = data.get("vocabulary")
        if vocabulary is not None and not isinstance(vocabulary, list):
            raise ValueError(f"{where}.vocabulary: expected a list of words, got {vocabulary!r}")
        return cls(data.get("width"), data.get("height"), None if vocabulary is None else tuple(vocabulary))

    def to_dict(self) -> dict:
        data: dict = {}
        if self.width is not None:
            data.update(width=self.width, height=self.height)
        if self.vocabulary is not None:
            data["vocabulary"] = list(self.vocabulary)
        return data

    def unknown_words(self, texts: Iterable[str]) -> list[str]:
        """The words of ``texts`` outside the vocabulary, each once, in order of appearance (none for an open
        vocabulary)."""
        if self.vocabulary is None:
            return []
        known = set(self.vocabulary)
        return list(dict.fromkeys(w for text in texts for w in caption_words(text) if w not in known))

    def warning(self, story: Story, width: int | None = None, height: int | None = None,
                negative_prompt: str | None = None, model: str | None = None) -> str | None:
        """One line saying what of ``story`` (at ``width`` x ``height``, default the story's size) lies outside
        this declaration: the size asked and trained, the unknown words (the first :data:`NAMED_WORDS` and how
        many in all); ``None`` when nothing does."""
        width, height = width or story.width, height or story.height
        problems = []
        if self.width is not None and (width, height) != (self.width, self.height):
            problems.append(f"it asks for {width}x{height} px, the model was trained at {self.width}x{self.height} px")
        unknown = self.unknown_words(story_texts(story, negative_prompt))
        if unknown:
            named = ", ".join(repr(w) for w in unknown[:NAMED_WORDS])
            more = f" and {len(unknown) - NAMED_WORDS} more" if len(unknown) > NAMED_WORDS else ""
            problems.append(f"{len(unknown)} of its words are not in the model's vocabulary: {named}{more}")
        if not problems:
            return None
        who = f"model {model!r}" if model else "the model"
        return f"{who} was not trained for this story: {'; '.join(problems)}; expect noise"
