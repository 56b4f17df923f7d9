"""Plain sampling (``mode="none"``) is PixArt: ``StoryPipeline`` equals diffusers' own ``PixArtAlphaPipeline`` /
``PixArtSigmaPipeline`` on the same tiny random components, the same initial latents and the same settings, for
every sampler the project offers (``make_scheduler``) in every timestep spacing diffusers has for it, with and
without guidance, for a multi-frame story (each frame against diffusers' image for its caption), jointly and in
write/read chunks, with 1024-MS micro-conditions and for PixArt-Sigma at its 300-token captions.

Tolerance (:func:`gap`: max difference relative to the tensor's scale, at least 1): both sides run the same fp32
operations on the same weights, only batched differently (the story puts the conditional half first, diffusers the
unconditional one; the story encodes every distinct caption in one T5 batch and decodes frame by frame, diffusers
encodes prompts and negatives apart and decodes the batch). fp32 batching noise is ~1e-6 per call (GEMM/SDPA
blocking); measured here: final latents bit-identical, images <= 3.6e-7. :data:`TOL` = 1e-5 leaves room for other
BLAS builds and stays over 500 times below what a real disagreement gives: guidance 4.5 against 4.0 (the negative
control) 8.7e-3 on latents and 1.2e-2 on images; Sigma captions cut at 120 instead of 300 tokens 5.5e-3; the
initial noise scaled for the wrong schedule (Euler, leading spacing) 5.5 on latents and 0.36 on images."""

from __future__ import annotations

import pytest
import torch
from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline
from tiny_models import make_pixart, make_t5, make_tokenizer, make_vae

from lay2story_core.pipelines import SCHEDULERS, StoryPipeline, default_scheduler, make_scheduler
from lay2story_core.story import Story

TOL = 1e-5  # relative (see gap); measured <= 3.6e-7 over every case here (fp32 batching noise)
SIZE, STEPS = 16, 4  # 16 px through the factor-2 tiny VAE: 8x8 latents, 4x4 patches
# the spacings diffusers' samplers support (all five offer all three); "leading" with steps_offset=1 as in Stable
# Diffusion's configs: the schedule does not start at the last training timestep, so Euler's starting sigma depends
# on the step count
SPACINGS = {"linspace": {"timestep_spacing": "linspace", "steps_offset": 0},
            "leading": {"timestep_spacing": "leading", "steps_offset": 1},
            "trailing": {"timestep_spacing": "trailing", "steps_offset": 0}}
STORY = Story.from_dict({
    "version": 1, "width": SIZE, "height": SIZE, "negative_prompt": "a sad night",
    "characters": [{"id": "fox", "identity": "a small red fox"}],
    "frames": [
        # mode none ignores layout: the box and subject caption change nothing
        {"prompt": "reading a book under a tree",
         "subjects": [{"character": "fox", "box": [0.1, 0.1, 0.6, 0.9], "caption": "the fox sitting"}]},
        {"prompt": "walking on a bridge at night"},
        {"prompt": "standing in the green grass"},
    ],
})


def components(kind: str) -> dict:
    pixart = make_pixart(kind)
    return dict(tokenizer=make_tokenizer(), text_encoder=make_t5(pixart.config.caption_channels), vae=make_vae(),
                transformer=pixart)


@pytest.fixture(scope="module")
def alpha():
    return components("alpha512")


def scheduler(name: str, spacing: str = "linspace"):
    return make_scheduler(name, {**default_scheduler().config, **SPACINGS[spacing]})


def initial_latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(seed))


