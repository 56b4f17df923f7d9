"""A story carried by a ``MODEL`` clone, so ComfyUI's own samplers (KSampler, KSamplerAdvanced,
SamplerCustomAdvanced; any sampler and scheduler) sample a whole story as one batch.

:func:`apply_story` clones the ``MODEL`` and hands the clone to the adapter of its architecture, which patches it
through ComfyUI's documented extension points only (``patches_replace`` attention patches, ``dit`` block
replacements, object patches, wrappers); ComfyUI's classes are never edited. Every adapter calls the same core
maths (:func:`lay2story_core.consistency.consistent_self_attention`, :func:`~lay2story_core.consistency.
regional_cross_attention`) with the per-call context :meth:`StoryPatch.context` builds from ComfyUI's
``transformer_options`` (``cond_or_uncond``: the CFG chunks of the call; ``sigmas`` / ``sample_sigmas``: the step).

=================  ==========================  ==================================================================
architecture       ComfyUI class               adapter
=================  ==========================  ==================================================================
SD1.x, SD2, SDXL   ``UNetModel``               :mod:`.arch_unet`: ``attn1``/``attn2`` replace patches
FLUX.1             ``Flux``                    :mod:`.arch_flux`: ``dit`` block replacements + attention override
PixArt-alpha/Sigma ``PixArtMS``                :mod:`.arch_pixart`: object patch of ``diffusion_model.forward``
=================  ==========================  ==================================================================
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

import torch

from lay2story_core.consistency import StoryBatch, StoryConsistencyContext, step_index

logger = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "StoryPatch", "apply_story", "architecture_of", "check_conditioning",
           "context_widths", "diffusion_model_of"]

# ComfyUI's diffusion-model class name -> (user-facing name, adapter module in this package)
ARCHITECTURES = {
    "UNetModel": ("SD1.5 / SDXL", ".arch_unet"),
    "Flux": ("FLUX.1", ".arch_flux"),
    "PixArtMS": ("PixArt-alpha / -Sigma", ".arch_pixart"),
}
PATCH_KEY = "lay2story_story"  # the key of this pack's wrappers and callbacks on a ModelPatcher


def diffusion_model_of(model) -> torch.nn.Module:
    """The ``diffusion_model`` module a ``MODEL`` (``ModelPatcher``) wraps."""
    if hasattr(model, "get_model_object"):
        return model.get_model_object("diffusion_model")
    return model.model.diffusion_model


def architecture_of(model, field_name: str = "model") -> str:
    """The ComfyUI class name of a ``MODEL``'s diffusion model when an adapter supports it, else ``ValueError``
    naming ``field_name`` and the supported architectures."""
    if model is None or not hasattr(model, "clone") or not hasattr(model, "model"):
        raise ValueError(f"{field_name}: expected a MODEL (from Load Checkpoint / Load Diffusion Model), got "
                         f"{type(model).__name__}")
    name = type(diffusion_model_of(model)).__name__
    if name not in ARCHITECTURES:
        supported = ", ".join(label for label, _ in ARCHITECTURES.values())
        raise ValueError(f"{field_name}: a {name} model is not supported by Lay2Story Apply Story "
                         f"(supported: {supported})")
    return name


@dataclass
class StoryPatch:
    """What a story-patched ``MODEL`` carries: the story batch rule and, optionally, the subject captions' text
    conditioning (regional cross-attention; encoded once by the node with the story's ``CLIP``).

    Args:
        batch: frames, identity frames, the characters' boxes and the consistency settings.
        caption_conds: subject caption -> ``(1, L, C)`` cross-attention context from the ``CLIP`` (SD / SDXL),
            or ``None`` (no regional captions).
        extra: adapter-specific inputs (PixArt: subject branch, references), by name.
    """

    batch: StoryBatch
    caption_conds: dict[str, torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def num_frames(self) -> int:
        return self.batch.num_frames

    def step(self, transformer_options: dict) -> int:
        return step_index(transformer_options.get("sigmas"), transformer_options.get("sample_sigmas"))

    def context(self, transformer_options: dict, rows: int, grid: tuple[int, int],
                device: torch.device | str) -> StoryConsistencyContext:
        """The core context of one model call of ``rows`` batch rows at a token grid; built once per (call, grid):
        every attention layer of the call at that grid shares it (and so shares its samples' generator rule)."""
        chunks = self.batch.chunks_of(rows, "latent_image")
        step = self.step(transformer_options)
        key = (step, chunks, grid, str(device), tuple(transformer_options.get("cond_or_uncond") or ()))
        ctx = self._cache.get(key)
        if ctx is None:
            self._cache.clear()  # one call's contexts at a time (a new step or batch replaces them)
            ctx = self._cache[key] = self.batch.context(chunks, step, grid, device)
        return ctx

    def cond_rows(self, transformer_options: dict, rows: int) -> list[int]:
        """The batch rows of the conditional chunks (``cond_or_uncond`` entries 0) of a call of ``rows`` rows."""
        order = list(transformer_options.get("cond_or_uncond") or [0])
        per = rows // max(len(order), 1)
        return [c * per + f for c, kind in enumerate(order) if kind == 0 for f in range(per)]

    def check_latent(self, latent: torch.Tensor, field_name: str = "latent_image") -> None:
        """A latent batch that is not one element per frame of this story: ``ValueError`` naming the input."""
        frames = int(latent.shape[0])
        if frames != self.num_frames:
            raise ValueError(f"{field_name}: a batch of {frames} latents for a story of {self.num_frames} frames "
                             f"(Lay2Story Apply Story): use Lay2Story Empty Story Latent, one element per frame")


def context_widths(diffusion_model: torch.nn.Module, name: str) -> set[int]:
    """The text-conditioning widths a diffusion model takes (SD1.5 768, SDXL 2048, FLUX and PixArt 4096 as released):
    what a ``CONDITIONING`` from the right ``CLIP`` has as its last dimension."""
    if name == "Flux":
        return {int(diffusion_model.txt_in.weight.shape[1])}
    if name == "PixArtMS":
        return {int(diffusion_model.y_embedder.y_proj.fc1.weight.shape[1])}
    return {int(m.weight.shape[1]) for n, m in diffusion_model.named_modules()
            if n.endswith("attn2.to_k") and hasattr(m, "weight")}


def apply_story(model, patch: StoryPatch, field_name: str = "model"):
    """A clone of ``model`` carrying ``patch`` (the input ``model`` is untouched); ``ValueError`` naming
    ``field_name`` for an architecture no adapter supports, before anything is patched."""
    name = architecture_of(model, field_name)
    adapter = importlib.import_module(ARCHITECTURES[name][1], __package__)
    clone = model.clone()
    adapter.apply(clone, patch)
    _check_before_sampling(clone, patch, context_widths(diffusion_model_of(model), name), ARCHITECTURES[name][0])
    logger.info("Lay2Story: story of %d frames on a %s MODEL", patch.num_frames, ARCHITECTURES[name][0])
    return clone


def check_conditioning(conds: dict, patch: StoryPatch, widths: set[int], label: str) -> None:
    """A sampler's ``positive`` / ``negative`` before the first step: from the model's own text encoder (the width
    its cross-attention takes) and one row per frame (or one row for all); else ``ValueError`` naming the input."""
    for kind in ("positive", "negative"):
        for entry in conds.get(kind) or ():
            cross = entry.get("cross_attn") if isinstance(entry, dict) else None
            if not isinstance(cross, torch.Tensor):
                continue
            if widths and int(cross.shape[-1]) not in widths:
                raise ValueError(f"{kind}: conditioning of width {int(cross.shape[-1])} comes from another CLIP; "
                                 f"this {label} MODEL takes {sorted(widths)}")
            if int(cross.shape[0]) not in (1, patch.num_frames):
                raise ValueError(f"{kind}: conditioning for {int(cross.shape[0])} frames, the story has "
                                 f"{patch.num_frames} (use Lay2Story Story Conditioning with the same story)")


def _check_before_sampling(clone, patch: StoryPatch, widths: set[int], label: str) -> None:
    """An ``OUTER_SAMPLE`` wrapper that refuses, before the first step, a latent of another frame count and
    conditioning from another CLIP or another story (:func:`check_conditioning`)."""
    try:
        extension = importlib.import_module("comfy.patcher_extension")
    except ImportError:  # outside ComfyUI (the tests' stand-in): the first model call checks
        return

    def outer_sample(executor, noise, latent_image, *args, **kwargs):
        patch.check_latent(latent_image)
        check_conditioning(getattr(executor.class_obj, "conds", None) or {}, patch, widths, label)
        return executor(noise, latent_image, *args, **kwargs)

    # a story applied again (another story on a story-patched MODEL) replaces the check, never stacks it
    clone.remove_wrappers_with_key(extension.WrappersMP.OUTER_SAMPLE, PATCH_KEY)
    clone.add_wrapper_with_key(extension.WrappersMP.OUTER_SAMPLE, PATCH_KEY, outer_sample)
