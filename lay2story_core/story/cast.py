"""A cast: the story's characters, added one at a time (the ComfyUI character nodes chain one), with their
in-memory reference pictures; and a story built from a cast and frame lines (:func:`story_from_lines`).

A character's reference lives where every story keeps it: :attr:`Character.reference` (its box in the picture) and,
for a picture that is not a file, :attr:`Story.reference_images`, which the pipeline reads like a reference path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .errors import LayoutError
from .fields import DEFAULT_MAX_FRAMES, SCHEMA_VERSION, item, require_list, show
from .frame_lines import parse_frame_line
from .schema import Character
from .story import Story, check_reference_images

__all__ = ["Cast", "frame_dicts", "story_from_lines"]


@dataclass(frozen=True)
class Cast:
    """Characters in the order they were added (ids unique) and ``(id, picture)`` pairs for those whose reference
    picture is in memory (see :attr:`Story.reference_images`). Immutable: :meth:`add` returns a new cast."""

    characters: tuple[Character, ...] = ()
    reference_images: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        characters = tuple(require_list(self.characters, "cast.characters", "a sequence of Character"))
        seen: dict[str, int] = {}
        for k, character in enumerate(characters):
            if not isinstance(character, Character):
                raise LayoutError(item("cast.characters", k), f"expected a Character, got {show(character)}",
                                  character)
            if character.id in seen:
                raise LayoutError(item("cast.characters", k), f"duplicate character id {character.id!r} "
                                  f"(also cast.characters[{seen[character.id]}])", character.id)
            seen[character.id] = k
        object.__setattr__(self, "characters", characters)
        object.__setattr__(self, "reference_images", check_reference_images(self.reference_images, characters))

    @property
    def character_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.characters)

    def add(self, character: Character, image: object | None = None) -> Cast:
        """This cast with ``character`` appended (and its in-memory reference ``image``, if any). An id already in
        the cast raises a :class:`LayoutError` at ``"character_id"`` naming it and the cast so far."""
        if not isinstance(character, Character):
            raise LayoutError("character", f"expected a Character, got {show(character)}", character)
        if character.id in self.character_ids:
            raise LayoutError("character_id", f"{character.id!r} is already in the cast (so far: "
                              f"{', '.join(map(repr, self.character_ids))}); give each character its own id",
                              character.id)
        images = self.reference_images if image is None else (*self.reference_images, (character.id, image))
        return Cast((*self.characters, character), images)


def frame_dicts(lines: Sequence[str], character_ids: Sequence[str], *,
                list_everyone: bool = True) -> list[dict]:
    """The JSON form of one frame per line (:func:`~.frame_lines.parse_frame_line`): a ``[..]`` prefix's characters
    become the frame's subjects (no boxes). A line without a prefix lists every character when ``list_everyone``
    (so a layout that places some of them later keeps the others in the frame), else no subjects (the schema's
    "every character"). Errors are :class:`LayoutError` s at ``"line N"`` (N counts from 1)."""
    frames = []
    for k, line in enumerate(lines):
        ids, prompt = parse_frame_line(line, character_ids, path=f"line {k + 1}")
        if ids is None:
            ids = tuple(character_ids) if list_everyone else ()
        frames.append({"prompt": prompt, "subjects": [{"character": cid} for cid in ids]})
    return frames


def story_from_lines(characters: Sequence[Character | dict], lines: Sequence[str], *, width: int = 512,
                     height: int = 512, negative_prompt: str = "", reference_images: object = (),
                     list_everyone: bool = True, max_frames: int = DEFAULT_MAX_FRAMES) -> Story:
    """A story of ``characters`` (:class:`Character` s or their JSON form) with one frame per line (see
    :func:`frame_dicts`), validated as a story file is (``Story.from_dict``: lengths, ids, sizes). Errors are
    :class:`LayoutError` s: at ``"line N"`` for a line's prefix, else at their field path (``characters[0].id``,
    ``frames[2].prompt``, ``width``, ``lines`` for no or too many lines)."""
    chars = [c if isinstance(c, Character) else Character.from_dict(c, path=item("characters", k))
             for k, c in enumerate(require_list(characters, "characters", "a sequence of characters"))]
    lines = require_list(lines, "lines", "a sequence of lines")
    if not lines:
        raise LayoutError("lines", "no frame; write one prompt per line", [])
    if len(lines) > max_frames:
        raise LayoutError("lines", f"{len(lines)} frames exceed the limit of {max_frames}", len(lines))
    data = {"version": SCHEMA_VERSION, "width": width, "height": height, "negative_prompt": negative_prompt,
            "characters": [c.to_dict() for c in chars],
            "frames": frame_dicts(lines, [c.id for c in chars], list_everyone=list_everyone)}
    return replace(Story.from_dict(data, max_frames=max_frames), reference_images=reference_images)
