"""Boxes to token masks: THE one rasteriser, used by training and inference alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import LayoutError
from .fields import Box, item, parse_box, parse_int, show
from .schema import ResolvedSubject
from .story import Story

__all__ = ["latent_grid", "rasterize_boxes", "rasterize_frame_masks"]


def latent_grid(latent_height: int, latent_width: int, patch_size: int = 1) -> tuple[int, int]:
    """The token grid ``(gh, gw)`` of a latent; the latent size must be divisible by the patch size."""
    height = parse_int(latent_height, "latent_height", minimum=1)
    width = parse_int(latent_width, "latent_width", minimum=1)
    patch = parse_int(patch_size, "patch_size", minimum=1)
    for name, value in (("latent_height", height), ("latent_width", width)):
        if value % patch:
            raise LayoutError(name, f"{value} is not divisible by patch_size {patch}", value)
    return height // patch, width // patch


def rasterize_boxes(
    boxes: Sequence[Box],
    latent_height: int,
    latent_width: int,
    patch_size: int = 1,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean token masks ``(n, gh, gw)`` for normalised xyxy boxes, ``gh = latent_height // patch_size``.

    Token ``(i, j)`` belongs to a box when its cell centre ``((j + 0.5) / gw, (i + 0.5) / gh)`` lies in
    ``[x0, x1] x [y0, y1]`` (edges included). A box with no centre inside (smaller than a cell) still gets one token:
    the cell holding the box centre. ``mask.flatten(1)`` is row-major, i.e. PixArt's patch-token order.
    """
    gh, gw = latent_grid(latent_height, latent_width, patch_size)
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().tolist()
    if isinstance(boxes, (str, bytes)) or not isinstance(boxes, Sequence):
        raise LayoutError("boxes", f"expected a sequence of [x0, y0, x1, y1] boxes, got {show(boxes)}", boxes)
    if not boxes:
        return torch.zeros((0, gh, gw), dtype=torch.bool, device=device)
    coords = torch.tensor([parse_box(b, item("boxes", k)) for k, b in enumerate(boxes)], dtype=torch.float64)
    x0, y0, x1, y1 = coords.unbind(1)
    cx = (torch.arange(gw, dtype=torch.float64) + 0.5) / gw
    cy = (torch.arange(gh, dtype=torch.float64) + 0.5) / gh
    cols = (cx[None, :] >= x0[:, None]) & (cx[None, :] <= x1[:, None])  # (n, gw)
    rows = (cy[None, :] >= y0[:, None]) & (cy[None, :] <= y1[:, None])  # (n, gh)
    masks = rows[:, :, None] & cols[:, None, :]
    empty = ~masks.flatten(1).any(1)
    if empty.any():
        idx = empty.nonzero().squeeze(1)
        j = (((x0[idx] + x1[idx]) / 2) * gw).floor().long().clamp(0, gw - 1)
        i = (((y0[idx] + y1[idx]) / 2) * gh).floor().long().clamp(0, gh - 1)
        masks[idx, i, j] = True
    return masks.to(device) if device is not None else masks


def rasterize_frame_masks(
    story: Story,
    latent_height: int,
    latent_width: int,
    patch_size: int = 1,
    *,
    boxes: bool = True,
    captions: bool = True,
) -> list[list[tuple[ResolvedSubject, torch.Tensor]]]:
    """Per frame, per resolved subject (:meth:`Story.resolve_frame`): the subject and its ``(gh * gw,)`` bool
    token mask. ``result[i]`` is frame i's list."""
    if not isinstance(story, Story):
        raise LayoutError("story", f"expected a Story, got {show(story)}", story)
    latent_grid(latent_height, latent_width, patch_size)
    out = []
    for i in range(story.num_frames):
        subjects = story.resolve_frame(i, boxes=boxes, captions=captions)
        masks = rasterize_boxes([s.box for s in subjects], latent_height, latent_width, patch_size).flatten(1)
        out.append(list(zip(subjects, masks.unbind(0))))
    return out
