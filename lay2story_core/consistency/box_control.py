"""Training-free box control: the noise prediction composed box by box, on any PixArt.

MultiDiffusion's region-based generation (Bar-Tal et al., ICML 2023, "MultiDiffusion: Fusing Diffusion Paths for
Controlled Image Generation", Sec. 4.2), with one change that makes it place objects on a model that draws its
subject where it was trained to (a plain global branch draws a lone character near the middle of the frame): each
character's prediction is made on a *window centred on its box* (the frame rolled). At each composed step:

* **background**: one call on the frames as they are, with the frame's caption without the boxed characters (the
  frame prompt); its prediction is kept outside every box;
* **one call per character**: the frames where it has a box, rolled so that the box centre sits at the frame
  centre, with the frame's global caption as if the character were alone in it; the prediction, rolled back, is
  kept inside the box;
* the predictions are averaged where boxes overlap (both classifier-free-guidance halves alike).

``strength`` is the share of the steps composed this way, from the first (0: none, the behaviour before box
control, bit for bit; 1: every step); the remaining steps sample as before (the global caption everywhere, each
captioned box's region caption, :func:`region_caption`, in it), finishing with the whole frame in view. Training-free
consistency runs inside every call: a character's call shares that character's box tokens between the identity
frames (its own bank for the write/read scheme), and only box tokens read shared tokens (the background of a frame
does not take on the character).

The measured alternatives (DenseDiffusion's attention modulation of self- and cross-attention, BoxDiff-style
energy guidance on the latents, regional captions without the windows) are in ``bench/box_control.py``'s notes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..story import Story
from ..story.raster import rasterize_boxes

logger = logging.getLogger(__name__)

__all__ = ["BOX_STRENGTH", "BoxPlan", "BoxRegion", "box_captions", "caption_with", "check_box_strength",
           "region_caption", "region_captions", "slot_region_texts"]

# the default share of composed steps: none (opt-in). Measured on the demo's global branch (bench/box_control.py, 8
# held-out stories per character count, CFG 2, stage-1c weights, region captions): strength 0.875 puts characters in
# their boxes 0.89 / 0.83 / 0.78 (1 / 2 / 3 characters) against 0.31 / 0.17 / 0.10 at 0, with the scene kept (1.00;
# 0.95 at 1), but attribute agreement falls from 0.59 to 0.47 (0.50 at 1) and a redone frame's agreement with the kept
# ones fell from 0.54 to 0.12 at 1 (bench/redo.py, stage-2e weights), at 1.7-1.8x the time per story: consistency is
# what training-free mode is for, so a user asks for placement with --box-strength
BOX_STRENGTH = 0.0


def check_box_strength(value: object, field: str = "box_strength") -> float:
    """The one rule for the box-control strength (API, CLI, node): a number in [0, 1], the share of the steps whose
    prediction is composed box by box; 0 = no box control."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{field}: expected a number in [0, 1] (share of the steps; 0: no box control), "
                         f"got {value!r}")
    return float(value)


def box_steps(strength: float, num_steps: int) -> int:
    """How many of the first steps are composed: ``strength`` of them, at least one when ``strength > 0``."""
    return 0 if strength <= 0 else max(1, min(num_steps, round(strength * num_steps)))


def caption_with(story: Story, frame_index: int, characters: Sequence[str]) -> str:
    """The frame's global caption (:meth:`Story.global_caption`) as if only ``characters`` were in it; with none of
    them there, the frame prompt alone."""
    frame = story.frames[frame_index]
    subjects = tuple(s for s in frame.subjects if s.character in characters)
    if not subjects:
        return frame.prompt
    alone = dataclasses.replace(story, frames=(dataclasses.replace(frame, subjects=subjects),))
    return alone.global_caption(0)


