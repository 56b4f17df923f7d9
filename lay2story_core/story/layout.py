"""The layout editor's document: per-frame subjects (character, box, caption), optional per-frame dialogue lines
and no prompts.

JSON form (version 2; version-1 layouts, which have no dialogue, read unchanged)::

    {"version": 2, "characters": ["hero", "villain"],
     "frames": [{"subjects": [{"character": "hero", "box": [0.1, 0.2, 0.5, 0.9], "caption": "..."}],
                 "dialogue": [{"text": "Run!", "speaker": "hero", "style": "shout"}, {"text": "Later..."}]},
                {"subjects": []}]}

``characters`` are the ids the editor's picker offers. Subjects follow the story's rules (boxes, captions, one
subject per character per frame); dialogue lines the story's (:class:`DialogueLine`). Whether character ids and
speakers exist is checked only when the layout is applied to a story (:meth:`Story.apply_layout`). A frame without
a ``"dialogue"`` key keeps the story's lines when applied; with one (even ``[]``) it replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import jsontext
from .errors import LayoutError
from .fields import (
    DEFAULT_MAX_CAPTION_CHARS,
    DEFAULT_MAX_FRAMES,
    DIALOGUE_VERSION,
    SCHEMA_VERSION,
    check_keys,
    check_limits,
    check_version_has,
    item,
    join,
    parse_id,
    parse_int,
    parse_version,
    require_list,
    require_mapping,
    show,
)
from .schema import DialogueLine, Subject, dialogue_tuple, parse_dialogue, parse_subjects, subject_tuple

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


def _dialogue(value: object, count: int, version: int) -> tuple[tuple[DialogueLine, ...] | None, ...]:
    """Per-frame dialogue for direct construction: ``()`` = no frame has any; else one entry per frame."""
    path = join(_ROOT, "dialogue")
    entries = tuple(require_list(value, path, "a sequence of per-frame dialogue (or None)"))
    if not entries:
        return (None,) * count
    if len(entries) != count:
        raise LayoutError(path, f"has {len(entries)} entries for {count} frames", len(entries))
    out = []
    for i, lines in enumerate(entries):
        frame_path = join(item(join(_ROOT, "frames"), i), "dialogue")
        if lines is not None:
            check_version_has(version, DIALOGUE_VERSION, frame_path, "dialogue")
        out.append(None if lines is None else dialogue_tuple(lines, frame_path))
    return tuple(out)


@dataclass(frozen=True)
class Layout:
    """Per-frame subjects and dialogue, as edited in the layout editor. ``frames[i]`` is frame i's subject tuple;
    ``dialogue[i]`` frame i's dialogue lines, or ``None`` when the layout leaves that frame's lines to the story
    (given as ``()`` it means ``None`` for every frame). ``version`` is checked like :attr:`Story.version` and
    always held as :data:`SCHEMA_VERSION`."""

    frames: tuple[tuple[Subject, ...], ...]
    characters: tuple[str, ...] = ()
    version: int = SCHEMA_VERSION
    dialogue: tuple[tuple[DialogueLine, ...] | None, ...] = ()

    def __post_init__(self) -> None:
        frames_path = join(_ROOT, "frames")
        frames = tuple(
            subject_tuple(frame, join(item(frames_path, i), "subjects"))
            for i, frame in enumerate(require_list(self.frames, frames_path, "a sequence of frames"))
        )
        version = parse_version(self.version, join(_ROOT, "version"))
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "characters", _character_ids(self.characters, join(_ROOT, "characters")))
        object.__setattr__(self, "dialogue", _dialogue(self.dialogue, len(frames), version))
        object.__setattr__(self, "version", SCHEMA_VERSION)

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
        version = parse_version(data["version"], join(_ROOT, "version"))
        frames_path = join(_ROOT, "frames")
        raw_frames = require_list(data["frames"], frames_path, "a list of frames")
        if len(raw_frames) > max_frames:
            raise LayoutError(frames_path, f"{len(raw_frames)} frames exceed the limit of {max_frames}",
                              len(raw_frames))
        frames, dialogue = [], []
        for i, raw in enumerate(raw_frames):
            path = item(frames_path, i)
            raw = require_mapping(raw, path)
            check_keys(raw, path, (), ("subjects", "dialogue"), root=_ROOT)
            frames.append(parse_subjects(raw.get("subjects"), join(path, "subjects"),
                                         max_caption_chars=max_caption_chars))
            if "dialogue" in raw:
                check_version_has(version, DIALOGUE_VERSION, join(path, "dialogue"), "dialogue", raw["dialogue"])
                if raw["dialogue"] is None:
                    raise LayoutError(join(path, "dialogue"), f"expected a list of dialogue lines, got "
                                      f"{show(None)} (leave the key out to keep the story's lines)", None)
                dialogue.append(parse_dialogue(raw["dialogue"], join(path, "dialogue"),
                                               max_caption_chars=max_caption_chars))
            else:
                dialogue.append(None)
        raw_chars = data.get("characters")
        characters = () if raw_chars is None else _character_ids(raw_chars, join(_ROOT, "characters"))
        return cls(frames=tuple(frames), characters=characters, dialogue=tuple(dialogue))

    def to_dict(self) -> dict:
        frames = []
        for subjects, lines in zip(self.frames, self.dialogue):
            frame: dict = {"subjects": [s.to_dict() for s in subjects]}
            if lines is not None:
                frame["dialogue"] = [line.to_dict() for line in lines]
            frames.append(frame)
        return {"version": self.version, "characters": list(self.characters), "frames": frames}

    @classmethod
    def from_json(cls, text: str, **limits: int) -> Layout:
        return cls.from_dict(jsontext.loads(text), **limits)

    def to_json(self, indent: int | None = 2) -> str:
        return jsontext.dumps(self.to_dict(), indent=indent)
