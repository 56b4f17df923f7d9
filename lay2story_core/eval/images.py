"""Image helpers for the metrics: conversion, subject crops with background blanking, backbone preprocessing.

No torchvision: resizing goes through PIL (the same bicubic/bilinear filters torchvision uses on PIL images), the
tensor maths through torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "box_to_pixels",
    "crop_subject",
    "pil_to_tensor",
    "prepare_batch",
    "to_pil",
]

# The constants DreamSim (and timm / OpenAI CLIP) use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def to_pil(image: Image.Image | torch.Tensor | np.ndarray, *, name: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, an ``(H, W, C)`` / ``(C, H, W)`` tensor or array in ``[0, 1]`` (float) or
    ``[0, 255]`` (uint8). Grayscale and RGBA are converted to RGB (RGBA composited on white)."""
    if isinstance(image, Image.Image):
        if image.mode == "RGBA":
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            return background
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu", torch.float32 if image.is_floating_point() else torch.uint8).numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a PIL image, tensor or array, got {type(image).__name__}")
    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected (H, W, C) or (C, H, W) with C in 1/3/4, got shape {tuple(image.shape)}")
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: contains NaN or inf values")
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        return to_pil(Image.fromarray(array, "RGBA"), name=name)
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def box_to_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised ``(x0, y0, x1, y1)`` -> integer pixel box covering it (outward rounding, at least 1 px)."""
    if len(box) != 4:
        raise ValueError(f"box: expected 4 numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box: coordinates must be finite, got {box!r}")
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"box: expected 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {box!r}")
    left = min(int(math.floor(x0 * width)), width - 1)
    top = min(int(math.floor(y0 * height)), height - 1)
    right = max(int(math.ceil(x1 * width)), left + 1)
    bottom = max(int(math.ceil(y1 * height)), top + 1)
    return left, top, min(right, width), min(bottom, height)


def _mask_array(mask: Image.Image | torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if isinstance(mask, Image.Image):
        mask_img = mask.convert("L")
    else:
        array = mask.detach().cpu().float().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        array = np.squeeze(array)
        if array.ndim != 2:
            raise ValueError(f"mask: expected a 2-D (H, W) mask, got shape {tuple(np.shape(mask))}")
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        elif array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        mask_img = Image.fromarray(array, "L")
    if mask_img.size != size:
        mask_img = mask_img.resize(size, Image.NEAREST)
    return np.asarray(mask_img) >= 128


def crop_subject(
    image: Image.Image | torch.Tensor | np.ndarray,
    box: Sequence[float] | None,
    mask: Image.Image | torch.Tensor | np.ndarray | None = None,
    *,
    fill: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """The subject crop used by CLIP-I and DreamSim.

    The paper removes the background with CarveKit before CLIP-I; we have no segmentation model here, so we crop to
    the subject's box (``None`` = the whole frame) and, when a foreground ``mask`` of the full frame is given (any
    segmenter's output, white = subject), paint everything outside it with ``fill`` (white, like a matted cut-out on
    a white page). Without a mask the box's background stays in the crop.
    """
    pil = to_pil(image)
    if mask is not None:
        keep = _mask_array(mask, pil.size)
        array = np.array(pil)
        array[~keep] = np.asarray(fill, dtype=np.uint8)
        pil = Image.fromarray(array, "RGB")
    if box is None:
        return pil
    return pil.crop(box_to_pixels(box, *pil.size))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` float tensor in ``[0, 1]``."""
    array = np.asarray(to_pil(image), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def prepare_batch(
    images: Sequence[Image.Image | torch.Tensor | np.ndarray],
    size: int | tuple[int, int],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resample: str = "bicubic",
) -> torch.Tensor:
    """Resize every image to ``size`` (square int or ``(h, w)``; no aspect-preserving crop, as DreamSim does) and
    stack into a ``(N, 3, h, w)`` float batch in ``[0, 1]``, then normalise with ``mean``/``std`` when given."""
    if len(images) == 0:
        raise ValueError("images: need at least one image")
    if resample not in _RESAMPLE:
        raise ValueError(f"resample: expected one of {sorted(_RESAMPLE)}, got {resample!r}")
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"size: must be positive, got {size!r}")
    tensors = []
    for index, image in enumerate(images):
        pil = to_pil(image, name=f"images[{index}]")
        if pil.size != (width, height):
            pil = pil.resize((width, height), _RESAMPLE[resample])
        tensors.append(pil_to_tensor(pil))
    batch = torch.stack(tensors)
    if mean is not None or std is not None:
        mean_t = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
        std_t = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
        batch = (batch - mean_t) / std_t
    return batch
