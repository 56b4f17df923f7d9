"""Layout editor nodes: the canvas-edited layout (web/js/lay2story.js draws the widget), and layout <-> JSON text.

The editor's state is the ``layout_json`` STRING widget (Layout JSON, see :mod:`lay2story_core.story.layout`), so
workflows and API-format prompts carry it. Bad JSON raises a ``ValueError`` naming the field, which ComfyUI shows on
the node instead of failing the server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile

import numpy as np
from PIL import Image

from lay2story_core.story import Layout, LayoutError, Story, parse_layout

logger = logging.getLogger(__name__)

CATEGORY = "Lay2Story/layout"
DEFAULT_FRAMES = 4
DEFAULT_CHARACTERS = ("hero",)
DEFAULT_LAYOUT_JSON = Layout.empty(DEFAULT_FRAMES, DEFAULT_CHARACTERS).to_json(indent=None)
BACKGROUND_SUBFOLDER = "lay2story"
BACKGROUND_MAX_SIDE = 1024

__all__ = [
    "DEFAULT_LAYOUT_JSON",
    "L2S_LayoutEditor",
    "L2S_LayoutFromJSON",
    "L2S_LayoutToJSON",
    "apply_layout_to_story",
    "editor_location",
    "parse_layout_field",
    "save_backgrounds",
]


_FRAME_PATH = re.compile(r"^layout\.frames\[(\d+)\](?:\.(subjects|dialogue)\[(\d+)\](?:\.(\w+))?)?(?:\.(\w+))?$")
_CHARACTER_PATH = re.compile(r"^layout\.characters\[(\d+)\]$")
_NAMED_PATHS = {"<json>": "JSON text", "layout.frames": "frames", "layout.characters": "character list",
                "layout.version": "version"}


def editor_location(path: str) -> str:
    """A layout field path in the editor's own numbering (frames and boxes from 1), as its status line shows it:
    ``"layout.frames[0].subjects[1].box"`` -> ``"frame 1, box 2 (box)"``, ``"layout.frames[0].dialogue[1].text"``
    -> ``"frame 1, line 2 (text)"``. Mirrors ``humanPath`` in web/js/layout_schema.js; both are tested against
    tests/web/layout_json_cases.json."""
    match = _FRAME_PATH.match(path)
    if match:
        frame, kind, index, field, frame_field = match.groups()
        what = "box" if kind == "subjects" else "line"
        text = f"frame {int(frame) + 1}" + (f", {what} {int(index) + 1}" if index is not None else "")
        field = field or frame_field
        return f"{text} ({field})" if field else text
    match = _CHARACTER_PATH.match(path)
    if match:
        return f"character list, entry {int(match.group(1)) + 1}"
    return _NAMED_PATHS.get(path, path)


def _field_error(field: str, err: LayoutError) -> ValueError:
    """``"{field}: {path}: {detail} (in the editor: frame 1, box 2 (box))"``: the path for scripts, the location as
    the canvas numbers it for people."""
    return ValueError(f"{field}: {err} (in the editor: {editor_location(err.path)})")


def parse_layout_field(text: object, field: str) -> Layout:
    """Layout JSON text from a node input; every problem is a ``ValueError`` starting with ``field``."""
    if not isinstance(text, str):
        raise ValueError(f"{field}: expected Layout JSON text, got {type(text).__name__} {text!r:.60}")
    try:
        return parse_layout(text)
    except LayoutError as err:
        raise _field_error(field, err) from err


def apply_layout_to_story(story: object, layout: Layout, field: str = "layout_json") -> Story:
    """The story with the layout merged in (:meth:`Story.apply_layout`).

    Trailing empty frames (no subjects, no dialogue lines) of the layout beyond the story's length are dropped first
    (the editor's default layout has 4 empty frames; a 3-frame story should not fail on them); frames with subjects
    or lines beyond it are an error. A layout frame with dialogue replaces that frame's lines, one without keeps them.
    """
    if not isinstance(story, Story):
        raise ValueError(f"story: expected an L2S_STORY (a lay2story Story), got {type(story).__name__}")
    frames, count = layout.frames, story.num_frames
    if len(frames) > count and not any(frames[count:]) and not any(layout.dialogue[count:]):
        logger.info("layout has %d frames, story %d: dropping the empty frames past the story's end",
                    len(frames), count)
        layout = Layout(frames=frames[:count], characters=layout.characters, dialogue=layout.dialogue[:count])
    try:
        return story.apply_layout(layout)
    except LayoutError as err:
        raise _field_error(field, err) from err


def _temp_folder() -> tuple[str, str]:
    """ComfyUI's temp folder (served by its /view route as type "temp") when running inside ComfyUI."""
    try:
        import folder_paths  # ComfyUI's module; absent in tests and standalone use
    except ImportError:
        return os.path.join(tempfile.gettempdir(), "lay2story_ui"), "temp"
    return folder_paths.get_temp_directory(), "temp"


def _image_array(images: object, field: str) -> np.ndarray:
    """A ComfyUI IMAGE (torch tensor or array, batch x height x width x channels, floats in 0..1) as numpy."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or min(array.shape) == 0:
        raise ValueError(f"{field}: expected an IMAGE of shape (batch, height, width, 1/3/4 channels), "
                         f"got shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{field}: expected numbers, got dtype {array.dtype}")
    return array


def save_backgrounds(images: object, field: str = "background") -> tuple[list[dict], tuple[int, int]]:
    """Writes each image of the batch as a PNG (at most 1024 px a side) into the temp folder for the canvas to show.

    Returns ComfyUI image records ``{"filename", "subfolder", "type"}`` and the first image's (width, height). Files
    are named by content hash, so re-running the same input rewrites nothing; each is written atomically.
    """
    array = _image_array(images, field)
    folder, kind = _temp_folder()
    target = os.path.join(folder, BACKGROUND_SUBFOLDER)
    os.makedirs(target, exist_ok=True)
    records = []
    for frame in array:
        pixels = (np.clip(np.nan_to_num(frame.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        digest = hashlib.sha1(pixels.tobytes() + repr(pixels.shape).encode()).hexdigest()[:20]
        name = f"l2s_background_{digest}.png"
        path = os.path.join(target, name)
        if not os.path.exists(path):
            image = Image.fromarray(pixels)
            image.thumbnail((BACKGROUND_MAX_SIDE, BACKGROUND_MAX_SIDE))
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                image.save(tmp, format="PNG", compress_level=1)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        records.append({"filename": name, "subfolder": BACKGROUND_SUBFOLDER, "type": kind})
    height, width = array.shape[1:3]
    return records, (int(width), int(height))


class L2S_LayoutEditor:
    NODE_ID = "L2S_LayoutEditor"
    DISPLAY_NAME = "Lay2Story Layout Editor"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Draw where each character stands in each frame: drag on empty space to draw a box, drag inside to move, "
        "drag an edge or corner to resize (Shift snaps to a 1/8 grid and other boxes), right-click for delete, "
        "duplicate, copy to other frames, full frame and character; Delete/Backspace deletes, PgUp/PgDn pages "
        "frames. A new box takes the character chosen in the picker. Each frame's dialogue lines (speaker, speech / "
        "thought / shout / caption box, text) are edited under the boxes; the comic page letters them. With a story "
        "connected, its characters, frame prompts and size are read while editing, and the last run's frames show "
        "behind the boxes. Frames without boxes use the whole frame (layout is optional)."
    )
    FUNCTION = "edit"
    RETURN_TYPES = ("L2S_LAYOUT", "L2S_STORY")
    RETURN_NAMES = ("layout", "story")
    OUTPUT_TOOLTIPS = (
        "The layout: per frame, the subjects (character, box, subject caption) and dialogue lines.",
        "The connected story with this layout applied; None when no story is connected.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "layout_json": ("STRING", {
                    "default": DEFAULT_LAYOUT_JSON,
                    "multiline": True,
                    "tooltip": "The layout as JSON (the canvas edits it): {\"version\": 2, \"characters\": [...], "
                               "\"frames\": [{\"subjects\": [{\"character\", \"box\": [x0, y0, x1, y1] in 0..1, "
                               "\"caption\"}], \"dialogue\": [{\"text\", \"speaker\", \"style\"}]}]}; a frame "
                               "without \"dialogue\" keeps the story's lines.",
                }),
            },
            "optional": {
                "story": ("L2S_STORY", {
                    "tooltip": "Optional story: frame i gets the layout's frame i subjects, and its dialogue lines "
                               "where the layout has some (later frames keep theirs). Its characters, frame prompts "
                               "and size are read by the canvas while editing (Story with its Character cast, Story "
                               "from JSON; other sources after a run).",
                }),
                "background": ("IMAGE", {
                    "tooltip": "Optional images to draw over, one per frame (or one for all); shown on the canvas "
                               "after a run, which also sets the frame's aspect ratio. Without one, the frames of "
                               "the last run of a sampler fed by this editor are shown.",
                }),
            },
        }

    def edit(self, layout_json: str, story: Story | None = None, background: object = None) -> dict:
        layout = parse_layout_field(layout_json, "layout_json")
        merged = None if story is None else apply_layout_to_story(story, layout)
        ui: dict[str, list] = {"l2s_backgrounds": []}
        if merged is not None:
            ui["l2s_frame_size"] = [merged.width, merged.height]
            ui["l2s_characters"] = list(merged.character_ids)
            ui["l2s_prompts"] = [frame.prompt for frame in merged.frames]
            ui["l2s_dialogue"] = [[line.to_dict() for line in frame.dialogue] for frame in merged.frames]
        if background is not None:
            records, size = save_backgrounds(background)
            ui["l2s_backgrounds"] = records
            ui.setdefault("l2s_frame_size", list(size))
        return {"ui": ui, "result": (layout, merged)}


class L2S_LayoutFromJSON:
    NODE_ID = "L2S_LayoutFromJSON"
    DISPLAY_NAME = "Lay2Story Layout from JSON"
    CATEGORY = CATEGORY
    DESCRIPTION = "Parses and validates Layout JSON text (e.g. from a file or another node) into a layout."
    FUNCTION = "parse"
    RETURN_TYPES = ("L2S_LAYOUT",)
    RETURN_NAMES = ("layout",)
    OUTPUT_TOOLTIPS = ("The validated layout.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "layout_json": ("STRING", {
                    "default": DEFAULT_LAYOUT_JSON,
                    "multiline": True,
                    "tooltip": "Layout JSON: {\"version\": 2, \"characters\": [...], \"frames\": [{\"subjects\": "
                               "[...], \"dialogue\": [...]}]}; errors name the bad field.",
                }),
            },
        }

    def parse(self, layout_json: str) -> tuple[Layout]:
        return (parse_layout_field(layout_json, "layout_json"),)


class L2S_LayoutToJSON:
    NODE_ID = "L2S_LayoutToJSON"
    DISPLAY_NAME = "Lay2Story Layout to JSON"
    CATEGORY = CATEGORY
    DESCRIPTION = "Writes a layout as Layout JSON text (to save, inspect or feed a layout editor)."
    FUNCTION = "dump"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("layout_json",)
    OUTPUT_TOOLTIPS = ("The layout as JSON text.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "layout": ("L2S_LAYOUT", {"tooltip": "The layout to write."}),
                "indent": ("INT", {"default": 2, "min": 0, "max": 8,
                                   "tooltip": "Spaces per indent level; 0 writes one compact line."}),
            },
        }

    def dump(self, layout: Layout, indent: int = 2) -> tuple[str]:
        if not isinstance(layout, Layout):
            raise ValueError(f"layout: expected an L2S_LAYOUT (a lay2story Layout), got {type(layout).__name__}")
        if isinstance(indent, bool) or not isinstance(indent, int) or not 0 <= indent <= 8:
            raise ValueError(f"indent: expected an integer in 0..8, got {indent!r}")
        return (layout.to_json(indent=indent or None),)
