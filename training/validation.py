"""Validation during training: the loss on held-out stories, and stories rendered with the real pipeline.

The validation loss uses fixed noise, timesteps and no dropout (a fresh generator seeded by ``--seed`` each time), so
values are comparable across steps. Rendering goes through :class:`lay2story_core.pipelines.StoryPipeline` with the
model being trained (EMA weights when kept), T5 and the VAE; images are saved under
``output_dir/validation/step-<N>/`` and sent to image-capable trackers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch

from lay2story_core.story import load_story

from .dataset import StoryBatch
from .features import CaptionEncoder, DropoutConfig, compute_loss, prepare_inputs
from .losses import GaussianDiffusion
from .modeling import Components

__all__ = ["render_validation_stories", "validation_loss"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def validation_loss(model, batches: Iterable[StoryBatch], *, stage: int, captions: CaptionEncoder,
                    components: Components, diffusion: GaussianDiffusion, seed: int, device: torch.device,
                    max_batches: int) -> dict[str, float]:
    """Sums of the per-frame hybrid loss and its MSE / VLB parts over up to ``max_batches`` batches, and the number
    of frames (``{"loss", "mse", "vb", "frames"}``; divide, after summing over ranks)."""
    generator = torch.Generator().manual_seed(seed + 12345)
    totals = {"loss": 0.0, "mse": 0.0, "vb": 0.0, "frames": 0.0}
    modes = _modes(model)
    model.eval()
    try:
        for k, batch in enumerate(batches):
            if k >= max_batches:
                break
            if not batch.examples:
                continue
            inputs = prepare_inputs(batch, stage=stage, captions=captions, vae=components.vae,
                                    vae_info=components.vae_info, diffusion=diffusion, generator=generator,
                                    dropout=DropoutConfig.off(), patch_size=components.patch_size, device=device,
                                    use_additional_conditions=components.model.transformer.use_additional_conditions)
            losses = compute_loss(model, inputs, diffusion)
            for name in ("loss", "mse", "vb"):
                totals[name] += float(getattr(losses, name).sum())
            totals["frames"] += batch.num_frames
    finally:
        _restore(modes)
    return totals


@torch.no_grad()
def render_validation_stories(model, components: Components, story_paths: list[str], *, step: int, folder: str,
                              device: torch.device, seed: int, num_inference_steps: int, guidance_scale: float,
                              resolution: int, autocast=None) -> dict[str, list]:
    """Render each story with :class:`~lay2story_core.pipelines.StoryPipeline` and save its frames and a contact
    sheet as PNG; returns ``{story name: PIL images}``. ``autocast``: a factory of the context the denoising runs in
    (mixed precision: the frozen global branch is in half precision, the trained subject branch in float32). The
    story is drawn at its own size, capped to the training resolution's area (keeping its aspect ratio, rounded to
    the model's multiple)."""
    from contextlib import nullcontext

    from lay2story_core.pipelines import StoryPipeline, contact_sheet

    autocast = autocast if autocast is not None else nullcontext

    if components.text_encoder is None or components.vae is None:
        raise ValueError("validation_stories: rendering needs T5 and the VAE loaded")
    transformer = model.transformer
    branch = model.subject_branch
    pipe = StoryPipeline(tokenizer=components.tokenizer, text_encoder=components.text_encoder, vae=components.vae,
                         transformer=transformer, subject_branch=branch)
    multiple = components.vae_info.scale_factor * components.patch_size
    out_dir = os.path.join(folder, f"step-{step}")
    os.makedirs(out_dir, exist_ok=True)
    rendered = {}
    modes = _modes(model)
    model.eval()
    # the pipeline runs where its first component is: bring T5 and the VAE to the model's device meanwhile
    homes = [(m, next(m.parameters()).device) for m in (components.text_encoder, components.vae)]
    for module, _ in homes:
        module.to(device)
    try:
        for path in story_paths:
            story = load_story(path)
            scale = min(1.0, (resolution * resolution / (story.width * story.height)) ** 0.5)
            height = max(multiple, int(story.height * scale) // multiple * multiple)
            width = max(multiple, int(story.width * scale) // multiple * multiple)
            mode = "lay2story" if branch is not None else "none"
            with autocast():
                images = pipe(story, mode=mode, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              height=height, width=width, seed=seed).images
            name = os.path.splitext(os.path.basename(path))[0]
            for i, image in enumerate(images):
                _save_png(image, os.path.join(out_dir, f"{name}-{i:02d}.png"))
            _save_png(contact_sheet(images), os.path.join(out_dir, f"{name}.png"))
            rendered[name] = images
    finally:
        _restore(modes)
        for module, home in homes:
            module.to(home)
    logger.info("rendered %d validation stories to %s", len(rendered), out_dir)
    return rendered


def _modes(model) -> list:
    """Every sub-module's train/eval flag (a stage-2 model trains its subject branch, its global branch is eval)."""
    return [(m, m.training) for m in model.modules()]


def _restore(modes: list) -> None:
    for module, training in modes:
        module.training = training


def _save_png(image, path: str) -> None:
    tmp = f"{path}.tmp"
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
