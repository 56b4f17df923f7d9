"""One story sampled as one batch by a host's own sampler (ComfyUI's KSampler): which rows of a model call are which
frames, and the :class:`~.processors.StoryConsistencyContext` of each call.

A host batches the story's frames as ``chunks x frames`` rows (ComfyUI: one chunk per entry of ``cond_or_uncond``,
conditional and unconditional halves in any order, possibly in separate calls) and calls the model once per step.
:class:`StoryBatch` is built once per story (frames, identity frames, the characters' boxes) and turns each call's
``(chunks, step, token grid)`` into the context the core attention functions read, so every host adapter (SD1.5,
SDXL, FLUX, PixArt) shares one rule for groups, identity frames and box-restricted token sharing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..story import Story
from ..story.raster import rasterize_frame_masks
from .box_control import region_caption, region_captions
from .processors import ConsistencyConfig, StoryConsistencyContext

__all__ = ["DEFAULT_IDENTITY_FRAMES", "StoryBatch", "token_grid", "step_index"]

DEFAULT_IDENTITY_FRAMES = 4  # StoryDiffusion generates its identity images together (its demo: up to 4)


def token_grid(latent_height: int, latent_width: int, num_tokens: int) -> tuple[int, int]:
    """The ``(gh, gw)`` grid of ``num_tokens`` image tokens of a ``latent_height x latent_width`` latent at some
    depth of a host model: the latent halved (rounding up, as stride-2 convolutions and FLUX's 2x2 patches do) until
    the counts match. ``ValueError`` when no depth matches (the tokens are not this latent's)."""
    gh, gw = int(latent_height), int(latent_width)
    while gh * gw > num_tokens and (gh > 1 or gw > 1):
        gh, gw = math.ceil(gh / 2), math.ceil(gw / 2)
    if gh * gw != num_tokens:
        raise ValueError(f"latent: {num_tokens} tokens are not a grid of a {latent_height}x{latent_width} latent")
    return gh, gw


def step_index(sigma: torch.Tensor | float | None, sample_sigmas: torch.Tensor | Sequence[float] | None) -> int:
    """The step a call belongs to: the index of the schedule's sigma closest to the call's (0 without a schedule:
    a lone call is treated as the first step)."""
    if sigma is None or sample_sigmas is None:
        return 0
    value = float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
    sigmas = torch.as_tensor(sample_sigmas, dtype=torch.float64).flatten()
    if sigmas.numel() == 0:
        return 0
    return int((sigmas - value).abs().argmin())


@dataclass
class StoryBatch:
    """A story's frames as the rows of a host's batched model calls.

    Args:
        story: the story (its frames' boxes: :meth:`Story.resolve_frame`, the layout-toggle rules).
        config: the consistency settings (rate, blocks, start step, ...).
        identity_frames: how many of the first frames share their tokens (the others only read them); ``None``:
            ``min(frames, 4)``.
        boxes: restrict sharing to the characters' boxes when the story has any (``subject_only``).
    """

    story: Story
    config: ConsistencyConfig
    identity_frames: int | None = None
    boxes: bool = True
    _masks: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.story.num_frames
        if self.identity_frames is None:
            self.identity_frames = min(n, DEFAULT_IDENTITY_FRAMES)
        if isinstance(self.identity_frames, bool) or not isinstance(self.identity_frames, int) or not (
                1 <= self.identity_frames <= n):
            raise ValueError(f"identity_frames: expected an integer in [1, {n}], got {self.identity_frames!r}")

    @property
    def num_frames(self) -> int:
        return self.story.num_frames

    def chunks_of(self, batch: int, field_name: str = "latent") -> int:
        """How many chunks of the story a batch of ``batch`` rows holds; ``ValueError`` naming ``field_name`` when the
        batch is not a whole number of stories (a latent of another frame count)."""
        if batch <= 0 or batch % self.num_frames:
            raise ValueError(f"{field_name}: a batch of {batch} is not a whole number of stories of "
                             f"{self.num_frames} frames (one batch element per frame)")
        return batch // self.num_frames

    def frame_masks(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """``(frames, gh * gw)`` bool: the union of each frame's character boxes at a token grid, or ``None`` when the
        story has no box (layout off: every token is a candidate). Cached per grid."""
        if grid not in self._masks:
            resolved = rasterize_frame_masks(self.story, grid[0], grid[1], 1)
            if not self.boxes or not any(s.has_box for frame in resolved for s, _ in frame):
                self._masks[grid] = None
            else:
                masks = torch.zeros(self.num_frames, grid[0] * grid[1], dtype=torch.bool)
                for f, frame in enumerate(resolved):
                    for _, mask in frame:
                        masks[f] |= mask
                self._masks[grid] = masks
        return self._masks[grid]

    def caption_regions(self, grid: tuple[int, int]) -> list[list[tuple[str, torch.Tensor]]]:
        """Per frame, ``(region caption, (gh * gw,) bool mask)`` of each subject with both a box and its own caption
        (the tokens regional cross-attention routes to :func:`~.box_control.region_caption`: its character's
        identity and the frame prompt)."""
        resolved = rasterize_frame_masks(self.story, grid[0], grid[1], 1)
        return [[(region_caption(self.story, f, s.character), m) for s, m in frame if s.has_box and s.has_caption]
                for f, frame in enumerate(resolved)]

    def region_captions(self) -> list[str]:
        """Every distinct region caption the story's boxes use, in order (what a host encodes once)."""
        return region_captions(self.story, [self.story.resolve_frame(i) for i in range(self.num_frames)])

    def context(self, chunks: int, step: int, grid: tuple[int, int], device: torch.device | str = "cpu"
                ) -> StoryConsistencyContext:
        """The context of one model call over ``chunks x frames`` rows: chunk ``c`` is group ``c`` (tokens are shared
        only within a chunk, i.e. within one CFG half), its first ``identity_frames`` frames share their tokens."""
        n = self.num_frames
        group = torch.arange(chunks, device=device).repeat_interleave(n)
        flags = torch.zeros(n, dtype=torch.bool)
        flags[: self.identity_frames] = True
        ctx = StoryConsistencyContext(self.config, group=group, identity=flags.repeat(chunks).to(device), step=step)
        masks = self.frame_masks(grid)
        if masks is not None:
            ctx.subject_masks = masks.repeat(chunks, 1).to(device)
        return ctx
