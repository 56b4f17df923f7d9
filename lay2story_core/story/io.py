"""Story files and the one parsing entry point for nodes and the CLI."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ..fileio import write_text_atomic
from .errors import LayoutError
from .fields import show
from .jsontext import JSON_PATH
from .layout import Layout
from .story import Story

__all__ = ["load_story", "parse_layout", "parse_story", "save_story", "write_text_atomic"]

logger = logging.getLogger(__name__)


def load_story(path: str | os.PathLike, **limits: int) -> Story:
    """Reads and validates a story file. Relative image paths in it are made absolute against the file's folder.

    Missing, unreadable or invalid files raise :class:`LayoutError` whose path starts with the file name.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as err:
        raise LayoutError(name, "story file not found", name) from err
    except OSError as err:  # a folder, no permission, ...
        raise LayoutError(name, f"cannot read story file: {err.strerror or err}", name) from err
    try:
        story = Story.from_json(data, **limits)
    except LayoutError as err:
        where = name if err.path == JSON_PATH else f"{name}: {err.path}"
        raise LayoutError(where, err.detail, err.value) from err
    return story.resolve_paths(os.path.dirname(os.path.abspath(name)))


def save_story(story: Story, path: str | os.PathLike) -> None:
    """Writes ``story`` as JSON, atomically. Absolute image paths inside the file's folder are written relative to
    it (so the folder can move); others are kept as they are."""
    if not isinstance(story, Story):
        raise LayoutError("story", f"expected a Story, got {show(story)}", story)
    name = os.fspath(path)
    story = story.relativize_paths(os.path.dirname(os.path.abspath(name)))
    write_text_atomic(name, story.to_json(indent=2) + "\n")
    logger.debug("saved story of %d frames to %s", story.num_frames, name)


def parse_story(obj: object, **limits: int) -> Story:
    """One entry point for nodes and the CLI: a :class:`Story` (checked against the limits), a dict (its JSON form),
    JSON text, or a :class:`pathlib.Path` to a story file."""
    if isinstance(obj, Story):
        Story.from_dict(obj.to_dict(), **limits)  # the limits (frames, text lengths) apply to built stories too
        return obj
    if isinstance(obj, Mapping):
        return Story.from_dict(obj, **limits)
    if isinstance(obj, (str, bytes, bytearray)):
        return Story.from_json(obj, **limits)
    if isinstance(obj, Path):
        return load_story(obj, **limits)
    raise LayoutError(
        "story", f"expected a Story, a dict, JSON text or a pathlib.Path, got {show(obj)}", obj)


def parse_layout(obj: object, **limits: int) -> Layout:
    """A :class:`Layout`, its dict form or JSON text (e.g. the layout editor widget's string)."""
    if isinstance(obj, Layout):
        return obj
    if isinstance(obj, Mapping):
        return Layout.from_dict(obj, **limits)
    if isinstance(obj, (str, bytes, bytearray)):
        return Layout.from_json(obj, **limits)
    raise LayoutError("layout", f"expected a Layout, a dict or JSON text, got {show(obj)}", obj)
