"""The story/layout schema: one versioned JSON format for the web editor, the nodes, the CLI, the trainer's dataset
and the benchmark; its validation (every failure is a :class:`LayoutError` naming field and value); the
layout-toggle rules (:meth:`Story.resolve_frame`); and THE box rasteriser (:func:`rasterize_boxes`)."""

from .cast import Cast, story_from_lines
from .errors import LayoutError
from .fields import (
    BOX_EPSILON,
    DEFAULT_MAX_CAPTION_CHARS,
    DEFAULT_MAX_FRAMES,
    FULL_FRAME,
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Box,
)
from .frame_lines import merge_layout_subjects, parse_frame_line
from .io import load_story, parse_layout, parse_story, save_story, write_text_atomic
from .layout import Layout
from .raster import latent_grid, rasterize_boxes, rasterize_frame_masks
from .schema import DIALOGUE_STYLES, Character, DialogueLine, Frame, Reference, ResolvedSubject, Subject
from .story import Story

__all__ = [
    "BOX_EPSILON",
    "DEFAULT_MAX_CAPTION_CHARS",
    "DEFAULT_MAX_FRAMES",
    "DIALOGUE_STYLES",
    "FULL_FRAME",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "Box",
    "Cast",
    "Character",
    "DialogueLine",
    "Frame",
    "Layout",
    "LayoutError",
    "Reference",
    "ResolvedSubject",
    "Story",
    "Subject",
    "latent_grid",
    "merge_layout_subjects",
    "parse_frame_line",
    "load_story",
    "parse_layout",
    "parse_story",
    "rasterize_boxes",
    "rasterize_frame_masks",
    "save_story",
    "story_from_lines",
    "write_text_atomic",
]
