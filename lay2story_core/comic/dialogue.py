"""A frame's lines and character boxes for the page composer, from a story (and, without a layout, from detected
boxes or the frame image).

Speaker boxes, per frame, first found first:

1. the story's layout: the speaker's subject box (``story.frames[i].subjects``), unless ``layout=False``;
2. ``detected``: per-frame ``{character id: box}`` given by the caller, e.g. the pack's ``L2S_LayoutDetector``
   output (:func:`layout_boxes`);
3. the frame image (``images``): :func:`foreground_boxes`, a detector-free guess: the connected regions that differ
   from the colours along the image border, largest first; characters still without a box take them left to
   right (in the frame's subject order, else the story's character order), skipping regions that overlap a box
   already known. A cheap heuristic for flat backgrounds (ShapeStory, simple drawings), not a detector.

A speaker with no box at all gets a bubble at the panel top (reading order) with a short tail towards the panel
centre; narration (``speaker=None``) gets no tail. Every box found is also an obstacle bubbles keep clear of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from ..story import Layout, Story
from .bubbles import check_line

__all__ = ["FrameDialogue", "PanelLine", "foreground_boxes", "layout_boxes", "story_dialogue"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PanelLine:
    """One line of a frame: ``box`` is its speaker's box, normalised xyxy of the frame image (``None``: unknown);
    ``speaker`` the character id (``None``: narration, no tail)."""

    text: str
    style: str = "speech"
    speaker: str | None = None
    box: Box | None = None

    def __post_init__(self) -> None:
        check_line(self.text, self.style)


@dataclass(frozen=True)
class FrameDialogue:
    """A frame's lines (reading order) and every character box in it (normalised xyxy), kept clear of bubbles."""

    lines: tuple[PanelLine, ...] = ()
    characters: tuple[Box, ...] = ()


def _iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def foreground_boxes(image: Image.Image, max_boxes: int = 4, min_area: float = 0.01,
                     tolerance: int = 40) -> list[Box]:
    """Boxes (normalised xyxy, left to right) of the largest regions unlike the image border.

    Background colours are those covering at least 10 % of the border pixels (so a two-tone sky/ground backdrop
    counts as background); a pixel further than ``tolerance`` (per channel, 0..255) from all of them is foreground.
    Regions under ``min_area`` of the image are dropped; at most ``max_boxes`` are kept.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    h, w = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    quantised = border // 16
    keys, counts = np.unique(quantised[:, 0] * 256 + quantised[:, 1] * 16 + quantised[:, 2], return_counts=True)
    background = []
    for key in keys[counts >= 0.1 * len(border)]:
        members = border[(quantised[:, 0] * 256 + quantised[:, 1] * 16 + quantised[:, 2]) == key]
        background.append(np.median(members, axis=0))
    if not background:
        background = [np.median(border, axis=0)]
    far = np.ones((h, w), dtype=bool)
    for colour in background:
        far &= np.abs(rgb - colour).max(axis=-1) > tolerance
    far = ndimage.binary_opening(far, iterations=1)
    labels, count = ndimage.label(far)
    if count == 0:
        return []
    areas = ndimage.sum_labels(far, labels, index=np.arange(1, count + 1))
    order = [k for k in np.argsort(-areas) if areas[k] >= min_area * h * w][:max_boxes]
    slices = ndimage.find_objects(labels)
    boxes = [(slices[k][1].start / w, slices[k][0].start / h, slices[k][1].stop / w, slices[k][0].stop / h)
             for k in order]
    return sorted(boxes)


def layout_boxes(layout: Layout) -> list[dict[str, Box]]:
    """Per frame ``{character id: box}`` of a layout's subjects that have a box (e.g. the detector node's output)."""
    if not isinstance(layout, Layout):
        raise ValueError(f"detected: expected a Layout, got {type(layout).__name__}")
    return [{s.character: s.box for s in subjects if s.box is not None} for subjects in layout.frames]


def _frame_boxes(story: Story, i: int, layout: bool, detected: Mapping[str, Box] | None,
                 image: Image.Image | None) -> tuple[dict[str, Box], list[Box]]:
    frame = story.frames[i]
    boxes: dict[str, Box] = {}
    if layout:
        boxes.update({s.character: s.box for s in frame.subjects if s.box is not None})
    for cid, box in (detected or {}).items():
        boxes.setdefault(cid, tuple(box))
    extra: list[Box] = []
    present = [s.character for s in frame.subjects] or list(story.character_ids)
    missing = [cid for cid in present if cid not in boxes]
    if image is not None and missing:
        found = [b for b in foreground_boxes(image) if all(_iou(b, k) < 0.3 for k in boxes.values())]
        for cid, box in zip(missing, found):
            boxes[cid] = box
        extra = found[len(missing):]
    return boxes, extra


def story_dialogue(story: Story, *, layout: bool = True, detected: Sequence[Mapping[str, Box]] | None = None,
                   images: Sequence[Image.Image] | None = None) -> list[FrameDialogue]:
    """Each frame's :class:`FrameDialogue` from ``story.frames[i].dialogue`` and the boxes found as the module
    docstring says. ``detected`` and ``images`` may be shorter than the story (later frames go without)."""
    if not isinstance(story, Story):
        raise ValueError(f"story: expected a Story, got {type(story).__name__}")
    out = []
    for i, frame in enumerate(story.frames):
        boxes, extra = _frame_boxes(story, i, layout, detected[i] if detected and i < len(detected) else None,
                                    images[i] if images is not None and i < len(images) else None)
        lines = tuple(PanelLine(line.text, line.style or ("caption" if line.speaker is None else "speech"),
                                line.speaker, boxes.get(line.speaker) if line.speaker is not None else None)
                      for line in getattr(frame, "dialogue", ()))
        out.append(FrameDialogue(lines, tuple(boxes.values()) + tuple(extra)))
    return out