def region_caption(story: Story, frame_index: int, character: str) -> str:
    """What a boxed, captioned character's tokens read in training-free regional cross-attention (every host): the
    frame's global caption as if the character were alone in it, i.e. StoryDiffusion's "identity + frame prompt"
    per box, the text box control's character calls read too. Not the subject caption itself: on the demo's global
    branch (seed-4000 held-out stories, 8 per character count, 16 protocol stories) a box read without the frame
    prompt lost the scene (0.86, 1.00 with this text; identity + subject caption + frame prompt: 0.94); fewer
    characters of crowded frames are drawn (2 / 3 characters 0.84 / 0.77 -> 0.71 / 0.60) and attribute agreement
    moves with the story set (+0.10 there, -0.08 on bench/redo.py's stories). In a frame with one character this text
    is the frame's own caption: routing changes nothing. The subject caption stays the subject branch's input
    (Lay2Story mode)."""
    return caption_with(story, frame_index, [character])


def region_captions(story: Story, resolved: Sequence[Sequence]) -> list[str]:
    """Every distinct :func:`region_caption` of a story (``resolved``: :meth:`Story.resolve_frame` of each frame):
    one per subject with a box and a caption of its own, what a host encodes once."""
    texts = [region_caption(story, f, s.character) for f, frame in enumerate(resolved) for s in frame
             if s.has_box and s.has_caption]
    return list(dict.fromkeys(texts))


def slot_region_texts(story: Story, resolved: Sequence[Sequence], frames: Sequence[int], plan,
                      frame_slots: torch.Tensor) -> list[str]:
    """The text each frame slot of a pass's slot plan (``plan``: a :class:`~lay2story_core.conditioning.SlotPlan`
    over story frames ``frames``; ``frame_slots``: its slots' bool mask of frame, not reference, slots) reads in
    regional cross-attention: a boxed, captioned subject's :func:`region_caption`, any other its frame's global
    caption (what the tokens outside every box read)."""
    texts = []
    for s in frame_slots.nonzero().flatten().tolist():
        frame, (_, character) = frames[int(plan.slots.image_index[s])], plan.slot_keys[s]
        subject = next(r for r in resolved[frame] if r.character == character)
        texts.append(region_caption(story, frame, character) if subject.has_box and subject.has_caption
                     else story.global_caption(frame))
    return texts


def _boxed(resolved_frame) -> list:
    return [s for s in resolved_frame if s.has_box]


def box_captions(story: Story, resolved: Sequence[Sequence]) -> list[str]:
    """Every caption box control encodes for a story (``resolved``: :meth:`Story.resolve_frame` of each frame):
    the background caption and each boxed character's caption of every frame with a box."""
    texts = []
    for f, frame in enumerate(resolved):
        boxed = _boxed(frame)
        if boxed:
            unboxed = [s.character for s in frame if not s.has_box]
            texts += [caption_with(story, f, unboxed)] + [caption_with(story, f, [s.character]) for s in boxed]
    return list(dict.fromkeys(texts))


