"""The story's building blocks: references, characters, subjects, frames, and the resolved subject.

Each class validates itself on construction (so a hand-built object is as safe as a parsed one) and parses its
JSON form with ``from_dict(data, path=...)``, which adds the JSON-only checks (unknown/missing keys, length limits)
and puts the field path into every error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import LayoutError
from .fields import (
    DEFAULT_MAX_CAPTION_CHARS,
    Box,
    check_keys,
    item,
    join,
    parse_box,
    parse_caption,
    parse_file_path,
    parse_id,
    parse_text,
    require_list,
    require_mapping,
    show,
)

__all__ = ["DIALOGUE_STYLES", "Character", "DialogueLine", "Frame", "Reference", "ResolvedSubject", "Subject",
           "check_unique_subjects", "dialogue_tuple", "parse_dialogue", "parse_subjects", "subject_tuple"]

DIALOGUE_STYLES: tuple[str, ...] = ("speech", "thought", "shout", "caption")
"""How a dialogue line is lettered: a speech bubble, a thought bubble, a shout (spiky) bubble or a caption box."""


def _set(obj: object, **fields: object) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


def _box_list(box: Box | None) -> list[float] | None:
    return None if box is None else list(box)


@dataclass(frozen=True)
class Reference:
    """Where the character's reference image is.

    ``image``: a file path (relative paths resolve against the story file's folder) or ``None`` when the caller
    supplies the image separately (e.g. a ComfyUI IMAGE). ``box``: the character's place in the reference image
    (``None`` = the whole image).
    """

    image: str | None = None
    box: Box | None = None

    def __post_init__(self) -> None:
        _set(self, **self._checked("reference", self.image, self.box))

    @staticmethod
    def _checked(path: str, image: object, box: object) -> dict:
        return {
            "image": parse_file_path(image, join(path, "image")),
            "box": None if box is None else parse_box(box, join(path, "box")),
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "reference") -> Reference:
        data = require_mapping(data, path)
        check_keys(data, path, (), ("image", "box"))
        return cls(**cls._checked(path, data.get("image"), data.get("box")))

    def to_dict(self) -> dict:
        out: dict = {}
        if self.image is not None:
            out["image"] = self.image
        if self.box is not None:
            out["box"] = _box_list(self.box)
        return out


@dataclass(frozen=True)
class Character:
    """A story character: a unique id, its identity text (prepended to every frame prompt it appears in) and an
    optional reference image."""

    id: str
    identity: str
    reference: Reference | None = None

    def __post_init__(self) -> None:
        _set(self, **self._checked("character", self.id, self.identity, self.reference, None))

    @staticmethod
    def _checked(path: str, id: object, identity: object, reference: object, max_chars: int | None) -> dict:
        ref_path = join(path, "reference")
        if reference is not None and not isinstance(reference, Reference):
            raise LayoutError(ref_path, f"expected a Reference or None, got {show(reference)}", reference)
        return {
            "id": parse_id(id, join(path, "id")),
            "identity": parse_text(identity, join(path, "identity"), max_chars=max_chars),
            "reference": reference,
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "character",
                  max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> Character:
        data = require_mapping(data, path)
        check_keys(data, path, ("id", "identity"), ("reference",))
        raw_ref = data.get("reference")
        reference = None if raw_ref is None else Reference.from_dict(raw_ref, path=join(path, "reference"))
        return cls(**cls._checked(path, data["id"], data["identity"], reference, max_caption_chars))

    def to_dict(self) -> dict:
        out: dict = {"id": self.id, "identity": self.identity}
        if self.reference is not None:
            out["reference"] = self.reference.to_dict()
        return out


@dataclass(frozen=True)
class Subject:
    """One character's layout in one frame: its box (normalised xyxy, ``None`` = no box) and its subject caption
    (how it looks there, ``None`` = use the frame's global caption). Whitespace-only captions become ``None``."""

    character: str
    box: Box | None = None
    caption: str | None = None

    def __post_init__(self) -> None:
        _set(self, **self._checked("subject", self.character, self.box, self.caption, None))

    @staticmethod
    def _checked(path: str, character: object, box: object, caption: object, max_chars: int | None) -> dict:
        return {
            "character": parse_id(character, join(path, "character")),
            "box": None if box is None else parse_box(box, join(path, "box")),
            "caption": parse_caption(caption, join(path, "caption"), max_chars=max_chars),
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "subject",
                  max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> Subject:
        data = require_mapping(data, path)
        check_keys(data, path, ("character",), ("box", "caption"))
        return cls(**cls._checked(path, data["character"], data.get("box"), data.get("caption"), max_caption_chars))

    def to_dict(self) -> dict:
        out: dict = {"character": self.character}
        if self.box is not None:
            out["box"] = _box_list(self.box)
        if self.caption is not None:
            out["caption"] = self.caption
        return out


def check_unique_subjects(subjects: Sequence[Subject], path: str) -> None:
    """The same character may appear at most once per frame."""
    seen: dict[str, int] = {}
    for k, subject in enumerate(subjects):
        if subject.character in seen:
            first = item(path, seen[subject.character])
            raise LayoutError(
                join(item(path, k), "character"),
                f"character {subject.character!r} appears twice in this frame (also {first})",
                subject.character,
            )
        seen[subject.character] = k


def parse_subjects(value: object, path: str, *, max_caption_chars: int) -> tuple[Subject, ...]:
    """A frame's subject list from JSON (``None`` = no subjects), with per-subject paths."""
    if value is None:
        return ()
    items = require_list(value, path, "a list of subjects")
    subjects = tuple(
        Subject.from_dict(raw, path=item(path, k), max_caption_chars=max_caption_chars) for k, raw in enumerate(items)
    )
    check_unique_subjects(subjects, path)
    return subjects


def subject_tuple(value: object, path: str) -> tuple[Subject, ...]:
    """Validates an already-built subject sequence (direct construction)."""
    items = require_list(value, path, "a sequence of Subject")
    subjects = tuple(items)
    for k, subject in enumerate(subjects):
        if not isinstance(subject, Subject):
            raise LayoutError(item(path, k), f"expected a Subject, got {show(subject)}", subject)
    check_unique_subjects(subjects, path)
    return subjects


def default_style(speaker: str | None) -> str:
    """A line's style when none is given: ``"speech"`` for a speaker, ``"caption"`` for narration."""
    return "caption" if speaker is None else "speech"


@dataclass(frozen=True)
class DialogueLine:
    """One line of a frame's dialogue: the text (non-empty), who says it (a character id; ``None`` = narration) and
    how it is lettered (one of :data:`DIALOGUE_STYLES`; ``None`` = :func:`default_style`). Whether the speaker is
    one of the story's characters is checked by the story (:class:`Story`, :meth:`Story.apply_layout`)."""

    text: str
    speaker: str | None = None
    style: str | None = None

    def __post_init__(self) -> None:
        _set(self, **self._checked("dialogue_line", self.text, self.speaker, self.style, None))

    @staticmethod
    def _checked(path: str, text: object, speaker: object, style: object, max_chars: int | None) -> dict:
        text = parse_text(text, join(path, "text"), max_chars=max_chars)
        speaker = None if speaker is None else parse_id(speaker, join(path, "speaker"))
        if style is None:
            style = default_style(speaker)
        elif not isinstance(style, str):
            raise LayoutError(join(path, "style"), f"expected a string, got {show(style)}", style)
        elif style not in DIALOGUE_STYLES:
            raise LayoutError(join(path, "style"), f"unknown style {style!r} (allowed: {', '.join(DIALOGUE_STYLES)})",
                              style)
        return {"text": text, "speaker": speaker, "style": style}

    @classmethod
    def from_dict(cls, data: object, *, path: str = "dialogue_line",
                  max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> DialogueLine:
        data = require_mapping(data, path)
        check_keys(data, path, ("text",), ("speaker", "style"))
        return cls(**cls._checked(path, data["text"], data.get("speaker"), data.get("style"), max_caption_chars))

    def to_dict(self) -> dict:
        out: dict = {"text": self.text}
        if self.speaker is not None:
            out["speaker"] = self.speaker
        out["style"] = self.style
        return out


def parse_dialogue(value: object, path: str, *, max_caption_chars: int) -> tuple[DialogueLine, ...]:
    """A frame's dialogue list from JSON (``None`` = no lines), with per-line paths."""
    if value is None:
        return ()
    items = require_list(value, path, "a list of dialogue lines")
    return tuple(DialogueLine.from_dict(raw, path=item(path, k), max_caption_chars=max_caption_chars)
                 for k, raw in enumerate(items))


def dialogue_tuple(value: object, path: str) -> tuple[DialogueLine, ...]:
    """Validates an already-built dialogue sequence (direct construction)."""
    lines = tuple(require_list(value, path, "a sequence of DialogueLine"))
    for k, line in enumerate(lines):
        if not isinstance(line, DialogueLine):
            raise LayoutError(item(path, k), f"expected a DialogueLine, got {show(line)}", line)
    return lines


@dataclass(frozen=True)
class Frame:
    """One frame: its prompt (non-empty), the subjects laid out in it (empty = every character, no layout), an
    optional ground-truth image path (training data, benchmark; same path rules as :attr:`Reference.image`) and its
    dialogue lines (schema version 2; lettered on the comic page, not drawn by the model)."""

    prompt: str
    subjects: tuple[Subject, ...] = ()
    image: str | None = None
    dialogue: tuple[DialogueLine, ...] = ()

    def __post_init__(self) -> None:
        _set(
            self,
            prompt=parse_text(self.prompt, "frame.prompt"),
            subjects=subject_tuple(self.subjects, "frame.subjects"),
            image=parse_file_path(self.image, "frame.image"),
            dialogue=dialogue_tuple(self.dialogue, "frame.dialogue"),
        )

    @classmethod
    def from_dict(cls, data: object, *, path: str = "frame",
                  max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> Frame:
        data = require_mapping(data, path)
        check_keys(data, path, ("prompt",), ("subjects", "image", "dialogue"))
        return cls(
            prompt=parse_text(data["prompt"], join(path, "prompt"), max_chars=max_caption_chars),
            subjects=parse_subjects(data.get("subjects"), join(path, "subjects"), max_caption_chars=max_caption_chars),
            image=parse_file_path(data.get("image"), join(path, "image")),
            dialogue=parse_dialogue(data.get("dialogue"), join(path, "dialogue"), max_caption_chars=max_caption_chars),
        )

    def to_dict(self) -> dict:
        """The JSON form; ``dialogue`` is written only when the frame has lines."""
        out: dict = {"prompt": self.prompt, "subjects": [s.to_dict() for s in self.subjects]}
        if self.image is not None:
            out["image"] = self.image
        if self.dialogue:
            out["dialogue"] = [line.to_dict() for line in self.dialogue]
        return out


@dataclass(frozen=True)
class ResolvedSubject:
    """A subject after the layout-toggle rules (see :meth:`Story.resolve_frame`): always a box and a caption, with
    flags saying whether they were given (``has_box``/``has_caption``) or filled in (full frame / global caption)."""

    character: str
    character_index: int
    box: Box
    caption: str
    has_box: bool
    has_caption: bool

