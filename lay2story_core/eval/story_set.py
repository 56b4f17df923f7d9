"""Benchmark inputs on disk: the prompt-set format, story discovery and the generated-frames folder layout.

Prompt set (a Lay2Story-Bench-like file; the paper's bench has 655 sets of 4/5/6 frames with boxes and subject
captions, not released with code, so we keep its shape)::

    {
      "format": "lay2story-prompt-set",
      "version": 1,
      "name": "mini",
      "description": "...",
      "stories": [
        {"name": "fox_garden", "category": "animals", "story": { ...the project's story schema... }},
        ...
      ]
    }

Story names are folder names of the generated frames: letters, digits, ``_``, ``-`` and ``.``, unique in a set.

Generated frames: ``<generated>/<story name>/frame_000.png``, ``frame_001.png``, ... (``.png``, ``.jpg``,
``.jpeg`` or ``.webp``), exactly one file per story frame. Optional ``<generated>/<story name>/stats.json`` with
``{"seconds": float, "peak_memory_bytes": int}`` from the generator (seconds and peak memory per story).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..story import LayoutError, Story, load_story
from ..story.io import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "FRAME_SUFFIXES",
    "PROMPT_SET_FORMAT",
    "EvalInputError",
    "StoryEntry",
    "find_frame_files",
    "load_generated_frames",
    "load_prompt_set",
    "load_stories",
    "read_generation_stats",
    "save_prompt_set",
]

PROMPT_SET_FORMAT = "lay2story-prompt-set"
PROMPT_SET_VERSION = 1
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_FRAME_RE = re.compile(r"^frame_(\d{3,})$")


class EvalInputError(ValueError):
    """Bad benchmark input (prompt set, generated folders); the message names the file/field and the value."""


@dataclass(frozen=True)
class StoryEntry:
    name: str
    story: Story
    category: str | None = None
    source: str | None = None  # the file it came from

    def to_dict(self) -> dict:
        out: dict = {"name": self.name}
        if self.category is not None:
            out["category"] = self.category
        out["story"] = self.story.to_dict()
        return out


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EvalInputError(f"{where}: story name must match {_NAME_RE.pattern} (a folder name), got {name!r}")
    return name


def _parse_prompt_set(data: dict, source: str) -> tuple[StoryEntry, ...]:
    fmt = data.get("format")
    if fmt != PROMPT_SET_FORMAT:
        raise EvalInputError(f"{source}: format: expected {PROMPT_SET_FORMAT!r}, got {fmt!r}")
    version = data.get("version")
    if version != PROMPT_SET_VERSION:
        raise EvalInputError(f"{source}: version: this code reads {PROMPT_SET_VERSION}, got {version!r}")
    raw = data.get("stories")
    if not isinstance(raw, list) or not raw:
        raise EvalInputError(f"{source}: stories: expected a non-empty list, got {type(raw).__name__}")
    entries, seen = [], {}
    for k, item in enumerate(raw):
        where = f"{source}: stories[{k}]"
        if not isinstance(item, dict):
            raise EvalInputError(f"{where}: expected an object, got {type(item).__name__}")
        unknown = sorted(set(item) - {"name", "category", "story"})
        if unknown:
            raise EvalInputError(f"{where}: unknown key(s) {unknown} (allowed: category, name, story)")
        name = _check_name(item.get("name"), f"{where}.name")
        if name in seen:
            raise EvalInputError(f"{where}.name: duplicate story name {name!r} (also stories[{seen[name]}])")
        seen[name] = k
        category = item.get("category")
        if category is not None and not isinstance(category, str):
            raise EvalInputError(f"{where}.category: expected a string, got {category!r}")
        try:
            story = Story.from_dict(item.get("story"))
        except LayoutError as err:
            raise EvalInputError(f"{where}.story.{err.path}: {err.detail}") from err
        base = os.path.dirname(os.path.abspath(source))
        entries.append(StoryEntry(name=name, story=story.resolve_paths(base), category=category, source=source))
    return tuple(entries)


def load_prompt_set(path: str | os.PathLike) -> tuple[StoryEntry, ...]:
    """Read and validate a prompt-set file (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt set: file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return _parse_prompt_set(data, str(path))


def save_prompt_set(path: str | os.PathLike, entries: Sequence[StoryEntry], *, name: str,
                    description: str = "") -> None:
    """Write ``entries`` as a prompt-set file, atomically."""
    payload = {
        "format": PROMPT_SET_FORMAT,
        "version": PROMPT_SET_VERSION,
        "name": name,
        "description": description,
        "stories": [e.to_dict() for e in entries],
    }
    _parse_prompt_set(json.loads(json.dumps(payload)), str(path))  # never write what we could not read back
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _load_file(path: Path) -> tuple[StoryEntry, ...]:
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    if isinstance(head, dict) and "stories" in head:
        return load_prompt_set(path)
    name = _check_name(path.stem, f"{path}: file name")
    try:
        story = load_story(path)
    except LayoutError as err:
        raise EvalInputError(str(err)) from err
    return (StoryEntry(name=name, story=story, source=str(path)),)


def load_stories(path: str | os.PathLike) -> tuple[StoryEntry, ...]:
    """Stories from a prompt-set file, a single story file (named after the file) or a folder of either (``*.json``
    directly inside it, sorted by name). Story names must be unique across everything read."""
    path = Path(path)
    if path.is_file():
        entries = _load_file(path)
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
        if not files:
            raise FileNotFoundError(f"stories: no .json story or prompt-set files in folder {str(path)!r}")
        entries = tuple(e for f in files for e in _load_file(f))
    else:
        raise FileNotFoundError(f"stories: {str(path)!r} does not exist")
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.name in seen:
            raise EvalInputError(f"stories: duplicate story name {entry.name!r} in {entry.source} and "
                                 f"{seen[entry.name]}")
        seen[entry.name] = entry.source or ""
    return entries


def find_frame_files(folder: str | os.PathLike) -> dict[int, Path]:
    """``{frame index: file}`` for ``frame_NNN.<ext>`` files in ``folder``; two files for one index are an error."""
    found: dict[int, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix.lower() not in FRAME_SUFFIXES:
            continue
        match = _FRAME_RE.match(path.stem)
        if not match:
            continue
        index = int(match.group(1))
        if index in found:
            raise EvalInputError(f"{folder}: two files for frame {index}: {found[index].name} and {path.name}")
        found[index] = path
    return found


def load_generated_frames(generated: str | os.PathLike, name: str, num_frames: int) -> list[Image.Image]:
    """The generated frames of story ``name``: exactly ``num_frames`` images ``frame_000 ... frame_{n-1}``."""
    root = Path(generated)
    if not root.is_dir():
        raise FileNotFoundError(f"generated: folder {str(root)!r} does not exist")
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"generated: no folder for story {name!r} (expected {str(folder)!r})")
    files = find_frame_files(folder)
    missing = [i for i in range(num_frames) if i not in files]
    if missing:
        shown = ", ".join(f"frame_{i:03d}" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise EvalInputError(
            f"{folder}: story {name!r} has {num_frames} frames but {len(missing)} image(s) are missing: {shown}"
        )
    extra = sorted(i for i in files if i >= num_frames)
    if extra:
        raise EvalInputError(
            f"{folder}: story {name!r} has {num_frames} frames but the folder has {len(files)} frame images "
            f"(extra: {', '.join(files[i].name for i in extra[:5])}); story and frames do not match"
        )
    images = []
    for i in range(num_frames):
        try:
            with Image.open(files[i]) as img:
                images.append(img.convert("RGB"))
        except OSError as err:
            raise EvalInputError(f"{files[i]}: cannot read image: {err}") from err
    return images


def read_generation_stats(folder: str | os.PathLike) -> dict | None:
    """``stats.json`` of a generated story folder: ``{"seconds", "peak_memory_bytes"}`` (either optional), or
    ``None`` when there is no such file."""
    path = Path(folder) / "stats.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    out = {}
    for key in ("seconds", "peak_memory_bytes"):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise EvalInputError(f"{path}: {key}: expected a non-negative number, got {value!r}")
        out[key] = float(value) if key == "seconds" else int(value)
    return out
