"""DreamSim-style perceptual distance from backbones in LOCAL transformers folders.

The ``dreamsim`` package (0.2.1) requires torchvision, timm, open-clip-torch and peft (checked in its setup.py), and
torchvision/timm must not be installed here, so it cannot be used. This module re-implements its *ensemble recipe*
(adapted from ``dreamsim/model.py``, MIT licence, Fu et al. 2023):

- each image is resized to the backbone's input size (224 for the published models) with bicubic filtering, no
  crop, values in [0, 1], then normalised with the backbone's constants (ImageNet for DINO, OpenAI CLIP for CLIP and
  OpenCLIP);
- features: DINO ViT-B/16 -> the CLS token output of the last block *before* the final LayerNorm ("cls" at layer
  11); CLIP ViT-B/16 and OpenCLIP ViT-B/16 -> the projected image embedding (512-d, "embedding");
- the per-backbone features are concatenated (768 + 512 + 512), mean-centred over the feature axis and
  L2-normalised (``normalize_embeds=True``); the distance is ``1 - cosine``.

What is NOT reproduced: DreamSim's LoRA fine-tuning on the NIGHTS human-judgement data (the ``ensemble_lora``
adapter). Without it the numbers come from the untuned backbones and are **not** the published DreamSim metric;
results say so in ``variant`` (``"dreamsim-recipe-untuned[...]"``). A folder holding fewer backbones (or a single
backbone folder) gives a documented fallback with the backbones it used named in ``variant``.

Folder layout for :meth:`DreamSimEnsemble.from_pretrained`: either one transformers model folder (``config.json``
+ weights; a single-backbone fallback) or a folder with subfolders named after the recipe's backbones
(``dino_vitb16/`` e.g. from facebook/dino-vitb16, ``clip_vitb16/`` e.g. openai/clip-vit-base-patch16,
``open_clip_vitb16/`` e.g. an OpenCLIP ViT-B/16 converted to transformers' CLIP format); the ones present are used
in that order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .images import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, prepare_batch

logger = logging.getLogger(__name__)

__all__ = ["RECIPE_BACKBONES", "DreamSimBackbone", "DreamSimEnsemble", "normalize_embedding"]

RECIPE_BACKBONES: tuple[str, ...] = ("dino_vitb16", "clip_vitb16", "open_clip_vitb16")
_VIT_TYPES = {"vit", "dinov2", "dinov2_with_registers"}
_CLIP_TYPES = {"clip", "clip_vision_model"}


def normalize_embedding(embed: torch.Tensor) -> torch.Tensor:
    """DreamSim's ``normalize_embedding``: subtract each row's mean, then divide by its L2 norm."""
    embed = embed - embed.mean(dim=-1, keepdim=True)
    return embed / embed.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class DreamSimBackbone(nn.Module):
    """One backbone of the ensemble: a transformers vision model plus its recipe preprocessing and feature."""

    def __init__(self, model: nn.Module, *, feature: str, name: str, image_size: int, mean, std):
        super().__init__()
        if feature not in ("cls", "embedding"):
            raise ValueError(f"feature: expected 'cls' or 'embedding', got {feature!r}")
        self.model = model.eval().requires_grad_(False)
        self.feature = feature
        self.name = name
        self.image_size = int(image_size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, name: str | None = None) -> DreamSimBackbone:
        """Load a DINO/ViT (``model_type`` vit/dinov2) or CLIP (clip/clip_vision_model) folder, local files only."""
        from transformers import AutoConfig

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"dreamsim backbone: no config.json in {str(folder)!r}")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        model_type = getattr(config, "model_type", None)
        name = name or folder.name
        if model_type in _VIT_TYPES:
            from transformers import AutoModel

            extra = {"add_pooling_layer": False} if model_type == "vit" else {}  # DreamSim never uses the pooler
            model = AutoModel.from_pretrained(folder, local_files_only=True, **extra)
            size = _image_size(model.config)
            return cls(model, feature="cls", name=name, image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if model_type in _CLIP_TYPES:
            from transformers import CLIPVisionModelWithProjection

            kwargs = {}
            if model_type == "clip":  # a full CLIPModel folder: load only its vision tower + projection
                vision = config.vision_config
                vision.projection_dim = config.projection_dim
                kwargs["config"] = vision
            model = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True, **kwargs)
            size = _image_size(model.config)
            return cls(model, feature="embedding", name=name, image_size=size, mean=OPENAI_CLIP_MEAN,
                       std=OPENAI_CLIP_STD)
        raise ValueError(
            f"dreamsim backbone {str(folder)!r}: unsupported model_type {model_type!r} "
            f"(expected one of {sorted(_VIT_TYPES | _CLIP_TYPES)})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = prepare_batch(images, self.image_size, mean=self.mean, std=self.std, resample="bicubic")
        pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
        if self.feature == "embedding":
            return self.model(pixel_values=pixels).image_embeds.float()
        # CLS token of the last block's output, before the final LayerNorm (DreamSim hooks blocks[11]).
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-1][:, 0].float()


def _image_size(config) -> int:
    size = getattr(config, "image_size", None)
    if size is None and hasattr(config, "vision_config"):
        size = getattr(config.vision_config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size or 224)


class DreamSimEnsemble(nn.Module):
    """Concatenated, mean-centred, L2-normalised backbone features; distance = ``1 - cos``. See the module doc."""

    def __init__(self, backbones: Sequence[DreamSimBackbone], *, normalize_embeds: bool = True,
                 batch_size: int = 16):
        super().__init__()
        if not backbones:
            raise ValueError("backbones: need at least one backbone")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size!r}")
        self.backbones = nn.ModuleList(backbones)
        self.normalize_embeds = normalize_embeds
        self.batch_size = batch_size

    @property
    def backbone_names(self) -> list[str]:
        return [b.name for b in self.backbones]

    @property
    def variant(self) -> str:
        """What this really is, recorded in every result."""
        names = self.backbone_names
        if tuple(names) == RECIPE_BACKBONES:
            return f"dreamsim-recipe-untuned[{'+'.join(names)}]"
        return f"dreamsim-recipe-fallback[{'+'.join(names)}]"

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs) -> DreamSimEnsemble:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"dreamsim: folder {str(folder)!r} does not exist")
        if (folder / "config.json").is_file():
            logger.warning("dreamsim: %s is a single backbone; using the single-backbone fallback", folder)
            return cls([DreamSimBackbone.from_folder(folder)], **kwargs)
        found = [folder / name for name in RECIPE_BACKBONES if (folder / name / "config.json").is_file()]
        if not found:
            raise FileNotFoundError(
                f"dreamsim: {str(folder)!r} holds neither a config.json nor any of the subfolders "
                f"{', '.join(RECIPE_BACKBONES)} (each a transformers model folder)"
            )
        if len(found) < len(RECIPE_BACKBONES):
            logger.warning("dreamsim: only %s found in %s; results are a fallback", [p.name for p in found], folder)
        return cls([DreamSimBackbone.from_folder(path, name=path.name) for path in found], **kwargs)

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``(n, D)`` embeddings (normalised when ``normalize_embeds``), float32 on CPU."""
        if len(images) == 0:
            raise ValueError("images: need at least one image")
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            chunks.append(torch.cat([backbone(batch).cpu() for backbone in self.backbones], dim=-1))
        embed = torch.cat(chunks)
        return normalize_embedding(embed) if self.normalize_embeds else embed

    def distance(self, images_a: Sequence[Image.Image], images_b: Sequence[Image.Image]) -> torch.Tensor:
        """Element-wise DreamSim distance ``(n,)`` between two equally long image lists."""
        if len(images_a) != len(images_b):
            raise ValueError(f"images_b: expected {len(images_a)} images to pair with images_a, got {len(images_b)}")
        a, b = self.embed(images_a), self.embed(images_b)
        return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=-1)

    def pairwise_distance(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``(n, n)`` matrix of distances between all images."""
        e = torch.nn.functional.normalize(self.embed(images), dim=-1)
        return (1.0 - e @ e.T).clamp_min(0.0)
