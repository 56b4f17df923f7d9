"""The samplers offered by the CLI and the nodes: built from the model's scheduler config without the pixel-space
defaults that ruin latents, and seeded by the call (a stochastic sampler's step noise comes from the call's
generator, not from the global RNG). That every sampler draws the demo's characters in their boxes is in
``tests/core/test_demo_model.py``."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.pipelines import SCHEDULERS, make_scheduler
from lay2story_core.story import load_story

SIZE = dict(height=16, width=16, num_inference_steps=3, output_type="pt")
STORY = "stories/story.json"


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_latent_samplers_do_not_clip_x0(pipe, name):
    scheduler = make_scheduler(name, pipe.scheduler.config)
    assert scheduler.config.clip_sample is False and not scheduler.config.thresholding
    assert scheduler.config.prediction_type == pipe.scheduler.config.prediction_type


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_sampler_follows_the_seed_alone(pipe, name):
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(name, original.config)
    try:
        torch.manual_seed(0)
        a = pipe(STORY, seed=3, **SIZE).images
        torch.manual_seed(1)  # the global RNG differs: the seed still decides
        b = pipe(STORY, seed=3, **SIZE).images
        c = pipe(STORY, generator=torch.Generator().manual_seed(3), **SIZE).images
        d = pipe(STORY, seed=4, **SIZE).images
    finally:
        pipe.scheduler = original
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, d)


def test_stochastic_samplers_use_their_step_noise(pipe):
    """euler_a's step noise really comes from the generator: same initial latents, other generator state -> other
    story (a deterministic sampler gives the same one)."""
    frames = load_story(STORY).num_frames
    latents = torch.randn(frames, pipe.latent_channels, 16 // pipe.vae_scale_factor, 16 // pipe.vae_scale_factor,
                          generator=torch.Generator().manual_seed(0))
    original = pipe.scheduler
    try:
        out = {}
        for name in ("euler_a", "dpmsolver++"):
            pipe.scheduler = make_scheduler(name, original.config)
            out[name] = [pipe(STORY, latents=latents.clone(), seed=s, **SIZE).images for s in (5, 6)]
    finally:
        pipe.scheduler = original
    assert not torch.allclose(*out["euler_a"])
    assert torch.equal(*out["dpmsolver++"])
