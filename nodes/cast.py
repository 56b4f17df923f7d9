"""``L2S_Character``: one story character (id, identity, optional reference picture), chained into a cast
(``L2S_CAST``) that the Story node turns into the story's characters."""

from __future__ import annotations

import logging

from lay2story_core.story import Cast, Character, LayoutError, Reference

from .reference import character_id_input, reference_picture

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHARACTER_IDENTITY", "L2S_Character", "check_cast"]

DEFAULT_CHARACTER_IDENTITY = "a small red fox wearing a blue knitted scarf, cartoon style"
_COORD = {"min": 0.0, "max": 1.0, "step": 0.01}


def check_cast(value: object, field: str = "cast") -> Cast:
    if not isinstance(value, Cast):
        raise ValueError(f"{field}: expected an L2S_CAST (from Lay2Story Character), got {type(value).__name__}")
    return value


class L2S_Character:
    NODE_ID = "L2S_Character"
    DISPLAY_NAME = "Lay2Story Character"
    CATEGORY = "Lay2Story/story"
    DESCRIPTION = (
        "One character of the story: its id (what frame lines, layouts and the layout editor's picker call it) and "
        "its identity (how it looks, added to the caption of every frame it is in). Chain characters through the "
        "cast input, any number, into the Story node's cast. Optionally a reference picture of it (trained "
        "Lay2Story model): mark where it is with reference_mask (its bounding box is used) or the box; the whole "
        "picture otherwise."
    )
    FUNCTION = "build"
    RETURN_TYPES = ("L2S_CAST",)
    RETURN_NAMES = ("cast",)
    OUTPUT_TOOLTIPS = ("The characters so far, this one last (to the next Character's cast or the Story's cast); "
                       "reference pictures travel with the story to the sampler.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "character_id": ("STRING", {
                    "default": "hero",
                    "tooltip": "The character's id, unique in the cast: frame lines name it ('[hero, cat] on the "
                               "grass'), and so do layouts and the layout editor's picker."}),
                "identity": ("STRING", {
                    "default": DEFAULT_CHARACTER_IDENTITY, "multiline": True,
                    "tooltip": "What stays the same in every frame the character is in (appearance, clothes, "
                               "style); added to those frames' captions."}),
                "x0": ("FLOAT", {"default": 0.0, **_COORD,
                                 "tooltip": "Box in reference_image, left edge as a fraction of the width (used "
                                            "with a reference_image and no reference_mask)."}),
                "y0": ("FLOAT", {"default": 0.0, **_COORD,
                                 "tooltip": "Box in reference_image, top edge as a fraction of the height."}),
                "x1": ("FLOAT", {"default": 1.0, **_COORD,
                                 "tooltip": "Box in reference_image, right edge as a fraction of the width."}),
                "y1": ("FLOAT", {"default": 1.0, **_COORD,
                                 "tooltip": "Box in reference_image, bottom edge as a fraction of the height."}),
            },
            "optional": {
                "cast": ("L2S_CAST", {
                    "tooltip": "The characters before this one (another Character's output); none: this one "
                               "starts the cast."}),
                "reference_image": ("IMAGE", {
                    "tooltip": "A picture of the character (lay2story mode: every frame's character is made to "
                               "look like it; the first image of a batch; at least 8x8 pixels, values 0..1)."}),
                "reference_mask": ("MASK", {
                    "tooltip": "Where the character is in reference_image (its size; one mask, or one per image): "
                               "its bounding box replaces the box above."}),
            },
        }

    def build(self, character_id: str = "hero", identity: str = DEFAULT_CHARACTER_IDENTITY, x0: float = 0.0,
              y0: float = 0.0, x1: float = 1.0, y1: float = 1.0, cast: Cast | None = None, reference_image=None,
              reference_mask=None) -> tuple[Cast]:
        before = Cast() if cast is None else check_cast(cast)
        char_id = character_id_input(character_id)
        picture = reference = None
        if reference_image is not None:
            picture, box = reference_picture(reference_image, (x0, y0, x1, y1), reference_mask,
                                             image_field="reference_image", mask_field="reference_mask")
            reference = Reference(box=box)
        elif reference_mask is not None:
            raise ValueError("reference_mask: connect a reference_image too (the mask marks the character in it)")
        try:
            character = Character.from_dict({"id": char_id, "identity": identity}, path="character")
        except LayoutError as err:
            raise ValueError(f"{err.path.rpartition('.')[2]}: {err.detail}") from err
        try:
            after = before.add(Character(character.id, character.identity, reference), picture)
        except LayoutError as err:
            raise ValueError(f"character_id: {err.detail}") from err
        logger.debug("cast: %s", ", ".join(after.character_ids))
        return (after,)