def ours(parts: dict, name: str, spacing: str = "linspace", story: Story = STORY, guidance: float = 4.5,
         **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents, images)`` of the story in mode none, images ``(F, 3, H, W)`` in [0, 1]."""
    pipe = StoryPipeline(**parts, scheduler=scheduler(name, spacing))
    out = pipe(story, mode="none", num_inference_steps=STEPS, guidance_scale=guidance, height=SIZE, width=SIZE,
               latents=initial_latents(story.num_frames), seed=0, output_type="pt", **kwargs)
    return out.latents, out.images


def theirs(parts: dict, name: str, spacing: str = "linspace", prompts: list[str] | None = None,
           guidance: float = 4.5, latents: torch.Tensor | None = None, cls=PixArtAlphaPipeline,
           **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' ``(latents, images)`` for the story's captions (or ``prompts``), batched as one call."""
    prompts = prompts or [STORY.global_caption(i) for i in range(STORY.num_frames)]
    pipe = cls(**parts, scheduler=scheduler(name, spacing))
    pipe.set_progress_bar_config(disable=True)
    seen = []
    images = pipe(prompts, negative_prompt=STORY.negative_prompt, num_inference_steps=STEPS,
                  guidance_scale=guidance, height=SIZE, width=SIZE,
                  latents=initial_latents(len(prompts)) if latents is None else latents,
                  generator=torch.Generator().manual_seed(0), use_resolution_binning=False, clean_caption=False,
                  output_type="pt", callback=lambda i, t, lat: seen.append(lat), callback_steps=1, **kwargs).images
    return seen[-1], images


def gap(x: torch.Tensor, y: torch.Tensor) -> float:
    """Max ``|x - y|`` relative to ``y``'s scale (images: [0, 1]; latents: the untrained tiny models leave them at
    up to ~300), at least 1."""
    assert x.shape == y.shape
    return float((x - y).abs().max()) / max(1.0, float(y.abs().max()))


def assert_same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Final latents and decoded images equal to :data:`TOL`."""
    for x, y, what in ((a[0], b[0], "latents"), (a[1], b[1], "images")):
        diff = gap(x, y)
        assert diff < TOL, f"{what}: max |story - diffusers| / scale = {diff:.3g}"


# ------------------------------------------------------------------------------------ every sampler, every spacing
@pytest.mark.parametrize("spacing", list(SPACINGS))
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_offered_sampler_equals_diffusers(alpha, name, spacing):
    """CFG 4.5, a 3-frame story denoised jointly: each frame equals diffusers' image for its caption (stochastic
    samplers too: both draw their step noise from the same seeded generator, in the same shapes)."""
    assert_same(ours(alpha, name, spacing), theirs(alpha, name, spacing))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_without_guidance(alpha, name):
    """CFG 1: one model call per step without the unconditional half, on both sides (leading spacing)."""
    assert_same(ours(alpha, name, "leading", guidance=1.0), theirs(alpha, name, "leading", guidance=1.0))


def test_the_initial_noise_has_the_scale_of_the_schedule_run(alpha):
    """Euler with leading spacing (steps_offset 1), 10 steps: the schedule starts at t=901, sigma 61.39, not at the
    last training timestep's 157.41 (the scheduler's ``init_noise_sigma`` before its timesteps are set). Euler feeds
    the model ``x / sqrt(sigma_t^2 + 1)``: at the first step that is the unscaled noise itself exactly when the noise
    was scaled for the schedule run (the old scale gave 2.56 times the noise)."""
    pipe = StoryPipeline(**alpha, scheduler=scheduler("euler", "leading"))
    noise = initial_latents(3)
    inputs, timesteps = [], []
    hook = pipe.transformer.pos_embed.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    try:
        pipe(STORY, mode="none", num_inference_steps=10, guidance_scale=4.5, height=SIZE, width=SIZE, latents=noise,
             callback_on_step_end=lambda p, i, t, kw: timesteps.append(int(t)) or kw)
    finally:
        hook.remove()
    assert timesteps[0] == 901
    torch.testing.assert_close(inputs[0], torch.cat([noise, noise]))  # the conditional and unconditional halves
    # the pipeline's own scheduler stays unset (every pass prepares a copy): its sigma is the training schedule's
    assert float(pipe.scheduler.init_noise_sigma) == pytest.approx(157.41, abs=0.01)
    assert float(pipe.prepared_scheduler(10).init_noise_sigma) == pytest.approx(61.39, abs=0.01)
    scaled = pipe.prepare_latents(3, SIZE, SIZE, None, torch.device("cpu"), torch.float32, noise,
                                  num_inference_steps=10)
    torch.testing.assert_close(scaled, noise * pipe.prepared_scheduler(10).init_noise_sigma)


# ----------------------------------------------------------------------------------- frames, chunks, conditions
def test_each_frame_equals_a_call_with_its_caption_alone(alpha):
    """Frames are independent batch elements in mode none: frame ``i`` of the joint story equals diffusers run on
    caption ``i`` alone, from frame ``i``'s initial latents."""
    story = ours(alpha, "euler", "leading")
    noise = initial_latents(STORY.num_frames)
    for i in range(STORY.num_frames):
        single = theirs(alpha, "euler", "leading", prompts=[STORY.global_caption(i)], latents=noise[i:i + 1])
        assert_same((story[0][i:i + 1], story[1][i:i + 1]), single)


