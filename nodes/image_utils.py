"""ComfyUI IMAGE / MASK values <-> PIL images and boxes, with errors that name the input.

IMAGE is a float tensor ``(batch, height, width, channels)`` in 0..1, MASK ``(batch, height, width)`` (or one
``(height, width)`` mask). Values must be finite and in 0..1 (up to a rounding slack, then clamped): a NaN or a
0..255 / -1..1 tensor is refused with one message rather than silently becoming black or white.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["check_mask_fits", "image_tensor", "mask_box", "mask_tensor", "pil_to_image", "to_pil_list"]

RANGE_SLACK = 0.01  # values this far outside 0..1 are rounding (clamped); further out is another value range


def _check_values(values: torch.Tensor, field: str) -> None:
    """Finite and in 0..1 (with :data:`RANGE_SLACK`), else one ValueError naming ``field`` and the values."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{field}: {bad} of {values.numel()} values are not finite (NaN or infinity)")
    low, high = float(values.min()), float(values.max())
    if low < -RANGE_SLACK or high > 1.0 + RANGE_SLACK:
        hint = ("0..255 pixel values? divide by 255" if high > 2.0 and low >= -RANGE_SLACK else
                "-1..1 values? use (x + 1) / 2" if low < -RANGE_SLACK else "clamp it to 0..1")
        raise ValueError(f"{field}: values must be in 0..1, got {low:.4g} up to {high:.4g}; {hint}")


def image_tensor(value: object, field: str, min_side: int = 1) -> torch.Tensor:
    """A ComfyUI IMAGE as a float32 CPU tensor ``(B, H, W, 3)`` (grey -> RGB, alpha dropped), at least
    ``min_side`` pixels high and wide, finite and in 0..1."""
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
    height, width = int(images.shape[1]), int(images.shape[2])
    if min(height, width) < min_side:
        raise ValueError(f"{field}: {width}x{height} pixels is too small for a reference (at least "
                         f"{min_side}x{min_side})")
    if images.shape[-1] == 1:
        images = images.expand(*images.shape[:-1], 3)
    images = images[..., :3]
    _check_values(images, field)
    return images.clamp(0.0, 1.0).contiguous()


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
    _check_values(mask, field)
    return mask.clamp(0.0, 1.0)


def check_mask_fits(masks: torch.Tensor, images: torch.Tensor, field: str) -> None:
    """``masks (Bm, H, W)`` belong to ``images (B, H, W, 3)``: the same size, and one mask or one per image."""
    mh, mw = int(masks.shape[1]), int(masks.shape[2])
    ih, iw = int(images.shape[1]), int(images.shape[2])
    if (mh, mw) != (ih, iw):
        raise ValueError(f"{field}: {mw}x{mh} pixels, but the image is {iw}x{ih}; give a mask of the image's size")
    if masks.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"{field}: a batch of {masks.shape[0]} masks for {images.shape[0]} images; give one mask, "
                         "or one per image")


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
