"""Detections to a story layout: the rule the layout detector node, the dataset recipe and scripts share."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..story import Layout, LayoutError, Subject

logger = logging.getLogger(__name__)

__all__ = ["detections_to_layout"]


def detections_to_layout(detections: Sequence, character_id: str, caption: str | None) -> Layout:
    """Frame ``i`` gets one subject with detection ``i``'s box (``.box`` in normalised xyxy), or none when nothing
    was detected there (``None``: layout off in that frame). Degenerate boxes are dropped with a warning."""
    frames = []
    for i, found in enumerate(detections):
        subjects = ()
        if found is not None:
            try:
                subjects = (Subject(character_id, found.box, caption),)
            except LayoutError as err:  # a degenerate box (zero width after rounding)
                logger.warning("frame %d: detection %s dropped: %s", i, found.box, err)
        frames.append(subjects)
    return Layout(frames=tuple(frames), characters=(character_id,))
