"""CLIP image/text embeddings from a local transformers folder (dataset de-duplication, CLIP-I, Recall@1).

Accepts a full ``CLIPModel`` folder (e.g. ``openai/clip-vit-large-patch14`` saved locally: image and text) or a
vision-only ``CLIPVisionModelWithProjection`` folder (image embeddings only). Preprocessing uses the PIL image
processor, so torchvision is never needed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import torch
from PIL import Image

from ._common import check_images, check_model_folder, resolve_device, resolve_dtype

__all__ = ["ClipEmbedder"]

logger = logging.getLogger(__name__)


def _features(output) -> torch.Tensor:
    """``get_image_features`` / ``get_text_features`` return a tensor in transformers 4 and an output object whose
    ``pooler_output`` holds the projected embeddings in transformers 5."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    return batch_size


class ClipEmbedder:
    """L2-normalised CLIP embeddings.

    >>> clip = ClipEmbedder.from_pretrained("models/clip-vit-large-patch14")
    >>> sims = clip.embed_images(images) @ clip.embed_texts(["a red fox"]).T
    """

    def __init__(self, model, image_processor, tokenizer, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None) -> ClipEmbedder:
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel, CLIPVisionModelWithProjection

        path = check_model_folder(folder, "ClipEmbedder")
        device, dtype = resolve_device(device), resolve_dtype(dtype)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
        if model_type == "clip":
            model = CLIPModel.from_pretrained(path, dtype=dtype, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(path)
        elif model_type == "clip_vision_model":
            model = CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype, use_safetensors=True)
            tokenizer = None
        else:
            raise ValueError(f"ClipEmbedder: {path!r} has model_type {model_type!r}; expected 'clip' (CLIPModel) or "
                             "'clip_vision_model' (CLIPVisionModelWithProjection)")
        image_processor = CLIPImageProcessorPil.from_pretrained(path)
        logger.info("loaded CLIP (%s) from %s on %s (%s)", model_type, path, device, dtype)
        return cls(model.to(device), image_processor, tokenizer, device, dtype)

    @property
    def dim(self) -> int:
        """The embedding size."""
        config = self.model.config
        return int(getattr(config, "projection_dim", None) or config.hidden_size)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """``(n, d)`` float32 CPU tensor of L2-normalised image embeddings."""
        images = check_images(images)
        batch_size = _check_batch_size(batch_size)
        chunks = []
        for start in range(0, len(images), batch_size):
            pixels = self.image_processor(images=images[start:start + batch_size], return_tensors="pt").pixel_values
            pixels = pixels.to(self.device, self.dtype)
            if hasattr(self.model, "get_image_features"):
                feats = _features(self.model.get_image_features(pixel_values=pixels))
            else:  # CLIPVisionModelWithProjection
                feats = self.model(pixel_values=pixels).image_embeds
            chunks.append(feats.float().cpu())
        if not chunks:
            return torch.zeros(0, self.dim)
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``(n, d)`` float32 CPU tensor of L2-normalised text embeddings (truncated to the model's max length)."""
        if self.tokenizer is None:
            raise ValueError("embed_texts: this is a vision-only CLIP folder (CLIPVisionModelWithProjection); load a "
                             "full CLIPModel folder for text embeddings")
        if isinstance(texts, str):
            raise TypeError("texts: expected a list of strings, got a single string (wrap it in a list)")
        texts = list(texts)
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{k}]: expected a string, got {type(text).__name__}")
        batch_size = _check_batch_size(batch_size)
        max_len = int(self.model.config.text_config.max_position_embeddings)
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                    max_length=max_len, return_tensors="pt")
            tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            chunks.append(_features(self.model.get_text_features(**tokens)).float().cpu())
        if not chunks:
            return torch.zeros(0, self.dim)
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
