"""ComfyUI IMAGE / MASK values <-> PIL images and boxes, with errors that name the input.

IMAGE is a float tensor ``(batch, height, width, channels)`` in 0..1, MASK ``(batch, height, width)`` (or one
``(height, width)`` mask).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["image_tensor", "mask_box", "mask_tensor", "pil_to_image", "to_pil_list"]


def image_tensor(value: object, field: str) -> torch.Tensor:
    """A ComfyUI IMAGE as a float32 CPU tensor ``(B, H, W, 3)`` (grey -> RGB, alpha dropped)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{field}: expected an IMAGE tensor, got {type(value).__name__}")
    images = value.detach().float().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or min(images.shape) == 0:
        raise ValueError(f"{field}: expected an IMAGE of shape (batch, height, width, 1/3/4 channels), "
                         f"got shape {tuple(value.shape)}")
    if images.shape[-1] == 1:
        images = images.expand(*images.shape[:-1], 3)
    return torch.nan_to_num(images[..., :3]).clamp(0.0, 1.0).contiguous()


def to_pil_list(value: object, field: str) -> list[Image.Image]:
    """Each image of an IMAGE batch as an RGB PIL image."""
    array = (image_tensor(value, field).numpy() * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(frame) for frame in array]


def pil_to_image(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> IMAGE ``(B, H, W, 3)``."""
    if not images:
        raise ValueError("images: need at least one image")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images: an IMAGE batch needs one size, got {sorted(sizes)}")
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(array)


def mask_tensor(value: object, field: str) -> torch.Tensor:
    """A ComfyUI MASK as a float32 CPU tensor ``(B, H, W)``."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{field}: expected a MASK tensor, got {type(value).__name__}")
    mask = value.detach().float().cpu()
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or min(mask.shape) == 0:
        raise ValueError(f"{field}: expected a MASK of shape (batch, height, width), got shape {tuple(value.shape)}")
    return torch.nan_to_num(mask)


def mask_box(mask: torch.Tensor, field: str, threshold: float = 0.5) -> tuple[float, float, float, float]:
    """The normalised ``(x0, y0, x1, y1)`` bounding box of the pixels of a ``(H, W)`` mask above ``threshold``."""
    on = mask > threshold
    if not bool(on.any()):
        raise ValueError(f"{field}: the mask is empty (no pixel above {threshold}); draw the character's region or "
                         "disconnect the mask")
    height, width = on.shape
    rows = torch.nonzero(on.any(dim=1)).flatten()
    cols = torch.nonzero(on.any(dim=0)).flatten()
    return (int(cols[0]) / width, int(rows[0]) / height, (int(cols[-1]) + 1) / width, (int(rows[-1]) + 1) / height)
