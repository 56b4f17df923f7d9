"""The samplers offered by the CLI and the nodes: built from the model's scheduler config without the pixel-space
defaults that ruin latents, and seeded by the call (a stochastic sampler's step noise comes from the call's
generator, not from the global RNG). That every sampler draws the demo's characters in their boxes is in
``tests/core/test_demo_model.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_pipeline

from lay2story_core.cli import main
from lay2story_core.pipelines import SCHEDULERS, make_scheduler, scheduler_name
from lay2story_core.pipelines.loading import load_story_pipeline, save_story_pipeline
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
    """euler_a's step noise really comes from the call's generator: the same initial latents and seed give the same
    story whatever the global RNG holds, another seed another story (a deterministic sampler: the same one)."""
    frames = load_story(STORY).num_frames
    latents = torch.randn(frames, pipe.latent_channels, 16 // pipe.vae_scale_factor, 16 // pipe.vae_scale_factor,
                          generator=torch.Generator().manual_seed(0))
    original = pipe.scheduler
    try:
        out = {}
        for name in ("euler_a", "dpmsolver++"):
            pipe.scheduler = make_scheduler(name, original.config)
            out[name] = []
            for s, global_seed in ((5, 0), (6, 0), (5, 1)):
                torch.manual_seed(global_seed)
                out[name].append(pipe(STORY, latents=latents.clone(), seed=s, **SIZE).images)
    finally:
        pipe.scheduler = original
    assert torch.equal(out["euler_a"][0], out["euler_a"][2])  # same seed, other global RNG: same story
    assert not torch.allclose(out["euler_a"][0], out["euler_a"][1])
    assert torch.equal(out["dpmsolver++"][0], out["dpmsolver++"][1])


def test_scheduler_names_round_trip(pipe, tmp_path):
    for name in SCHEDULERS:
        scheduler = make_scheduler(name, pipe.scheduler.config)
        scheduler.save_pretrained(tmp_path / name)
        saved = json.loads((tmp_path / name / "scheduler_config.json").read_text())
        assert scheduler_name(scheduler) == scheduler_name(saved) == name
        if name != "dpmsolver++":  # another sampler's settings do not ride along into the saved folder
            assert "solver_order" not in saved and "algorithm_type" not in saved, saved
    assert scheduler_name(make_scheduler("dpmsolver++", {**pipe.scheduler.config, "algorithm_type": "sde-dpmsolver++"})
                          ) == "dpmsolver++"  # the name's own settings win over the config's
    assert scheduler_name({"_class_name": "LCMScheduler"}) is None


def test_the_cli_samples_with_the_models_own_scheduler_unless_told(tmp_path, capsys):
    pipe = make_pipeline()
    pipe.scheduler = make_scheduler("euler_a", pipe.scheduler.config)
    save_story_pipeline(pipe, tmp_path / "m")
    args = ["generate", "--story", STORY, "--model", str(tmp_path / "m"), "--steps", "2", "--height", "16",
            "--width", "16", "--seed", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "own")]) == 0, capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "ddim"), "--scheduler", "ddim"]) == 0

    def read(name):
        with Image.open(tmp_path / name / "frame_000.png") as im:
            return np.asarray(im), json.loads(im.text["lay2story:settings"])["scheduler"]

    (own, own_name), (_, ddim_name) = read("own"), read("ddim")
    assert (own_name, ddim_name) == ("euler_a", "ddim")
    expected = load_story_pipeline(tmp_path / "m")(STORY, num_inference_steps=2, height=16, width=16, seed=3).images
    assert np.array_equal(own, np.asarray(expected[0]))


def test_scheduler_label_names_offered_samplers_and_the_class_otherwise(pipe):
    from diffusers import LCMScheduler

    from lay2story_core.pipelines import scheduler_label

    assert [scheduler_label(make_scheduler(name, pipe.scheduler.config)) for name in SCHEDULERS] == list(SCHEDULERS)
    assert scheduler_label(LCMScheduler.from_config(pipe.scheduler.config)) == "LCMScheduler"
