"""``ComfyStoryPipeline``: the core ``StoryPipeline`` (same passes, modes, write/read scheme, schedulers) on ComfyUI's
own objects: PixArt from a ``MODEL``, captions through a ``CLIP``, references and frames through a ``VAE``.

Only what a host provides is overridden (``encode_prompt``, ``encode_references``, ``decode_latents``, the model and
the story processors); ComfyUI places the weights: the ``MODEL`` and the subject branch are loaded by
``load_models_gpu`` after the captions and references are encoded (so T5 and the VAE can leave the accelerator
first) and right before the denoising passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from diffusers import DiffusionPipeline

from lay2story_core.pipelines import StoryPipeline, to_tensor_image
from lay2story_core.story import Story
from lay2story_core.text import DEFAULT_MAX_LENGTH

from . import host
from .pixart import ComfyPixArt

__all__ = ["ComfyStoryPipeline"]


class ComfyStoryPipeline(StoryPipeline):
    """Story sampling over a ComfyUI ``MODEL`` + ``CLIP`` + ``VAE`` (+ an optional managed subject branch).

    Args:
        model: the ``MODEL`` (a ``ModelPatcher`` over ComfyUI's PixArt; LoRA-patched clones included).
        clip: the ``CLIP`` ("Load CLIP", type pixart).
        vae: the ``VAE``.
        scheduler: a diffusers scheduler (PixArt's noise schedule).
        subject_branch: the trained branch, or ``None``; ``branch_patcher``: its ``ModelPatcher``.
    """

    def __init__(self, model, clip, vae, scheduler, subject_branch=None, branch_patcher=None) -> None:
        DiffusionPipeline.__init__(self)
        self.register_modules(scheduler=scheduler, subject_branch=subject_branch)
        self.native_model = host.check_native_model(model)
        self.clip = host.check_clip(clip)
        self.comfy_vae = host.check_vae(vae)
        self.branch_patcher = branch_patcher
        self.latent_format = model.model.latent_format
        self.tokenizer = self.text_encoder = self.vae = None
        self.vae_scale_factor = int(getattr(vae, "spacial_compression_encode", lambda: 8)())
        self.transformer = self._bind()
        self.memory_shape: list[int] | None = None  # (batch, 4, h, w) of one pass, for ComfyUI's memory estimate

    @property
    def components(self) -> dict:
        """The diffusers components (ComfyUI's objects are not diffusers modules; ComfyUI manages them)."""
        return {"scheduler": self.scheduler, "subject_branch": self.subject_branch}

    def _bind(self) -> ComfyPixArt:
        model = self.native_model
        dm = model.get_model_object("diffusion_model") if hasattr(model, "get_model_object") else (
            model.model.diffusion_model)
        return ComfyPixArt(dm, self.subject_branch, host.compute_dtype(model), torch.device(model.load_device))

    # -- what this host provides -------------------------------------------------------------------------------
    def encode_prompt(self, texts: Sequence[str], device: torch.device, max_length: int = DEFAULT_MAX_LENGTH):
        """Through ComfyUI's CLIP, as its own text nodes (its PixArt tokenizer neither pads nor cuts)."""
        return host.encode_texts(self.clip, texts, device, self.transformer.dtype)

    @torch.no_grad()
    def encode_references(self, story: Story, references: Mapping, height: int, width: int,
                          device: torch.device) -> dict[str, torch.Tensor]:
        """Scaled latents ``(4, h, w)`` of each character's reference through ComfyUI's VAE and the model's latent
        format (``process_in``)."""
        out = {}
        for char_id, ref in references.items():
            story.character(char_id)
            pixels = to_tensor_image(ref.image, height, width).permute(1, 2, 0)[None].float()  # (1, H, W, 3)
            raw = host.vae_encode(self.comfy_vae, pixels)
            scaled = self.latent_format.process_in(raw.float())
            out[char_id] = scaled[0].to(device=device, dtype=self.transformer.dtype)
        return out

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled ``(F, 4, h, w)`` -> ``(F, 3, H, W)`` in [0, 1] through ComfyUI's VAE (its own batching)."""
        raw = self.latent_format.process_out(latents.float())
        return host.vae_decode(self.comfy_vae, raw).movedim(-1, 1).float().clamp(0, 1)

    def _model(self) -> ComfyPixArt:
        """ComfyUI places the ``MODEL`` and the subject branch now (after T5 and the VAE ran), then the model is
        bound to the ``diffusion_model`` ComfyUI patched (object patches, LoRA weights)."""
        shape = self.memory_shape or [1, self.latent_channels, 64, 64]
        memory = self.native_model.memory_required(shape) if hasattr(self.native_model, "memory_required") else 0
        extra = [self.branch_patcher] if self.branch_patcher is not None else []
        host.load_models(self.native_model, extra, memory)
        self.transformer = self._bind()
        return self.transformer

    @property
    def num_blocks(self) -> int:
        return len(self.transformer.dm.blocks)

    def consistency_processors(self):
        return self.transformer.story_processors()
