"""Image conversions shared by the pipeline, the CLI and the nodes (PIL, float tensors in [0, 1])."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image


def to_tensor_image(image, height: int, width: int) -> torch.Tensor:
    """A PIL image, a path, or a ``(3, H, W)``/``(H, W, 3)`` float tensor in [0, 1] -> ``(3, height, width)``."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(f"reference image: cannot read {os.fspath(image)!r}: {err}") from err
    if isinstance(image, Image.Image):
        image = image.convert("RGB").resize((width, height), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        x = image.detach().float()
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4):
            x = x.permute(2, 0, 1)
        if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
            raise ValueError(f"reference image: expected (3, H, W) or (H, W, 3), got shape {tuple(image.shape)}")
        x = x[:3] if x.shape[0] >= 3 else x.expand(3, *x.shape[1:])
        x = torch.nn.functional.interpolate(x[None], size=(height, width), mode="bicubic", align_corners=False)[0]
        return x.clamp(0, 1)
    raise ValueError(f"reference image: expected a PIL image, a path or a tensor, got {type(image).__name__}")


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` in [0, 1] -> PIL images."""
    arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def contact_sheet(images: list[Image.Image], columns: int | None = None, pad: int = 4,
                  min_side: int = 256) -> Image.Image:
    """All frames on one sheet, row-major; frames smaller than ``min_side`` are enlarged with nearest-neighbour by
    a whole factor (so the demo's 64 px frames stay crisp and readable; the frame PNGs keep their own size)."""
    if not images:
        raise ValueError("images: need at least one image for a contact sheet")
    cols = columns or min(len(images), 4)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    factor = max(1, -(-min_side // max(min(w, h), 1)))
    if factor > 1:
        images = [im.resize((im.width * factor, im.height * factor), Image.NEAREST) for im in images]
        w, h = w * factor, h * factor
    sheet = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet.paste(im, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet
