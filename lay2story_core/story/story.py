"""The story: characters + frames + size, its JSON form, and the layout-toggle rules (in :meth:`Story.resolve_frame`
and nowhere else)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import jsontext
from .errors import LayoutError
from .fields import (
    DEFAULT_MAX_CAPTION_CHARS,
    DEFAULT_MAX_FRAMES,
    DIALOGUE_VERSION,
    FULL_FRAME,
    SCHEMA_VERSION,
    check_keys,
    check_limits,
    check_version_has,
    item,
    join,
    parse_int,
    parse_size,
    parse_text,
    parse_version,
    require_list,
    require_mapping,
    show,
)
from .frame_lines import merge_layout_subjects
from .layout import Layout
from .schema import Character, DialogueLine, Frame, ResolvedSubject, Subject

__all__ = ["Story"]

_ROOT = "story"


def _typed_tuple(value: object, path: str, cls: type, what: str) -> tuple:
    items = tuple(require_list(value, path, f"a sequence of {cls.__name__}"))
    if not items:
        raise LayoutError(path, f"must list at least one {what}", value)
    for k, obj in enumerate(items):
        if not isinstance(obj, cls):
            raise LayoutError(item(path, k), f"expected a {cls.__name__}, got {show(obj)}", obj)
    return items


def _map_image_paths(story: Story, fn) -> Story:
    """Copy of ``story`` with ``fn`` applied to every (non-None) reference and frame image path."""
    characters = tuple(
        c if c.reference is None or c.reference.image is None
        else dataclasses.replace(c, reference=dataclasses.replace(c.reference, image=fn(c.reference.image)))
        for c in story.characters
    )
    frames = tuple(f if f.image is None else dataclasses.replace(f, image=fn(f.image)) for f in story.frames)
    return dataclasses.replace(story, characters=characters, frames=frames)


def _check_speakers(lines: tuple[DialogueLine, ...], path: str, known: dict[str, int], word: str) -> None:
    """Every line's speaker (``None`` = narration) is one of the story's character ids."""
    for k, line in enumerate(lines):
        if line.speaker is not None and line.speaker not in known:
            names = ", ".join(map(repr, known))
            raise LayoutError(f"{item(path, k)}.speaker", f"unknown character {line.speaker!r} ({word}: {names})",
                              line.speaker)


def check_reference_images(value: object, characters: tuple[Character, ...]) -> tuple[tuple[str, object], ...]:
    """:attr:`Story.reference_images` as ``(id, image)`` pairs in character order; each id names a character whose
    reference has a box (or the whole picture) but no image path."""
    pairs = tuple(value.items()) if isinstance(value, Mapping) else tuple(require_list(
        value, "reference_images", "a mapping or (character id, image) pairs"))
    images: dict[str, object] = {}
    for k, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
            raise LayoutError(item("reference_images", k), f"expected a (character id, image) pair, got {show(pair)}",
                              pair)
        char_id, image = pair
        character = next((c for c in characters if c.id == char_id), None)
        if character is None:
            raise LayoutError(item("reference_images", k), f"unknown character {char_id!r} (known: "
                              f"{', '.join(repr(c.id) for c in characters)})", char_id)
        if character.reference is None or character.reference.image is not None or image is None:
            raise LayoutError(item("reference_images", k), f"character {char_id!r} needs a reference without an "
                              "image path (Reference(box=...)) and a picture here", char_id)
        if char_id in images:
            raise LayoutError(item("reference_images", k), f"a second picture for {char_id!r}", char_id)
        images[char_id] = image
    return tuple((c.id, images[c.id]) for c in characters if c.id in images)


@dataclass(frozen=True)
class Story:
    """A validated story. Construct it directly, or parse it with :meth:`from_dict` / :meth:`from_json`.

    ``version`` is the schema version the data was written for: any version this code reads (1 or 2; dialogue
    lines need 2). Older data reads unchanged, so a built story always holds (and writes) :data:`SCHEMA_VERSION`.

    ``reference_images``: in-memory reference pictures (a tensor, PIL image, ... as the pipeline takes them) of
    characters whose :attr:`Character.reference` has no image path (its box says where the character is in the
    picture); given as a mapping or ``(id, image)`` pairs, held as pairs in character order. Not part of the JSON
    form nor of ``==`` (what a cast built in ComfyUI carries to the sampler, like a ``--reference`` of the CLI).
    """

    characters: tuple[Character, ...]
    frames: tuple[Frame, ...]
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    version: int = SCHEMA_VERSION
    reference_images: tuple[tuple[str, object], ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        characters = _typed_tuple(self.characters, "characters", Character, "character")
        frames = _typed_tuple(self.frames, "frames", Frame, "frame")
        index: dict[str, int] = {}
        for k, character in enumerate(characters):
            if character.id in index:
                raise LayoutError(
                    join(item("characters", k), "id"),
                    f"duplicate character id {character.id!r} (also characters[{index[character.id]}])",
                    character.id,
                )
            index[character.id] = k
        version = parse_version(self.version, "version")
        for i, frame in enumerate(frames):
            for k, subject in enumerate(frame.subjects):
                if subject.character not in index:
                    raise LayoutError(
                        f"frames[{i}].subjects[{k}].character",
                        f"unknown character {subject.character!r} (known: {', '.join(map(repr, index))})",
                        subject.character,
                    )
            if frame.dialogue:
                check_version_has(version, DIALOGUE_VERSION, f"frames[{i}].dialogue", "dialogue")
            _check_speakers(frame.dialogue, f"frames[{i}].dialogue", index, "known")
        for name, value in (
            ("characters", characters),
            ("frames", frames),
            ("width", parse_size(self.width, "width")),
            ("height", parse_size(self.height, "height")),
            ("negative_prompt", parse_text(self.negative_prompt, "negative_prompt", allow_empty=True)),
            # an older version's data reads unchanged in this one: the story is upgraded (to_dict writes it)
            ("version", SCHEMA_VERSION),
            ("reference_images", check_reference_images(self.reference_images, characters)),
        ):
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------------------------------- JSON form
    @classmethod
    def from_dict(cls, data: object, *, max_frames: int = DEFAULT_MAX_FRAMES,
                  max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> Story:
        """Parses and validates the JSON form; every problem raises :class:`LayoutError` naming field and value."""
        max_frames, max_caption_chars = check_limits(max_frames, max_caption_chars)
        data = require_mapping(data, _ROOT)
        if "version" in data:  # a newer file fails on its version, not on the keys it added
            parse_version(data["version"], "version")
        check_keys(data, "", ("version", "characters", "frames"), ("width", "height", "negative_prompt"), root=_ROOT)
        version = parse_version(data["version"], "version")
        raw_chars = require_list(data["characters"], "characters", "a list of characters")
        if not raw_chars:
            raise LayoutError("characters", "must list at least one character", raw_chars)
        characters = tuple(
            Character.from_dict(raw, path=item("characters", k), max_caption_chars=max_caption_chars)
            for k, raw in enumerate(raw_chars)
        )
        raw_frames = require_list(data["frames"], "frames", "a list of frames")
        if not raw_frames:
            raise LayoutError("frames", "must list at least one frame", raw_frames)
        if len(raw_frames) > max_frames:
            raise LayoutError("frames", f"{len(raw_frames)} frames exceed the limit of {max_frames}", len(raw_frames))
        for i, raw in enumerate(raw_frames):  # an old file using a newer field fails naming it, before anything else
            if isinstance(raw, Mapping) and "dialogue" in raw:
                check_version_has(version, DIALOGUE_VERSION, join(item("frames", i), "dialogue"), "dialogue",
                                  raw["dialogue"])
        frames = tuple(
            Frame.from_dict(raw, path=item("frames", i), max_caption_chars=max_caption_chars)
            for i, raw in enumerate(raw_frames)
        )
        negative = data.get("negative_prompt")
        return cls(
            characters=characters,
            frames=frames,
            width=parse_size(data.get("width", 512), "width"),
            height=parse_size(data.get("height", 512), "height"),
            negative_prompt="" if negative is None else parse_text(
                negative, "negative_prompt", max_chars=max_caption_chars, allow_empty=True),
        )

    def to_dict(self) -> dict:
        """The JSON form; ``Story.from_dict(s.to_dict()) == s``."""
        return {
            "version": self.version,
            "width": self.width,
            "height": self.height,
            "negative_prompt": self.negative_prompt,
            "characters": [c.to_dict() for c in self.characters],
            "frames": [f.to_dict() for f in self.frames],
        }

    @classmethod
    def from_json(cls, text: str, **limits: int) -> Story:
        """Parses JSON text; syntax errors raise ``LayoutError("<json>: invalid JSON at line L column C: ...")``."""
        return cls.from_dict(jsontext.loads(text), **limits)

    def to_json(self, indent: int | None = 2) -> str:
        return jsontext.dumps(self.to_dict(), indent=indent)

    # ------------------------------------------------------------------------------------------------- queries
    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def character_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.characters)

    def character_index(self, character_id: str) -> int:
        for k, character in enumerate(self.characters):
            if character.id == character_id:
                return k
        raise LayoutError("character_id", f"unknown character {character_id!r} (known: "
                          f"{', '.join(map(repr, self.character_ids))})", character_id)

    def character(self, character_id: str) -> Character:
        return self.characters[self.character_index(character_id)]

    def _frame(self, frame_index: int) -> Frame:
        index = parse_int(frame_index, "frame_index", minimum=0)
        if index >= len(self.frames):
            raise LayoutError("frame_index", f"{index} is out of range for a story of {len(self.frames)} frames",
                              frame_index)
        return self.frames[index]

    def present_characters(self, frame_index: int) -> tuple[Character, ...]:
        """The characters in a frame, in story order (all of them when the frame lists no subjects)."""
        frame = self._frame(frame_index)
        if not frame.subjects:
            return self.characters
        present = {s.character for s in frame.subjects}
        return tuple(c for c in self.characters if c.id in present)

    def global_caption(self, frame_index: int, without: Sequence[str] = ()) -> str:
        """StoryDiffusion-style "identity + frame prompt": the present characters' identities, in story order,
        joined with ", ", then ", " and the frame prompt. ``without``: character ids left out (the caption as if
        they were not in the frame)."""
        identities = [c.identity for c in self.present_characters(frame_index) if c.id not in without]
        return ", ".join([*identities, self.frames[frame_index].prompt])

    def resolve_frame(self, frame_index: int, *, boxes: bool = True,
                      captions: bool = True) -> tuple[ResolvedSubject, ...]:
        """The layout-toggle rules, in one place.

        - A frame with no subjects: every character is present, full-frame box, global caption (layout off).
        - A subject with no box, or ``boxes=False``: :data:`FULL_FRAME` and ``has_box=False``.
        - A subject with no caption, or ``captions=False``: the frame's global caption and ``has_caption=False``.

        Listed subjects keep the frame's order; filled-in ones follow the story's character order.
        """
        frame = self._frame(frame_index)
        caption = self.global_caption(frame_index)
        subjects = frame.subjects or tuple(Subject(c.id) for c in self.characters)
        out = []
        for subject in subjects:
            has_box = boxes and subject.box is not None
            has_caption = captions and subject.caption is not None
            out.append(ResolvedSubject(
                character=subject.character,
                character_index=self.character_index(subject.character),
                box=subject.box if has_box else FULL_FRAME,
                caption=subject.caption if has_caption else caption,
                has_box=bool(has_box),
                has_caption=bool(has_caption),
            ))
        return tuple(out)

    # ------------------------------------------------------------------------------------------------- copies
    def with_layout(self, *, boxes: bool = True, captions: bool = True) -> Story:
        """A copy with every box (``boxes=False``) and/or every subject caption (``captions=False``) dropped."""
        if boxes and captions:
            return self
        frames = tuple(
            dataclasses.replace(frame, subjects=tuple(
                Subject(s.character, s.box if boxes else None, s.caption if captions else None)
                for s in frame.subjects))
            for frame in self.frames
        )
        return dataclasses.replace(self, frames=frames)

    def layout(self) -> Layout:
        """The layout editor's document for this story (every frame's subjects and dialogue lines)."""
        return Layout(frames=tuple(f.subjects for f in self.frames), characters=self.character_ids,
                      dialogue=tuple(f.dialogue for f in self.frames))

    def apply_layout(self, layout: Layout) -> Story:
        """Frame i's subjects become ``layout.frames[i]`` for i < len(layout.frames); later frames keep theirs.
        Subjects of frame i with neither box nor caption (who is in the frame, e.g. a frame line's ``[hero, cat]``
        prefix) stay unless the layout places their character (:func:`~.frame_lines.merge_layout_subjects`).

        Dialogue: a layout frame that has dialogue (``layout.dialogue[i]`` not ``None``, i.e. the JSON frame has a
        ``"dialogue"`` key, even an empty list) replaces that frame's lines; one without keeps the story's lines.
        """
        if not isinstance(layout, Layout):
            raise LayoutError("layout", f"expected a Layout, got {show(layout)}", layout)
        if len(layout.frames) > len(self.frames):
            raise LayoutError("layout.frames", f"has {len(layout.frames)} frames, the story only "
                              f"{len(self.frames)}", len(layout.frames))
        known = {cid: k for k, cid in enumerate(self.character_ids)}
        for i, subjects in enumerate(layout.frames):
            for k, subject in enumerate(subjects):
                if subject.character not in known:
                    raise LayoutError(
                        f"layout.frames[{i}].subjects[{k}].character",
                        f"unknown character {subject.character!r} (the story has: "
                        f"{', '.join(map(repr, self.character_ids))})",
                        subject.character,
                    )
            _check_speakers(layout.dialogue[i] or (), f"layout.frames[{i}].dialogue", known, "the story has")
        frames = []
        for i, frame in enumerate(self.frames):
            if i < len(layout.frames):
                lines = layout.dialogue[i]
                frame = dataclasses.replace(frame, subjects=merge_layout_subjects(frame.subjects, layout.frames[i]),
                                            dialogue=frame.dialogue if lines is None else lines)
            frames.append(frame)
        return dataclasses.replace(self, frames=tuple(frames))

    def resolve_paths(self, base_dir: str | os.PathLike) -> Story:
        """A copy whose relative image paths (references, frame images) are made absolute against ``base_dir``."""
        base = os.path.abspath(os.fspath(base_dir))
        return _map_image_paths(self, lambda p: p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)))

    def relativize_paths(self, base_dir: str | os.PathLike) -> Story:
        """A copy whose absolute image paths inside ``base_dir`` become relative to it (POSIX separators)."""
        base = os.path.abspath(os.fspath(base_dir))

        def rel(p: str) -> str:
            if not os.path.isabs(p):
                return p
            try:
                r = os.path.relpath(p, base)
            except ValueError:  # another drive on Windows
                return p
            if r == os.pardir or r.startswith(os.pardir + os.sep):
                return p
            return r.replace(os.sep, "/")

        return _map_image_paths(self, rel)

