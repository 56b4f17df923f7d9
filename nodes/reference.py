"""``L2S_ReferenceImage``: a character's reference picture (and where the character is in it) for Lay2Story."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from lay2story_core.pipelines import ReferenceImage
from lay2story_core.story import FULL_FRAME, Box, LayoutError
from lay2story_core.story.fields import parse_box, parse_id

from .image_utils import check_mask_fits, image_tensor, mask_box, mask_tensor

logger = logging.getLogger(__name__)

__all__ = ["L2S_ReferenceImage", "character_id_input", "check_references", "reference_picture"]

_COORD = {"min": 0.0, "max": 1.0, "step": 0.01}
MIN_REFERENCE_SIDE = 8  # one latent cell of an 8x VAE


def check_references(value: object, field: str = "reference") -> dict[str, ReferenceImage]:
    """An ``L2S_REFERENCE`` value: a mapping of character id -> :class:`ReferenceImage`."""
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, ReferenceImage) for k, v in value.items()):
        raise ValueError(f"{field}: expected an L2S_REFERENCE (from Lay2Story Reference Image), "
                         f"got {type(value).__name__}")
    return dict(value)


class L2S_ReferenceImage:
    NODE_ID = "L2S_ReferenceImage"
    DISPLAY_NAME = "Lay2Story Reference Image"
    CATEGORY = "Lay2Story/story"
    DESCRIPTION = (
        "A reference picture of a character for the trained Lay2Story model: every frame's character is made to "
        "look like it. Mark where the character is with a mask (its bounding box is used) or a box; the whole image "
        "otherwise. Chain several nodes for several characters."
    )
    FUNCTION = "build"
    RETURN_TYPES = ("L2S_REFERENCE",)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The references so far, one per character id (for the Story Sampler).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The reference picture (the first image of a batch is used; at least "
                                               "8x8 pixels, values 0..1)."}),
                "character_id": ("STRING", {"default": "hero",
                                            "tooltip": "The story character this picture shows."}),
                "x0": ("FLOAT", {"default": 0.0, **_COORD,
                                 "tooltip": "Character box left edge, as a fraction of the width (no mask)."}),
                "y0": ("FLOAT", {"default": 0.0, **_COORD,
                                 "tooltip": "Character box top edge, as a fraction of the height (no mask)."}),
                "x1": ("FLOAT", {"default": 1.0, **_COORD,
                                 "tooltip": "Character box right edge, as a fraction of the width (no mask)."}),
                "y1": ("FLOAT", {"default": 1.0, **_COORD,
                                 "tooltip": "Character box bottom edge, as a fraction of the height (no mask)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "The character's region (the image's size; one mask, or one per image): "
                                             "its bounding box replaces the box above."}),
                "reference": ("L2S_REFERENCE", {
                    "tooltip": "References of other characters to add this one to (same id: this one wins)."}),
            },
        }

    def build(self, image, character_id: str = "hero", x0: float = 0.0, y0: float = 0.0, x1: float = 1.0,
              y1: float = 1.0, mask=None, reference: Mapping | None = None) -> tuple[dict[str, ReferenceImage]]:
        picture, box = reference_picture(image, (x0, y0, x1, y1), mask)
        char_id = character_id_input(character_id)
        refs = {} if reference is None else check_references(reference)
        if char_id in refs:
            logger.info("reference: replacing the earlier reference of %r", char_id)
        refs[char_id] = ReferenceImage(image=picture, box=box)
        return (refs,)


def character_id_input(value: object, field: str = "character_id") -> str:
    """A character id typed in a node (surrounding whitespace dropped); bad ones raise naming ``field``."""
    try:
        return parse_id(value.strip() if isinstance(value, str) else value, field)
    except LayoutError as err:
        raise ValueError(f"{field}: {err.detail}") from err


def reference_picture(image, box: tuple, mask=None, *, image_field: str = "image", mask_field: str = "mask",
                      box_field: str = "x0/y0/x1/y1") -> tuple[torch.Tensor, Box | None]:
    """A reference picture from node inputs: the first image of the batch as ``(3, H, W)`` in 0..1, and the
    character's box in it (the mask's bounding box if a mask is given, else ``box``; ``None`` = the whole picture).
    What every node handing references to the sampler uses (Reference Image, Character)."""
    images = image_tensor(image, image_field, min_side=MIN_REFERENCE_SIDE)
    if images.shape[0] > 1:
        logger.warning("%s: %d images given, the first is the reference", image_field, images.shape[0])
    if mask is not None:
        masks = mask_tensor(mask, mask_field)
        check_mask_fits(masks, images, mask_field)
        found = mask_box(masks[0], mask_field)
    else:
        try:
            found = parse_box(list(box), "box")
        except LayoutError as err:
            raise ValueError(f"{box_field}: {err.detail}") from err
    return images[0].permute(2, 0, 1).contiguous(), None if found == FULL_FRAME else found