@pytest.mark.parametrize("name", ["euler", "dpmsolver++"])
def test_write_read_chunks_start_from_the_same_noise(alpha, name):
    """A long story's passes (identity frames written, the rest read in chunks) share the initial noise scaled for
    the schedule run: in mode none they equal diffusers' single call. (Deterministic samplers: a stochastic one
    draws its step noise per pass, in other shapes than one batched call.)"""
    assert_same(ours(alpha, name, "leading", chunk_size=1, identity_frames=1), theirs(alpha, name, "leading"))


@pytest.mark.parametrize("name,spacing", [("dpmsolver++", "linspace"), ("euler", "leading")])
def test_1024ms_micro_conditions(name, spacing):
    parts = components("alpha1024ms")
    assert parts["transformer"].use_additional_conditions
    assert_same(ours(parts, name, spacing), theirs(parts, name, spacing))


# --------------------------------------------------------------------------------------------- PixArt-Sigma
LONG_CAPTION = " ".join(["a small red fox reading a book under a big green tree in the grass at night"] * 12)


@pytest.fixture(scope="module")
def sigma_folder(tmp_path_factory):
    """A diffusers PixArt-Sigma pipeline folder (``model_index.json`` names ``PixArtSigmaPipeline``)."""
    folder = tmp_path_factory.mktemp("sigma") / "pixart-sigma"
    PixArtSigmaPipeline(**components("sigma"), scheduler=default_scheduler()).save_pretrained(folder)
    return folder


def test_sigma_samples_with_300_token_captions_as_diffusers(sigma_folder, tmp_path):
    """A pipeline loaded from a Sigma model pads and cuts captions at 300 tokens (diffusers' Sigma pipeline and the
    sampler node do), keeps it through save/from_pretrained, and a caller can still ask for another length."""
    story = Story.from_dict({**STORY.to_dict(), "frames": [{"prompt": LONG_CAPTION}, {"prompt": "at night"}]})
    pipe = StoryPipeline.from_pretrained(sigma_folder)
    prompts = [story.global_caption(i) for i in range(story.num_frames)]
    assert 120 < len(pipe.tokenizer(prompts[0]).input_ids) < 300  # the cut at 120 would matter
    parts = {k: getattr(pipe, k) for k in ("tokenizer", "text_encoder", "vae", "transformer")}
    # DPM-Solver++ (PixArt's own): no starting-sigma question here, only the caption length
    reference = theirs(parts, "dpmsolver++", prompts=prompts, cls=PixArtSigmaPipeline)  # 300 by default
    pipe.scheduler = scheduler("dpmsolver++")
    run = dict(mode="none", num_inference_steps=STEPS, guidance_scale=4.5, height=SIZE, width=SIZE,
               latents=initial_latents(2), seed=0, output_type="pt")
    out = pipe(story, **run)
    assert_same((out.latents, out.images), reference)
    assert pipe.max_sequence_length == 300
    cut = pipe(story, max_sequence_length=120, **run).latents  # overridable per call, and the cut matters
    assert gap(cut, reference[0]) > 100 * TOL
    pipe.save_pretrained(tmp_path / "saved")
    assert StoryPipeline.from_pretrained(tmp_path / "saved").max_sequence_length == 300


# ---------------------------------------------------------------------------------------------- negative control
def test_the_comparison_catches_a_disagreement(alpha):
    """The same check with guidance 4.5 on one side and 4.0 on the other fails: the tolerance is far below what
    a real difference in settings gives."""
    a, b = ours(alpha, "dpmsolver++"), theirs(alpha, "dpmsolver++", guidance=4.0)
    with pytest.raises(AssertionError, match="latents: max"):
        assert_same(a, b)
    assert gap(a[0], b[0]) > 100 * TOL and gap(a[1], b[1]) > 100 * TOL  # measured 8.7e-3 and 1.2e-2