@dataclass(frozen=True)
class BoxRegion:
    """One character's boxes in a pass and the windows they are predicted in. Every frame of the pass takes part
    (so the consistency bank's rows name the pass's frames, as the other calls' do); a frame where the character has
    no box contributes nothing: no shift, no tokens, no mask.

    Attributes:
        character: the character id.
        captions: per frame of the pass, the frame's global caption with this character alone (a frame without its
            box: the frame's background caption).
        shifts: per frame, ``(dy, dx)`` latent pixels (multiples of the patch size) that move the box centre to
            the frame centre.
        masks: ``(F, 1, h, w)`` float, the box at latent resolution (frame coordinates).
        tokens: ``(F, N)`` bool, the box on the token grid in window coordinates (the character's tokens that
            training-free consistency shares, and the tokens that read the shared ones).
    """

    character: str
    captions: tuple[str, ...]
    shifts: tuple[tuple[int, int], ...]
    masks: torch.Tensor
    tokens: torch.Tensor

    @property
    def frames(self) -> tuple[int, ...]:
        """Positions in the pass of the frames where the character has a box."""
        return tuple(int(i) for i in self.tokens.any(1).nonzero().flatten())

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """``x (halves * F, C, h, w)``, each frame rolled so the character's box is centred (both halves alike)."""
        shifts = self.shifts * (x.shape[0] // len(self.shifts))
        return torch.stack([torch.roll(r, s, dims=(-2, -1)) for r, s in zip(x, shifts)])

    def unroll(self, y: torch.Tensor) -> torch.Tensor:
        """A window prediction back in frame coordinates."""
        shifts = self.shifts * (y.shape[0] // len(self.shifts))
        return torch.stack([torch.roll(r, (-dy, -dx), dims=(-2, -1)) for r, (dy, dx) in zip(y, shifts)])


@dataclass(frozen=True)
class BoxPlan:
    """Box control of one denoising pass.

    Attributes:
        steps: the first ``steps`` steps are composed.
        background: per frame of the pass, the caption outside its boxes (a frame without boxes: its global
            caption).
        background_mask: ``(F, 1, h, w)`` float, 1 outside every box of the frame.
        regions: one per character with a box in the pass.
    """

    steps: int
    background: tuple[str, ...]
    background_mask: torch.Tensor
    regions: tuple[BoxRegion, ...]

    @classmethod
    def build(cls, story: Story, frames: Sequence[int], resolved: Sequence[Sequence], latent_size: tuple[int, int],
              patch_size: int, strength: float, num_steps: int, device=None) -> BoxPlan | None:
        """The plan for story frames ``frames`` (``resolved``: :meth:`Story.resolve_frame` of every story frame);
        ``None`` when no frame has a box or the strength is 0."""
        steps = box_steps(strength, num_steps)
        if steps == 0 or not any(_boxed(resolved[f]) for f in frames):
            return None
        (h, w), count = latent_size, len(frames)
        background, background_mask, boxes = [], torch.ones(count, 1, h, w), {}
        for i, f in enumerate(frames):
            boxed = _boxed(resolved[f])
            background.append(caption_with(story, f, [s.character for s in resolved[f] if not s.has_box])
                              if boxed else story.global_caption(f))
            for s in boxed:
                boxes.setdefault(s.character, {})[i] = s.box
        regions = []
        for character, by_frame in boxes.items():
            captions, shifts = list(background), [(0, 0)] * count
            masks, tokens = torch.zeros(count, 1, h, w), torch.zeros(count, h // patch_size, w // patch_size,
                                                                     dtype=torch.bool)
            for i, box in by_frame.items():
                x0, y0, x1, y1 = box
                dy = round((0.5 - (y0 + y1) / 2) * h / patch_size) * patch_size
                dx = round((0.5 - (x0 + x1) / 2) * w / patch_size) * patch_size
                captions[i], shifts[i] = caption_with(story, frames[i], [character]), (dy, dx)
                masks[i, 0] = rasterize_boxes([box], h, w, 1)[0].float()
                grid = rasterize_boxes([box], h, w, patch_size)[0]
                tokens[i] = torch.roll(grid, (dy // patch_size, dx // patch_size), dims=(0, 1))
                background_mask[i, 0] *= 1 - masks[i, 0]
            regions.append(BoxRegion(character, tuple(captions), tuple(shifts), masks.to(device),
                                     tokens.flatten(1).to(device)))
        logger.debug("box control: %d of %d steps composed, %d characters boxed", steps, num_steps, len(regions))
        return cls(steps, tuple(background), background_mask.to(device), tuple(regions))

    def active(self, step: int) -> bool:
        return step < self.steps

    def compose(self, background: torch.Tensor, regions: Sequence[torch.Tensor]) -> torch.Tensor:
        """The composed prediction ``(halves * F, C, h, w)`` from the background call's and each region's
        (unrolled) predictions: the background outside the boxes, each region inside its box, overlaps averaged."""
        halves = background.shape[0] // self.background_mask.shape[0]
        weight = self.background_mask.repeat(halves, 1, 1, 1).to(background.dtype)
        total, count = background * weight, weight.clone()
        for region, pred in zip(self.regions, regions):
            mask = region.masks.repeat(halves, 1, 1, 1).to(background.dtype)
            total, count = total + pred.to(background.dtype) * mask, count + mask
        return torch.where(count > 0, total / count.clamp(min=1e-12), background)
