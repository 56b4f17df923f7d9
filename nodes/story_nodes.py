"""Story nodes: write a story (identity + one prompt per frame), toggle its layout, and story <-> JSON text."""

from __future__ import annotations

import logging

from lay2story_core.story import (
    Character,
    Frame,
    Layout,
    LayoutError,
    Story,
    parse_story,
    story_from_lines,
)

from .cast import check_cast
from .layout_editor import apply_layout_to_story

logger = logging.getLogger(__name__)

CATEGORY = "Lay2Story/story"
DEFAULT_IDENTITY = "a small red fox wearing a blue knitted scarf, cartoon style"
DEFAULT_PROMPTS = "\n".join((
    "reading a book under a big oak tree on a sunny afternoon",
    "walking along a forest path at dusk",
    "standing on a wooden bridge over a river",
    "asleep in a cozy burrow by candlelight",
))
DEFAULT_NEGATIVE = "blurry, low quality, deformed, text, watermark"
DEFAULT_STORY_JSON = Story(
    characters=(Character("hero", DEFAULT_IDENTITY),),
    frames=tuple(Frame(p) for p in DEFAULT_PROMPTS.splitlines()),
    negative_prompt=DEFAULT_NEGATIVE,
).to_json(indent=2)
SIZE_OPTIONS = {"min": 16, "max": 4096, "step": 16}

__all__ = ["L2S_LayoutToggle", "L2S_Story", "L2S_StoryFromJSON", "L2S_StoryToJSON", "check_story", "frame_lines"]


def check_story(value: object, field: str = "story") -> Story:
    if not isinstance(value, Story):
        raise ValueError(f"{field}: expected an L2S_STORY (a lay2story Story), got {type(value).__name__}")
    return value


def frame_lines(text: object, field: str) -> list[str]:
    """One stripped line per frame; blank lines are ignored."""
    if not isinstance(text, str):
        raise ValueError(f"{field}: expected text, got {type(text).__name__}")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _field_error(field: str, err: LayoutError) -> ValueError:
    return ValueError(f"{field}: {err.detail}")


class L2S_Story:
    NODE_ID = "L2S_Story"
    DISPLAY_NAME = "Lay2Story Story"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "A story: one prompt per frame, one per line, and its characters: the identity and character_id here (one "
        "character), or a cast of Lay2Story Character nodes connected to cast (any number; the identity and "
        "character_id here are then unused). A line can start with who is in that frame, '[hero, cat] on the "
        "grass'; without a prefix every character is. Add boxes with the Layout Editor or the Layout Detector."
    )
    FUNCTION = "build"
    RETURN_TYPES = ("L2S_STORY",)
    RETURN_NAMES = ("story",)
    OUTPUT_TOOLTIPS = ("The story (no layout yet: every frame uses the whole image).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "identity": ("STRING", {
                    "default": DEFAULT_IDENTITY, "multiline": True,
                    "tooltip": "The character's identity: what stays the same in every frame (appearance, "
                               "clothes, style). Unused when a cast is connected (its characters' identities are "
                               "used)."}),
                "frame_prompts": ("STRING", {
                    "default": DEFAULT_PROMPTS, "multiline": True,
                    "tooltip": "One prompt per frame, one per line (blank lines are ignored): what happens and "
                               "where. Start a line with the characters in that frame, '[hero, cat] on the grass' "
                               "(ids of the story's characters); without one, every character is in it."}),
                "negative_prompt": ("STRING", {
                    "default": DEFAULT_NEGATIVE, "multiline": True,
                    "tooltip": "What no frame should show (the unconditional caption of classifier-free "
                               "guidance)."}),
                "width": ("INT", {"default": 512, **SIZE_OPTIONS,
                                  "tooltip": "Frame width in pixels (a multiple of 16)."}),
                "height": ("INT", {"default": 512, **SIZE_OPTIONS,
                                   "tooltip": "Frame height in pixels (a multiple of 16)."}),
            },
            "optional": {
                "character_id": ("STRING", {
                    "default": "hero",
                    "tooltip": "The character's id, used by layouts and reference images to name it. Unused "
                               "when a cast is connected."}),
                "cast": ("L2S_CAST", {
                    "tooltip": "The story's characters, from chained Lay2Story Character nodes (in chain order, "
                               "with their reference pictures); replaces identity and character_id."}),
            },
        }

    def build(self, identity: str, frame_prompts: str, negative_prompt: str = "", width: int = 512,
              height: int = 512, character_id: str = "hero", cast=None) -> tuple[Story]:
        prompts = frame_lines(frame_prompts, "frame_prompts")
        if cast is None:
            characters = [{"id": character_id.strip() if isinstance(character_id, str) else character_id,
                           "identity": identity}]
            images = ()
        else:
            cast = check_cast(cast)
            if not cast.characters:
                raise ValueError("cast: no character; connect a Lay2Story Character")
            logger.debug("cast connected: the identity and character_id widgets are unused")
            characters, images = cast.characters, cast.reference_images
        try:  # the schema's own checks (lengths, ids, sizes), as for a story file; one frame per line
            return (story_from_lines(characters, prompts, width=width, height=height,
                                     negative_prompt=negative_prompt, reference_images=images,
                                     list_everyone=cast is not None),)
        except LayoutError as err:
            raise _node_error(err, prompts, cast is not None) from err


