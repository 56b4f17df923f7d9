"""The layout editor's document: per-frame subjects (character, box, caption) and no prompts.

JSON form::

    {"version": 1, "characters": ["hero", "villain"],
     "frames": [{"subjects": [{"character": "hero", "box": [0.1, 0.2, 0.5, 0.9], "caption": "..."}]},
                {"subjects": []}]}

``characters`` are the ids the editor's picker offers. Subjects follow the story's rules (boxes, captions, one
subject per character per frame); whether their character ids exist is checked only when the layout is applied to
a story (:meth:`Story.apply_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import jsontext
from .errors import LayoutError
from .fields import (
    DEFAULT_MAX_CAPTION_CHARS,
    DEFAULT_MAX_FRAMES,
    SCHEMA_VERSION,
    check_keys,
    check_limits,
    item,
    join,
    parse_id,
    parse_int,
    parse_version,
    require_list,
    require_mapping,
)
from .schema import Subject, parse_subjects, subject_tuple

__all__ = ["Layout"]

_ROOT = "layout"


def _character_ids(value: object, path: str) -> tuple[str, ...]:
    ids = tuple(parse_id(raw, item(path, k)) for k, raw in enumerate(require_list(value, path, "a list of ids")))
    seen: dict[str, int] = {}
    for k, cid in enumerate(ids):
        if cid in seen:
            raise LayoutError(item(path, k), f"duplicate character id {cid!r} (also {item(path, seen[cid])})", cid)
        seen[cid] = k
    return ids


@dataclass(frozen=True)
class Layout:
    """Per-frame subjects, as drawn in the layout editor. ``frames[i]`` is frame i's subject tuple."""

    frames: tuple[tuple[Subject, ...], ...]
    characters: tuple[str, ...] = ()
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        frames_path = join(_ROOT, "frames")
        frames = tuple(
            subject_tuple(frame, join(item(frames_path, i), "subjects"))
            for i, frame in enumerate(require_list(self.frames, frames_path, "a sequence of frames"))
        )
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "characters", _character_ids(self.characters, join(_ROOT, "characters")))
        object.__setattr__(self, "version", parse_version(self.version, join(_ROOT, "version")))

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @classmethod
    def empty(cls, num_frames: int, characters: tuple[str, ...] | list[str] = ()) -> Layout:
        """A layout of ``num_frames`` frames with no subjects."""
        count = parse_int(num_frames, "num_frames", minimum=0)
        return cls(frames=((),) * count, characters=tuple(characters))

    @classmethod
    def from_dict(cls, data: object, *, max_frames: int = DEFAULT_MAX_FRAMES,
                  max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> Layout:
        max_frames, max_caption_chars = check_limits(max_frames, max_caption_chars)
        data = require_mapping(data, _ROOT)
        if "version" in data:
            parse_version(data["version"], join(_ROOT, "version"))
        check_keys(data, _ROOT, ("version", "frames"), ("characters",), root=_ROOT)
        frames_path = join(_ROOT, "frames")
        raw_frames = require_list(data["frames"], frames_path, "a list of frames")
        if len(raw_frames) > max_frames:
            raise LayoutError(frames_path, f"{len(raw_frames)} frames exceed the limit of {max_frames}",
                              len(raw_frames))
        frames = []
        for i, raw in enumerate(raw_frames):
            path = item(frames_path, i)
            raw = require_mapping(raw, path)
            check_keys(raw, path, (), ("subjects",), root=_ROOT)
            frames.append(parse_subjects(raw.get("subjects"), join(path, "subjects"),
                                         max_caption_chars=max_caption_chars))
        raw_chars = data.get("characters")
        characters = () if raw_chars is None else _character_ids(raw_chars, join(_ROOT, "characters"))
        return cls(frames=tuple(frames), characters=characters)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "characters": list(self.characters),
            "frames": [{"subjects": [s.to_dict() for s in frame]} for frame in self.frames],
        }

    @classmethod
    def from_json(cls, text: str, **limits: int) -> Layout:
        return cls.from_dict(jsontext.loads(text), **limits)

    def to_json(self, indent: int | None = 2) -> str:
        return jsontext.dumps(self.to_dict(), indent=indent)
