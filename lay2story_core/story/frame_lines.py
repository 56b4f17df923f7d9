"""Frame lines: one frame per line of text, with an optional ``[id, id2]`` prefix saying who is in the frame.

::

    [hero, cat] on the grass      -> prompt "on the grass", subjects hero and cat (no boxes)
    in the sky                    -> prompt "in the sky", every character (no prefix)

What the story node's ``frame_prompts`` box holds, and what the CLI or the Python API can parse the same way. A
prefix lists at least one known character id, each once, separated by commas; only a leading ``[`` starts one.

:func:`merge_layout_subjects` is how a drawn layout combines with such a frame (:meth:`Story.apply_layout`): the
layout places characters; characters a frame only names (no box, no caption) stay in it unless the layout places
them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import LayoutError
from .fields import parse_id, parse_text
from .schema import Subject

__all__ = ["FrameLine", "merge_layout_subjects", "parse_frame_line", "presence_only"]


def _known(character_ids: Sequence[str]) -> str:
    return ", ".join(map(repr, character_ids))


FrameLine = tuple[tuple[str, ...] | None, str]


def parse_frame_line(line: object, character_ids: Sequence[str], path: str = "line") -> FrameLine:
    """``(ids, prompt)`` of one frame line: the prefix's character ids in the order written (``None``: no prefix,
    i.e. every character) and the prompt after it (stripped, non-empty).

    Every problem is a :class:`LayoutError` at ``path`` naming the bad part: an unknown id (with the known ones), a
    repeated id, an empty ``[]``, a ``[`` without its ``]``, brackets inside the prefix, a second prefix, no prompt.
    """
    if not isinstance(line, str):
        raise LayoutError(path, f"expected text, got {type(line).__name__}", line)
    text = line.strip()
    if not text.startswith("["):
        return None, parse_text(text, path)
    end = text.find("]")
    if end < 0:
        raise LayoutError(path, f"'[' without a closing ']' in {text[:60]!r}; write e.g. '[hero, cat] on the grass'",
                          line)
    inside, prompt = text[1:end], text[end + 1:].strip()
    if "[" in inside:
        raise LayoutError(path, f"'[' inside the character list {text[:end + 1]!r}; write e.g. '[hero, cat] ...'",
                          line)
    if prompt.startswith("["):
        raise LayoutError(path, f"a second [...] after {text[:end + 1]!r}: list every character in one prefix, "
                          "e.g. '[hero, cat] on the grass'", line)
    names = [name.strip() for name in inside.split(",")]
    if names == [""]:
        raise LayoutError(path, "empty character list '[]': name who is in the frame, e.g. '[hero]', or leave the "
                          "brackets out for every character", line)
    ids: list[str] = []
    for k, name in enumerate(names):
        if not name:
            raise LayoutError(path, f"empty name at position {k + 1} in {text[:end + 1]!r}", line)
        char_id = parse_id(name, path)
        if char_id not in character_ids:
            raise LayoutError(path, f"unknown character {char_id!r} (known: {_known(character_ids)})", char_id)
        if char_id in ids:
            raise LayoutError(path, f"character {char_id!r} is named twice in {text[:end + 1]!r}", char_id)
        ids.append(char_id)
    if not prompt:
        raise LayoutError(path, f"no prompt after {text[:end + 1]!r}: write what happens, e.g. "
                          f"'{text[:end + 1]} on the grass'", line)
    return tuple(ids), prompt


def presence_only(subject: Subject) -> bool:
    """A subject that only says its character is in the frame: no box, no caption."""
    return subject.box is None and subject.caption is None


def merge_layout_subjects(frame_subjects: Sequence[Subject],
                          layout_subjects: Sequence[Subject]) -> tuple[Subject, ...]:
    """A frame's subjects once a layout frame is applied: the layout's subjects (in its order), then the frame's
    presence-only subjects (named by a frame line's prefix) whose characters the layout does not place.

    Subjects with a box or a caption are the story's own layout and are replaced (as before); with no presence-only
    subjects the result is exactly ``layout_subjects``.
    """
    placed = {s.character for s in layout_subjects}
    kept = tuple(s for s in frame_subjects if presence_only(s) and s.character not in placed)
    return (*layout_subjects, *kept)