def _node_error(err: LayoutError, prompts: list[str], with_cast: bool) -> ValueError:
    """A schema error of the story L2S_Story built, named after the node's input."""
    if err.path == "lines":
        return _field_error("frame_prompts", err)
    if err.path.startswith("line "):  # a line's [..] prefix: "frame_prompts: line 3: unknown character 'dog' ..."
        return ValueError(f"frame_prompts: {err}")
    if err.path.startswith("characters[") and with_cast:
        return _field_error("cast", err)
    if err.path == "characters[0].id":
        return _field_error("character_id", err)
    if err.path == "characters[0].identity":
        return _field_error("identity", err)
    if err.path.startswith("frames["):
        k = int(err.path[len("frames["):err.path.index("]")])
        return ValueError(f"frame_prompts: line {k + 1} ({prompts[k][:40]!r}): {err.detail}")
    if err.path in ("width", "height", "negative_prompt"):
        return _field_error(err.path, err)
    return _field_error("story", err)


class L2S_LayoutToggle:
    NODE_ID = "L2S_LayoutToggle"
    DISPLAY_NAME = "Lay2Story Layout Toggle"
    CATEGORY = "Lay2Story/layout"
    DESCRIPTION = (
        "Applies a layout to a story (optional) and switches its boxes and subject captions on or off. Without "
        "boxes a character may appear anywhere; without subject captions the frame's caption describes it."
    )
    FUNCTION = "toggle"
    RETURN_TYPES = ("L2S_STORY",)
    RETURN_NAMES = ("story",)
    OUTPUT_TOOLTIPS = ("The story with the layout applied and the chosen parts kept.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story": ("L2S_STORY", {"tooltip": "The story to change."}),
                "boxes": ("BOOLEAN", {"default": True, "tooltip": "Keep the subjects' boxes (off: full frame)."}),
                "subject_captions": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Keep the subject captions (off: each subject uses the frame's caption)."}),
            },
            "optional": {
                "layout": ("L2S_LAYOUT", {
                    "tooltip": "A layout to apply first: frame i gets the layout's frame i subjects."}),
            },
        }

    def toggle(self, story: Story, boxes: bool = True, subject_captions: bool = True,
               layout: Layout | None = None) -> tuple[Story]:
        story = check_story(story)
        for name, value in (("boxes", boxes), ("subject_captions", subject_captions)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false, got {value!r}")
        if layout is not None:
            if not isinstance(layout, Layout):
                raise ValueError(f"layout: expected an L2S_LAYOUT, got {type(layout).__name__}")
            story = apply_layout_to_story(story, layout, field="layout")
        return (story.with_layout(boxes=boxes, captions=subject_captions),)


class L2S_StoryToJSON:
    NODE_ID = "L2S_StoryToJSON"
    DISPLAY_NAME = "Lay2Story Story to JSON"
    CATEGORY = CATEGORY
    DESCRIPTION = "Writes a story (characters, frames, layout, size) as Story JSON text, to save or inspect."
    FUNCTION = "dump"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("story_json",)
    OUTPUT_TOOLTIPS = ("The story as JSON text (the schema the CLI and the trainer read).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story": ("L2S_STORY", {"tooltip": "The story to write."}),
                "indent": ("INT", {"default": 2, "min": 0, "max": 8,
                                   "tooltip": "Spaces per indent level; 0 writes one compact line."}),
            },
        }

    def dump(self, story: Story, indent: int = 2) -> tuple[str]:
        story = check_story(story)
        if isinstance(indent, bool) or not isinstance(indent, int) or not 0 <= indent <= 8:
            raise ValueError(f"indent: expected an integer in 0..8, got {indent!r}")
        return (story.to_json(indent=indent or None),)


class L2S_StoryFromJSON:
    NODE_ID = "L2S_StoryFromJSON"
    DISPLAY_NAME = "Lay2Story Story from JSON"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Parses Story JSON text (several characters, per-frame subjects with boxes and captions, size, negative "
        "prompt) into a story; errors name the bad field."
    )
    FUNCTION = "parse"
    RETURN_TYPES = ("L2S_STORY",)
    RETURN_NAMES = ("story",)
    OUTPUT_TOOLTIPS = ("The validated story.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story_json": ("STRING", {
                    "default": DEFAULT_STORY_JSON, "multiline": True,
                    "tooltip": "Story JSON: {\"version\": 1, \"width\", \"height\", \"characters\": [{\"id\", "
                               "\"identity\"}], \"frames\": [{\"prompt\", \"subjects\": [{\"character\", \"box\", "
                               "\"caption\"}]}]}."}),
            },
        }

    def parse(self, story_json: str) -> tuple[Story]:
        if not isinstance(story_json, str):
            raise ValueError(f"story_json: expected JSON text, got {type(story_json).__name__}")
        try:
            return (parse_story(story_json),)
        except LayoutError as err:
            raise ValueError(f"story_json: {err}") from err
