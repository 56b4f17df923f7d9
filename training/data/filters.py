"""Optional frame filters (hooks) run after the size filter and before detection. None is active by default.

The paper filtered its ~40K source videos with LAION-Aesthetics (the CLIP-based aesthetic predictor) and the Stable
Diffusion safety checker down to ~25K. Both are available here, loaded from local files, and any callable with the
:class:`FrameFilter` shape can be plugged in:

- ``--filter aesthetic:clip=FOLDER,head=FILE,min_score=5.0``: LAION's improved aesthetic predictor
  (https://github.com/christophschuhmann/improved-aesthetic-predictor): a stack of linear layers (768 -> 1024 -> 128
  -> 64 -> 16 -> 1, no activations in the released model) on L2-normalised CLIP ViT-L/14 image embeddings; ``head``
  is its state dict as ``.safetensors`` (or a ``.pth``, read with ``weights_only=True``). Frames scoring below
  ``min_score`` are dropped.
- ``--filter safety:folder=FOLDER[,adjustment=0.0]`` (or ``--safety-checker FOLDER --safety-adjustment 0.0``):
  diffusers' ``StableDiffusionSafetyChecker`` (e.g. a local copy of ``CompVis/stable-diffusion-safety-checker``,
  with its ``preprocessor_config.json``); flagged frames are dropped.
- ``--aesthetic-head FILE --min-aesthetic 5.0``: the same LAION head as ``aesthetic`` but scored on the CLIP
  embeddings the pipeline computes for de-duplication (no second CLIP model); frames below the score are dropped
  before detection.
- ``--filter my_package.my_module.my_factory:key=value``: any importable factory returning a :class:`FrameFilter`.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

__all__ = ["FILTERS", "AestheticFilter", "EmbeddingAestheticFilter", "FrameFilter", "LinearChainHead", "SafetyFilter",
           "build_filter", "parse_filter_spec"]

logger = logging.getLogger(__name__)


@runtime_checkable
class FrameFilter(Protocol):
    """Takes a batch of frames, returns one keep flag per frame. ``name`` labels its count in the stats."""

    name: str

    def __call__(self, images: Sequence[Image.Image]) -> list[bool]: ...


class LinearChainHead(torch.nn.Module):
    """Linear layers applied in order (the layout of LAION's aesthetic MLP state dict: ``layers.0``, ``layers.2``,
    ... with dropouts between, which do nothing at inference)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        weights = sorted((k for k in state if k.endswith(".weight")),
                         key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k)])
        if not weights:
            raise ValueError("head: the state dict has no '*.weight' tensors")
        self.layers = torch.nn.ModuleList()
        previous = None
        for key in weights:
            weight = state[key]
            bias = state.get(key[: -len("weight")] + "bias")
            if weight.ndim != 2 or (previous is not None and weight.shape[1] != previous):
                raise ValueError(f"head: {key} has shape {tuple(weight.shape)}, expected (out, {previous})")
            layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                layer.weight.copy_(weight)
                if bias is not None:
                    layer.bias.copy_(bias)
            self.layers.append(layer)
            previous = weight.shape[0]
        if previous != 1:
            raise ValueError(f"head: the last layer has {previous} outputs, expected 1 (a score)")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> LinearChainHead:
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"head: aesthetic head file {name!r} not found")
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(name)
        else:
            state = torch.load(name, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        return cls({k: v.float() for k, v in state.items()})

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x[..., 0]


class AestheticFilter:
    """Drops frames whose LAION aesthetic score is below ``min_score`` (the paper's Lay2Story-Bench kept the top 10%
    of videos by aesthetics)."""

    name = "aesthetic"

    def __init__(self, clip, head: LinearChainHead, min_score: float = 5.0) -> None:
        if clip.dim != head.in_features:
            raise ValueError(f"head: expects {head.in_features}-d CLIP embeddings, the CLIP model gives {clip.dim}")
        self.clip = clip
        self.head = head.eval()
        self.min_score = float(min_score)

    @classmethod
    def from_options(cls, clip: str, head: str, min_score: str | float = 5.0, device: str | None = None
                     ) -> AestheticFilter:
        from lay2story_core.vision import ClipEmbedder

        return cls(ClipEmbedder.from_pretrained(clip, device=device), LinearChainHead.from_file(head),
                   float(min_score))

    @torch.inference_mode()
    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.head(self.clip.embed_images(images)).numpy()

    def __call__(self, images: Sequence[Image.Image]) -> list[bool]:
        return [bool(s >= self.min_score) for s in self.scores(images)]


class EmbeddingAestheticFilter:
    """The LAION aesthetic head on the CLIP embeddings the pipeline computes anyway (``--aesthetic-head FILE
    --min-aesthetic 5.0``): no second CLIP pass. The CLIP model must be the one the head was trained on (ViT-L/14
    for LAION's head); the embedding size is checked."""

    name = "aesthetic"

    def __init__(self, head: LinearChainHead, min_score: float = 5.0) -> None:
        self.head = head.eval()
        self.min_score = float(min_score)

    @classmethod
    def from_file(cls, path: str, min_score: float = 5.0, dim: int | None = None) -> EmbeddingAestheticFilter:
        head = LinearChainHead.from_file(path)
        if dim is not None and dim != head.in_features:
            raise ValueError(f"aesthetic_head: {path!r} expects {head.in_features}-d CLIP embeddings, the CLIP model "
                             f"gives {dim}")
        return cls(head, min_score)

    @torch.inference_mode()
    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        return self.head(torch.as_tensor(np.asarray(embeddings, dtype=np.float32))).numpy()

    def keep(self, embeddings: np.ndarray) -> list[bool]:
        return [bool(s >= self.min_score) for s in self.scores(embeddings)]


class SafetyFilter:
    """Drops frames the Stable Diffusion safety checker flags. ``adjustment`` (``--safety-adjustment``) is the
    checker's own margin: 0 is its released behaviour, a positive value flags more, a negative one fewer."""

    name = "safety"

    def __init__(self, checker, image_processor, adjustment: float = 0.0) -> None:
        self.checker = checker.eval()
        self.image_processor = image_processor
        self.adjustment = float(adjustment)

    @classmethod
    def from_options(cls, folder: str, device: str | None = None, adjustment: str | float = 0.0) -> SafetyFilter:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessorPil

        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"folder: {folder!r} is not a safety-checker folder (no config.json)")
        checker = StableDiffusionSafetyChecker.from_pretrained(folder, use_safetensors=True)
        return cls(checker.to(device or "cpu"), CLIPImageProcessorPil.from_pretrained(folder), float(adjustment))

    @torch.inference_mode()
    def flags(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``(n,)`` bools, True = flagged: diffusers' ``StableDiffusionSafetyChecker`` rule (cosine similarity to
        each concept embedding above that concept's threshold; a special-care hit lowers the thresholds by 0.01)
        with ``adjustment`` added to every score."""
        c = self.checker
        pixels = self.image_processor(images=list(images), return_tensors="pt").pixel_values
        param = next(c.parameters())
        embeds = c.visual_projection(c.vision_model(pixels.to(param.device, param.dtype))[1]).float()
        embeds = torch.nn.functional.normalize(embeds, dim=-1)

        def similarity(concepts: torch.Tensor) -> torch.Tensor:
            return embeds @ torch.nn.functional.normalize(concepts.float(), dim=-1).T

        special = similarity(c.special_care_embeds) - c.special_care_embeds_weights.float() + self.adjustment
        # Scores are compared after rounding to 3 decimals, as the checker does.
        adjustment = self.adjustment + 0.01 * (special.round(decimals=3) > 0).any(dim=1, keepdim=True).float()
        concept = similarity(c.concept_embeds) - c.concept_embeds_weights.float() + adjustment
        return (concept.round(decimals=3) > 0).any(dim=1).cpu()

    def __call__(self, images: Sequence[Image.Image]) -> list[bool]:
        if not images:
            return []
        return [not bool(f) for f in self.flags(images)]


FILTERS: Mapping[str, Callable[..., FrameFilter]] = MappingProxyType({
    "aesthetic": AestheticFilter.from_options,
    "safety": SafetyFilter.from_options,
})


def parse_filter_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:key=value,key=value"`` -> ``("name", {"key": "value", ...})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"filter: expected 'NAME[:key=value,...]', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"filter {spec!r}: option {part!r} is not key=value")
        options[key.strip()] = value.strip()
    return name.strip(), options


def build_filter(spec: str) -> FrameFilter:
    """A filter from a spec: a name in :data:`FILTERS` or a dotted import path of a factory, plus options."""
    name, options = parse_filter_spec(spec)
    if name in FILTERS:
        factory = FILTERS[name]
    elif "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"filter {spec!r}: cannot import {name!r}: {err}") from err
    else:
        raise ValueError(f"filter {spec!r}: unknown filter {name!r} (built in: {', '.join(FILTERS)}; or a dotted "
                         "import path of a factory)")
    try:
        made = factory(**options)
    except TypeError as err:
        raise ValueError(f"filter {spec!r}: bad options {sorted(options)}: {err}") from err
    if not callable(made):
        raise ValueError(f"filter {spec!r}: the factory returned {type(made).__name__}, not a callable filter")
    if not getattr(made, "name", None):
        made.name = name
    return made
