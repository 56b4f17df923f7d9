"""From resolved story layouts to subject-branch inputs: ONE place used by training and inference alike.

A batch of frames is described by :class:`FrameSpec` (its story index in the batch and its resolved subjects, see
:meth:`lay2story_core.story.Story.resolve_frame`). :func:`plan_subject_slots` rasterises the boxes with the schema's
rasteriser and assigns 3D-attention groups (one per story x character); :func:`build_subject_inputs` turns a plan
and encoded captions/latents into :class:`~lay2story_core.models.SubjectInputs`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .attention import SubjectSlots
from .models import IdentityBank, SubjectInputs
from .story import FULL_FRAME, Box, ResolvedSubject, rasterize_boxes

CharacterKey = tuple[int, str]  # (story index in the batch, character id)

# The subject caption of a reference image's slot, in training and at inference alike (a reference shows the
# character on its own; its identity reaches the frames through the 3D attention, not through a caption).
REFERENCE_CAPTION = ""


@dataclass(frozen=True)
class FrameSpec:
    """One frame of a batch: which story it belongs to and its resolved subjects."""

    story: int
    subjects: tuple[ResolvedSubject, ...]


@dataclass(frozen=True)
class SlotPlan:
    """Slots of a batch of ``num_frames`` frames followed by ``len(reference_keys)`` reference images.

    ``captions[s]`` is slot ``s``'s subject caption; ``frame_reference[f]`` is the character whose reference frame
    ``f`` concatenates in its 9-channel input (its first subject that has one), or ``None``.
    """

    slots: SubjectSlots
    captions: tuple[str, ...]
    slot_keys: tuple[CharacterKey, ...]
    num_frames: int
    reference_keys: tuple[CharacterKey, ...]
    frame_reference: tuple[CharacterKey | None, ...]
    group_of_key: Mapping[CharacterKey, int]


def plan_subject_slots(
    frames: Sequence[FrameSpec],
    latent_height: int,
    latent_width: int,
    patch_size: int,
    references: Mapping[CharacterKey, Box | None] | None = None,
    *,
    group_of_key: Mapping[CharacterKey, int] | None = None,
    first_reference_image: int | None = None,
    device: torch.device | str | None = None,
    attention_3d: bool = True,
) -> SlotPlan:
    """Rasterise every subject of every frame (and every reference) to token masks and group them.

    Args:
        frames: the batch's frames (conditional half only: the unconditional half runs without the subject branch).
        latent_height, latent_width, patch_size: the token grid.
        references: per (story, character) with a reference image, the box of the character in it (``None``: the
            whole image). Reference images are images ``num_frames..`` of the subject branch.
        group_of_key: fixed group ids per (story, character), e.g. to read an identity bank written by an earlier
            call; by default ids are assigned in order of appearance.
        first_reference_image: image index of the first reference (default ``len(frames)``; with classifier-free
            guidance the batch holds both halves, so the pipeline passes ``2 * len(frames)``).
        attention_3d: ``False`` is the "w/o masked 3D attention" ablation: every slot (each frame's character and
            each reference) gets a group of its own, so the 3D attention sees only the slot's own tokens and no
            identity passes between frames or from the reference through it (the reference still reaches its
            frames through the branch's concatenated input).
    """
    groups: dict[CharacterKey, int] = dict(group_of_key or {})
    fresh = itertools.count(max(groups.values(), default=-1) + 1)

    def group(key: CharacterKey) -> int:
        if not attention_3d:  # a group of its own for every slot
            return next(fresh)
        if key not in groups:
            groups[key] = max(groups.values(), default=-1) + 1
        return groups[key]

    boxes, images, group_ids, captions, keys = [], [], [], [], []
    frame_reference: list[CharacterKey | None] = []
    references = dict(references or {})
    for f, frame in enumerate(frames):
        chosen = None
        for subject in frame.subjects:
            key = (frame.story, subject.character)
            boxes.append(subject.box)
            images.append(f)
            group_ids.append(group(key))
            captions.append(subject.caption)
            keys.append(key)
            if chosen is None and key in references:
                chosen = key
        frame_reference.append(chosen)
    reference_keys = tuple(references)
    first_ref = len(frames) if first_reference_image is None else first_reference_image
    for r, key in enumerate(reference_keys):
        boxes.append(references[key] or FULL_FRAME)
        images.append(first_ref + r)
        group_ids.append(group(key))
        captions.append(REFERENCE_CAPTION)
        keys.append(key)
    masks = rasterize_boxes(boxes, latent_height, latent_width, patch_size).flatten(1)
    slots = SubjectSlots(
        masks.to(device) if device is not None else masks,
        torch.tensor(images, dtype=torch.long, device=device),
        torch.tensor(group_ids, dtype=torch.long, device=device),
        torch.tensor([tuple(map(float, b)) for b in boxes], dtype=torch.float32, device=device).reshape(-1, 4),
    )
    return SlotPlan(slots, tuple(captions), tuple(keys), len(frames), reference_keys, tuple(frame_reference), groups)


def box_mask_image(box: Box | None, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """A ``(1, height, width)`` 0/1 mask image of a box at latent resolution (the reference mask channel)."""
    mask = rasterize_boxes([box or FULL_FRAME], height, width, 1)[0]
    return mask.to(device=device, dtype=dtype)[None]


def build_subject_inputs(
    plan: SlotPlan,
    caption_embeds: torch.Tensor,
    caption_mask: torch.Tensor | None,
    reference_latents: Mapping[CharacterKey, torch.Tensor] | None = None,
    references: Mapping[CharacterKey, Box | None] | None = None,
    *,
    caption_index: torch.Tensor | None = None,
    batch_size: int | None = None,
    bank: IdentityBank | None = None,
) -> SubjectInputs:
    """Assemble :class:`SubjectInputs` for a plan.

    Args:
        plan: from :func:`plan_subject_slots`.
        caption_embeds: ``(S, L, C)`` the encoded ``plan.captions`` (reference slots included; their caption is the
            empty string and is not attended by anything that matters, but must be present), or ``(U, L, C)``
            distinct captions with ``caption_index (S,)`` picking each slot's.
        caption_mask: ``(S, L)`` (or ``(U, L)``) padding mask.
        reference_latents: per (story, character), the reference's clean latent ``(4, h, w)`` at the frames' latent
            size.
        references: the boxes given to :func:`plan_subject_slots` (for the mask channel).
        batch_size: the model's batch (both CFG halves); frames beyond the plan's get no reference (zeros).
    """
    references = dict(references or {})
    reference_latents = dict(reference_latents or {})
    rows = len(plan.captions) if caption_index is None else caption_index.shape[0]
    if rows != len(plan.captions) or (caption_index is None and caption_embeds.shape[0] != len(plan.captions)):
        raise ValueError(f"caption_embeds: expected {len(plan.captions)} captions (one per slot), got "
                         f"{caption_embeds.shape[0] if caption_index is None else rows}")
    frame_lat = frame_mask = ref_images = ref_masks = None
    if reference_latents:
        missing = [k for k in plan.reference_keys if k not in reference_latents]
        if missing:
            raise ValueError(f"reference_latents: no latent for {missing}")
        sample = next(iter(reference_latents.values()))
        channels, h, w = sample.shape
        zeros = sample.new_zeros(channels, h, w)
        per_frame = list(plan.frame_reference) + [None] * max(0, (batch_size or 0) - plan.num_frames)
        frame_lat = torch.stack([reference_latents[k] if k else zeros for k in per_frame])
        frame_mask = torch.stack([
            box_mask_image(references.get(k), h, w, sample.device, sample.dtype) if k else zeros[:1]
            for k in per_frame
        ])
        if plan.reference_keys:
            ref_images = torch.stack([reference_latents[k] for k in plan.reference_keys])
            ref_masks = torch.stack([box_mask_image(references.get(k), h, w, sample.device, sample.dtype)
                                     for k in plan.reference_keys])
    return SubjectInputs(
        slots=plan.slots,
        caption_embeds=caption_embeds,
        caption_mask=caption_mask,
        caption_index=caption_index,
        reference_latents=frame_lat,
        reference_masks=frame_mask,
        reference_images=ref_images,
        reference_image_masks=ref_masks,
        bank=bank,
    )
