"""``L2S_StorySampler``: every frame of a story with ``lay2story_core``'s ``StoryPipeline``, with ComfyUI's
progress bar, latent previews, Cancel and memory release."""

from __future__ import annotations

import logging

import torch

from lay2story_core.pipelines import MODES, SCHEDULERS, StoryPipeline, make_scheduler
from lay2story_core.story import Layout

from . import comfy_env
from .bundles import StoryModel, TextEncoderBundle, check_model, check_text_encoder
from .layout_editor import apply_layout_to_story
from .reference import check_references
from .story_nodes import check_story

logger = logging.getLogger(__name__)

SAMPLER_MODES = ("auto", *MODES)
MAX_SEED = 0xFFFFFFFFFFFFFFFF

__all__ = ["SCHEDULERS", "L2S_StorySampler", "build_pipeline", "make_scheduler"]


def build_pipeline(model: StoryModel, text_encoder: TextEncoderBundle, scheduler: str) -> StoryPipeline:
    return StoryPipeline(tokenizer=text_encoder.tokenizer, text_encoder=text_encoder.encoder, vae=model.vae,
                         transformer=model.transformer, scheduler=make_scheduler(scheduler, model.scheduler_config),
                         subject_branch=model.subject_branch)


def _int_in(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{field}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


class L2S_StorySampler:
    NODE_ID = "L2S_StorySampler"
    DISPLAY_NAME = "Lay2Story Story Sampler"
    CATEGORY = "Lay2Story/sampling"
    DESCRIPTION = (
        "Generates every frame of a story so the character stays the same: lay2story uses the trained subject "
        "branch (boxes, subject captions, reference image), training_free uses StoryDiffusion-style consistent "
        "attention on plain PixArt, none is plain PixArt. Frames are denoised together; long stories in chunks."
    )
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("images", "latent")
    OUTPUT_TOOLTIPS = (
        "All frames of the story, in order.",
        "The final latents (unscaled SD-VAE latents, as ComfyUI's VAE Decode expects).",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("L2S_MODEL", {"tooltip": "From Lay2Story Model Loader."}),
                "text_encoder": ("L2S_TEXT_ENCODER", {"tooltip": "From Lay2Story Text Encoder Loader."}),
                "story": ("L2S_STORY", {"tooltip": "The story: characters, one prompt per frame, layout."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Random seed: the same seed and settings give the same story."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 1000,
                                  "tooltip": "Denoising steps per frame (the paper: 25)."}),
                "cfg": ("FLOAT", {"default": 4.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (the paper: 4.5; 1 or less: off)."}),
                "scheduler": (list(SCHEDULERS), {"default": "dpmsolver++",
                                                 "tooltip": "Sampler (the paper: DPM-Solver++)."}),
                "mode": (list(SAMPLER_MODES), {
                    "default": "auto",
                    "tooltip": "auto: lay2story when the model has a subject branch, else training_free. "
                               "lay2story: trained branch; training_free: consistent attention; none: plain "
                               "PixArt."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                                  "tooltip": "Frame width in pixels; 0: the story's."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                                   "tooltip": "Frame height in pixels; 0: the story's."}),
                "chunk_size": ("INT", {"default": 0, "min": 0, "max": 256,
                                       "tooltip": "Frames denoised together; 0: all frames at once. Smaller "
                                                  "chunks bound memory for long stories."}),
                "identity_frames": ("INT", {"default": 0, "min": 0, "max": 256,
                                            "tooltip": "With chunks: frames generated first that later chunks look "
                                                       "at for the identity; 0: min(chunk size, 4)."}),
            },
            "optional": {
                "layout": ("L2S_LAYOUT", {"tooltip": "A layout to apply to the story first (frame i gets its "
                                                     "frame i subjects)."}),
                "reference": ("L2S_REFERENCE", {"tooltip": "Reference images of characters (lay2story mode)."}),
            },
        }

    def sample(self, model: StoryModel, text_encoder: TextEncoderBundle, story, seed: int = 0, steps: int = 25,
               cfg: float = 4.5, scheduler: str = "dpmsolver++", mode: str = "auto", width: int = 0,
               height: int = 0, chunk_size: int = 0, identity_frames: int = 0, layout: Layout | None = None,
               reference=None) -> tuple[torch.Tensor, dict]:
        model, text_encoder, story = check_model(model), check_text_encoder(text_encoder), check_story(story)
        seed = _int_in(seed, "seed", 0, MAX_SEED)
        steps = _int_in(steps, "steps", 1, 1000)
        for name, value in (("width", width), ("height", height), ("chunk_size", chunk_size),
                            ("identity_frames", identity_frames)):
            _int_in(value, name, 0, 4096)
        if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0.0 <= cfg <= 100.0:
            raise ValueError(f"cfg: expected a number in [0, 100], got {cfg!r}")
        if mode not in SAMPLER_MODES:
            raise ValueError(f"mode: expected one of {SAMPLER_MODES}, got {mode!r}")
        if mode == "auto":
            mode = "lay2story" if model.has_subject_branch else "training_free"
        if layout is not None:
            if not isinstance(layout, Layout):
                raise ValueError(f"layout: expected an L2S_LAYOUT, got {type(layout).__name__}")
            story = apply_layout_to_story(story, layout, field="layout")
        references = None if reference is None else check_references(reference)
        if identity_frames and not chunk_size:
            logger.info("identity_frames is used with chunk_size only; all frames are denoised together")
        pipe = build_pipeline(model, text_encoder, scheduler)

        encode_device = text_encoder.device or model.device
        pbar = comfy_env.progress_bar(steps)
        previewer = comfy_env.latent_previewer(model.device)

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            comfy_env.throw_if_interrupted()  # Cancel stops within one step
            preview = previewer(latents) if previewer is not None else None
            pbar.update_absolute(step, total, preview)  # inside ComfyUI also a Cancel point

        try:
            text_encoder.encoder.to(encode_device)
            result = pipe(
                story, references=references, mode=mode, num_inference_steps=steps, guidance_scale=float(cfg),
                height=height or None, width=width or None, seed=seed, chunk_size=chunk_size or None,
                identity_frames=(identity_frames or None) if chunk_size else None,
                max_sequence_length=model.max_text_tokens,
                offload_text_encoder=text_encoder.offload, callback=on_step, output_type="pt",
            )
        finally:
            if text_encoder.offload:
                text_encoder.encoder.to(comfy_env.offload_device())
            comfy_env.soft_empty_cache()
        images = result.images.detach().float().permute(0, 2, 3, 1).cpu().contiguous()
        samples = result.latents.detach().float().cpu() / float(model.vae.config.scaling_factor)
        return (images, {"samples": samples})
