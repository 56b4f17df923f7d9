"""Shared helpers of the vision wrappers: model folder checks, device/dtype resolution, image checks."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

__all__ = ["check_images", "check_model_folder", "resolve_device", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def check_model_folder(folder: str | os.PathLike, what: str) -> str:
    """The folder as a string; raises ``FileNotFoundError`` naming ``what`` when it is not a model folder."""
    path = os.fspath(folder)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what}: model folder {path!r} does not exist or is not a folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{what}: model folder {path!r} has no config.json (expected a transformers "
                                "save_pretrained folder)")
    return path


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: not a torch device: {device!r}") from err


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` means float32; strings like ``"fp16"`` / ``"bfloat16"`` are accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype: expected a floating point dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype: expected one of {sorted(_DTYPES)} or a torch dtype, got {dtype!r}")


def check_images(images: Sequence[Image.Image], name: str = "images") -> list[Image.Image]:
    """A list of RGB PIL images; raises ``TypeError`` naming the first bad item."""
    if isinstance(images, Image.Image):
        raise TypeError(f"{name}: expected a list of PIL images, got a single image (wrap it in a list)")
    out = []
    for k, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"{name}[{k}]: expected a PIL image, got {type(image).__name__}")
        if image.width < 1 or image.height < 1:
            raise ValueError(f"{name}[{k}]: empty image of size {image.size}")
        out.append(image if image.mode == "RGB" else image.convert("RGB"))
    return out
