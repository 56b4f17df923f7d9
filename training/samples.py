"""One training example: a story's frames (and its characters' reference images) at its bucket size.

Images are resized to cover the bucket and centre-cropped (PixArt's ``InternalDataMS``); every box of the story is
mapped through the same crop, so boxes stay on the character. A reference image is resized to the frames' size
exactly as the pipeline does at inference (its latent is concatenated to each frame's input in the subject
branch). With a feature cache the example carries VAE moments and T5 embeddings instead of pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lay2story_core.story import BOX_EPSILON, Box, Frame, Story, Subject

__all__ = ["Crop", "Example", "crop_box", "load_image", "load_pixels", "load_reference", "story_key", "truncate_story"]

Opener = Callable[[str], bytes]


@dataclass(frozen=True)
class Crop:
    """How an image of ``source`` size was resized to ``resized`` and cropped at ``(left, top)`` to ``size``."""

    source: tuple[int, int]  # (width, height)
    resized: tuple[int, int]
    left: int
    top: int
    size: tuple[int, int]  # (width, height)

    @classmethod
    def cover(cls, width: int, height: int, out_height: int, out_width: int) -> Crop:
        """Resize so the image covers ``out`` (keeping its aspect ratio), then centre-crop."""
        scale = max(out_height / height, out_width / width)
        rw, rh = max(out_width, round(width * scale)), max(out_height, round(height * scale))
        return cls((width, height), (rw, rh), (rw - out_width) // 2, (rh - out_height) // 2, (out_width, out_height))


def crop_box(box: Box | None, crop: Crop) -> Box | None:
    """Map a normalised box through ``crop``; ``None`` when it falls (almost) outside the crop."""
    if box is None:
        return None
    rw, rh = crop.resized
    ow, oh = crop.size
    x0, y0, x1, y1 = box
    nx0 = min(max((x0 * rw - crop.left) / ow, 0.0), 1.0)
    nx1 = min(max((x1 * rw - crop.left) / ow, 0.0), 1.0)
    ny0 = min(max((y0 * rh - crop.top) / oh, 0.0), 1.0)
    ny1 = min(max((y1 * rh - crop.top) / oh, 0.0), 1.0)
    if nx1 - nx0 < BOX_EPSILON or ny1 - ny0 < BOX_EPSILON:
        return None
    return (nx0, ny0, nx1, ny1)


def load_image(data: bytes | str, out_height: int, out_width: int) -> tuple[torch.Tensor, Crop]:
    """Decode an image (bytes or a path), resize/crop it to ``out`` and scale to ``[-1, 1]``: ``(3, H, W)``."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        image = image.convert("RGB")
        crop = Crop.cover(image.width, image.height, out_height, out_width)
        if crop.resized != (image.width, image.height):
            image = image.resize(crop.resized, Image.BICUBIC)
        image = image.crop((crop.left, crop.top, crop.left + out_width, crop.top + out_height))
        array = np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1) / 127.5 - 1.0
    return tensor, crop


def load_reference(data: bytes | str, out_height: int, out_width: int) -> torch.Tensor:
    """A reference image resized (not cropped) to the frames' size, in [-1, 1]: ``(3, H, W)``. This is what
    :meth:`lay2story_core.pipelines.StoryPipeline.encode_references` does (``to_tensor_image``: bicubic resize), so
    the reference box, normalised, stays valid unchanged."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        image = image.convert("RGB").resize((out_width, out_height), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array.copy()).permute(2, 0, 1) / 127.5 - 1.0


def truncate_story(story: Story, max_frames: int) -> Story:
    """The story's first ``max_frames`` frames."""
    if story.num_frames <= max_frames:
        return story
    return dataclasses.replace(story, frames=story.frames[:max_frames])


def story_key(data: dict, source: str) -> str:
    """The feature-cache key of a story: its JSON (image paths as written) and the name of the file holding it, so
    a dataset folder can move without invalidating its cache."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(f"{source}\n{text}".encode()).hexdigest()


@dataclass
class Example:
    """A story ready for batching.

    ``story`` has its boxes mapped through the crop (and only the frames used). Exactly one of ``pixels`` (frames
    ``(F, 3, H, W)`` in [-1, 1]) and ``moments`` (VAE ``(F, 2C, h, w)`` mean and log-variance) is set.
    ``references`` maps a character id to its image (pixels ``(3, H, W)`` or moments ``(2C, h, w)``) and the box of
    the character in it. ``texts`` holds cached T5 states ``(L_valid, D)`` by ``text_id(caption)`` (cache only).
    """

    key: str
    story: Story
    size: tuple[int, int]  # (height, width) in pixels
    pixels: torch.Tensor | None = None
    moments: torch.Tensor | None = None
    references: dict[str, tuple[torch.Tensor, Box | None]] = dataclasses.field(default_factory=dict)
    texts: dict[str, torch.Tensor] | None = None


def _remap_subjects(frame: Frame, crop: Crop) -> Frame:
    subjects = tuple(Subject(s.character, crop_box(s.box, crop), s.caption) for s in frame.subjects)
    return dataclasses.replace(frame, subjects=subjects)


def load_pixels(story: Story, key: str, size: tuple[int, int], opener: Opener | None = None) -> Example:
    """Read a story's frame and reference images (paths resolved already, or member names given to ``opener``)."""
    height, width = size
    frames, tensors = [], []
    for i, frame in enumerate(story.frames):
        if frame.image is None:
            raise ValueError(f"frames[{i}].image: a training story needs an image for every frame, got None")
        tensor, crop = load_image(opener(frame.image) if opener else frame.image, height, width)
        tensors.append(tensor)
        frames.append(_remap_subjects(frame, crop))
    references: dict[str, tuple[torch.Tensor, Box | None]] = {}
    for character in story.characters:
        ref = character.reference
        if ref is not None and ref.image is not None:
            tensor = load_reference(opener(ref.image) if opener else ref.image, height, width)
            references[character.id] = (tensor, ref.box)
    story = dataclasses.replace(story, frames=tuple(frames))
    return Example(key=key, story=story, size=size, pixels=torch.stack(tensors), references=references)
