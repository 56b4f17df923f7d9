"""The story sampler node on a tiny pipeline: outputs, modes, layout/reference inputs, schedulers, progress and
previews, Cancel (an interrupt raised from the step callback) and memory release."""

from __future__ import annotations

import pytest
import torch

from lay2story_core.story import Layout, Story, Subject
from nodes import comfy_env
from nodes.loaders import L2S_ModelLoader, L2S_TextEncoderLoader
from nodes.reference import L2S_ReferenceImage
from nodes.sampler import SCHEDULERS, L2S_StorySampler, build_pipeline, make_scheduler

PIPE = "lay2story/tiny_pipeline"
STORY = Story.from_dict({
    "version": 1, "width": 16, "height": 16,
    "characters": [{"id": "hero", "identity": "a red fox"}],
    "frames": [{"prompt": "in the grass"}, {"prompt": "on a bridge"}, {"prompt": "at night"}],
})
LAYOUT = Layout(frames=((Subject("hero", (0.0, 0.0, 0.5, 0.5), "the fox sitting"),),
                        (Subject("hero", (0.5, 0.5, 1.0, 1.0)),)), characters=("hero",))


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


@pytest.fixture
def models(comfy_models):
    (model,) = L2S_ModelLoader().load(PIPE, "auto", "auto", "fp32", "cpu")
    (text_encoder,) = L2S_TextEncoderLoader().load(PIPE, "auto", "fp32", "cpu", True)
    return model, text_encoder


def sample(models, **kwargs):
    model, text_encoder = models
    args = {"seed": 1, "steps": 2, "cfg": 4.5, "scheduler": "dpmsolver++", "mode": "auto", "width": 0, "height": 0,
            "chunk_size": 0, "identity_frames": 0}
    return L2S_StorySampler().sample(model, text_encoder, kwargs.pop("story", STORY), **{**args, **kwargs})[:2]


def test_outputs_are_comfyui_images_and_unscaled_latents(models):
    images, latent = sample(models)
    assert images.shape == (3, 16, 16, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0.0
    samples = latent["samples"]
    assert samples.shape == (3, 4, 8, 8) and samples.dtype == torch.float32
    vae = models[0].vae
    with torch.no_grad():  # ComfyUI's VAE Decode gets the unscaled latents: decoding them gives the frames back
        decoded = (vae.decode(samples).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(decoded, images, atol=1e-4, rtol=0)


def test_seed_size_layout_and_reference_change_the_story(models):
    base, _ = sample(models)
    assert torch.equal(base, sample(models)[0])  # same seed, same story
    assert not torch.equal(base, sample(models, seed=2)[0])
    assert sample(models, width=32, height=16)[0].shape == (3, 16, 32, 3)
    with_layout, _ = sample(models, layout=LAYOUT)
    assert not torch.allclose(with_layout, base)  # the trained branch reads the boxes
    (refs,) = L2S_ReferenceImage().build(torch.rand(1, 16, 16, 3), "hero", 0.25, 0.25, 0.75, 0.75)
    assert not torch.allclose(sample(models, reference=refs)[0], base)


def test_modes(models):
    model, text_encoder = models
    auto, _ = sample(models)
    assert torch.equal(auto, sample(models, mode="lay2story")[0])  # auto = lay2story with a subject branch
    free, _ = sample(models, mode="training_free")
    plain, _ = sample(models, mode="none")
    assert not torch.equal(free, auto) and not torch.equal(plain, free)
    (no_branch,) = L2S_ModelLoader().load(PIPE, "none", "auto", "fp32", "cpu")
    assert torch.equal(sample((no_branch, text_encoder), mode="auto")[0], free)  # auto = training_free without one
    with pytest.raises(ValueError, match="^mode: 'lay2story' needs a subject branch"):
        sample((no_branch, text_encoder), mode="lay2story")


def test_consistency_settings_are_the_pipelines(models):
    """training_free with rate 1 on every block samples what the pipeline samples with that ConsistencyConfig."""
    from lay2story_core.consistency import ConsistencyConfig

    model, text_encoder = models
    free, _ = sample(models, mode="training_free", consistency_rate=1.0, consistency_blocks="all")
    default, _ = sample(models, mode="training_free")
    assert torch.equal(default, sample(models, mode="training_free", consistency_blocks="second_half")[0])
    pipe = build_pipeline(model, text_encoder, "dpmsolver++")
    for config, result in ((ConsistencyConfig(rate=1.0, blocks="all"), free), (ConsistencyConfig(), default)):
        expected = pipe(STORY, mode="training_free", consistency=config, num_inference_steps=2, guidance_scale=4.5,
                        seed=1, output_type="pt").images.permute(0, 2, 3, 1)
        torch.testing.assert_close(result, expected, atol=1e-6, rtol=0)
    assert not torch.equal(free, default)
    # the other modes ignore them
    assert torch.equal(sample(models, mode="none")[0], sample(models, mode="none", consistency_rate=1.0)[0])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs(models, name):
    images, _ = sample(models, scheduler=name, steps=2, cfg=1.0)
    assert torch.isfinite(images).all() and images.shape == (3, 16, 16, 3)
    assert type(make_scheduler(name, models[0].scheduler_config)).__name__ == SCHEDULERS[name][0]


def test_progress_previews_and_chunks(models, monkeypatch):
    updates, previewed = [], []

    class Bar:
        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total, preview))

    monkeypatch.setattr(comfy_env, "progress_bar", lambda total: Bar())
    monkeypatch.setattr(comfy_env, "latent_previewer",
                        lambda device: lambda latents: previewed.append(tuple(latents.shape)) or "jpeg")
    sample(models, steps=3, chunk_size=1, identity_frames=1)
    assert [u[:2] for u in updates] == [(i, 9) for i in range(1, 10)]  # 3 passes x 3 steps
    assert all(u[2] == "jpeg" for u in updates) and previewed == [(1, 4, 8, 8)] * 9


def test_cancel_stops_within_a_step_and_releases_memory(models, monkeypatch):
    model, text_encoder = models
    events = []

    def interrupted():
        events.append("check")
        if events.count("check") == 2:
            raise Interrupted

    class Bar:
        def update_absolute(self, value, total=None, preview=None):
            events.append(("step", value))

    monkeypatch.setattr(comfy_env, "throw_if_interrupted", interrupted)
    monkeypatch.setattr(comfy_env, "progress_bar", lambda total: Bar())
    monkeypatch.setattr(comfy_env, "soft_empty_cache", lambda: events.append("empty_cache"))
    moved = []
    monkeypatch.setattr(comfy_env, "offload_device", lambda: moved.append("offload") or torch.device("cpu"))
    node = L2S_StorySampler()
    with pytest.raises(Interrupted):
        node.sample(model, text_encoder, STORY, seed=1, steps=25, cfg=4.5, scheduler="dpmsolver++", mode="auto",
                    width=0, height=0, chunk_size=0, identity_frames=0)
    assert events == ["check", ("step", 1), "check", "empty_cache"]  # stopped at step 2 of 25
    assert moved == ["offload"]  # the offloading text encoder went back to its offload device


def test_memory_is_released_after_a_normal_run_too(models, monkeypatch):
    released = []
    monkeypatch.setattr(comfy_env, "soft_empty_cache", lambda: released.append(True))
    sample(models)
    assert released == [True]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, r"^steps: expected an integer in 1\.\.1000, got 0"),
    ({"cfg": -1.0}, r"^cfg: expected a finite number >= 0 \(1 or less: no guidance\), got -1\.0"),
    ({"width": 18}, "^width: must be a positive multiple of 4, got 18"),
    ({"mode": "magic"}, "^mode: expected one of"),
    ({"scheduler": "lms"}, "^scheduler: expected one of"),
    ({"seed": -1}, "^seed: expected an integer"),
    ({"chunk_size": 1, "identity_frames": 5}, r"^identity_frames: must be in \[1, 3\], got 5"),
    ({"story": "a story"}, "^story: expected an L2S_STORY"),
    ({"layout": "boxes"}, "^layout: expected an L2S_LAYOUT"),
    ({"reference": {"hero": 1}}, "^reference: expected an L2S_REFERENCE"),
    ({"consistency_rate": 2.0}, r"^consistency_rate: expected a number in \[0, 1\], got 2.0"),
    ({"consistency_blocks": "half"}, "^consistency_blocks: expected 'second_half', 'all' or block indices"),
    ({"consistency_blocks": "0,9"}, r"^consistency_blocks: \[9\] out of range for a transformer with 4 blocks"),
])
def test_input_errors_name_the_input(models, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(models, **kwargs)


def test_socket_type_errors(models):
    model, text_encoder = models
    with pytest.raises(ValueError, match="^model: expected an L2S_MODEL"):
        L2S_StorySampler().sample(text_encoder, text_encoder, STORY)
    with pytest.raises(ValueError, match="^text_encoder: expected an L2S_TEXT_ENCODER"):
        L2S_StorySampler().sample(model, model, STORY)


def test_cancel_in_training_free_mode_restores_the_attention_processors(models, monkeypatch):
    model, text_encoder = models
    before = {name: type(p) for name, p in model.transformer.attn_processors.items()}

    def interrupted():
        raise Interrupted

    monkeypatch.setattr(comfy_env, "throw_if_interrupted", interrupted)
    with pytest.raises(Interrupted):
        sample(models, mode="training_free")
    assert {name: type(p) for name, p in model.transformer.attn_processors.items()} == before
    monkeypatch.setattr(comfy_env, "throw_if_interrupted", lambda: None)
    assert torch.isfinite(sample(models, mode="none")[0]).all()  # the shared model still samples


def test_box_strength_widget_is_the_pipelines_box_control(models):
    """box_strength (appended last) reaches ConsistencyConfig; 0 is training-free sampling without box control."""
    from lay2story_core.consistency import ConsistencyConfig
    from nodes.layout_editor import apply_layout_to_story

    model, text_encoder = models
    kwargs = dict(mode="training_free", layout=LAYOUT, consistency_rate=1.0, consistency_blocks="all")
    off, _ = sample(models, box_strength=0.0, **kwargs)
    on, _ = sample(models, box_strength=1.0, **kwargs)
    pipe = build_pipeline(model, text_encoder, "dpmsolver++")
    laid_out = apply_layout_to_story(STORY, LAYOUT, field="layout")
    for strength, result in ((0.0, off), (1.0, on)):
        expected = pipe(laid_out, mode="training_free", num_inference_steps=2, guidance_scale=4.5, seed=1,
                        output_type="pt", consistency=ConsistencyConfig(rate=1.0, blocks="all",
                                                                        box_strength=strength)).images
        torch.testing.assert_close(result, expected.permute(0, 2, 3, 1), atol=1e-6, rtol=0)
    assert not torch.equal(on, off)
    with pytest.raises(ValueError, match=r"^box_strength: expected a number in \[0, 1\]"):
        sample(models, box_strength=1.5)


def test_a_story_the_model_was_not_trained_for_shows_one_warning_line(models):
    """A model whose lay2story.json declares what it was trained for: the node returns the pipeline's warning as UI
    text beside its outputs; an undeclared model (or a story that fits) returns the plain outputs."""
    import dataclasses

    from lay2story_core.pipelines.trained_for import TrainedFor

    model, text_encoder = models
    args = {"seed": 1, "steps": 1, "cfg": 1.0, "scheduler": "dpmsolver++", "mode": "none", "width": 0, "height": 0,
            "chunk_size": 0, "identity_frames": 0}
    assert isinstance(L2S_StorySampler().sample(model, text_encoder, STORY, **args), tuple)
    declared = dataclasses.replace(model, trained_for=TrainedFor(16, 16, ("a", "red", "fox", "in", "the", "grass")))
    out = L2S_StorySampler().sample(declared, text_encoder, STORY, **{**args, "width": 32})
    (line,) = out["ui"]["text"]
    assert "asks for 32x16 px, the model was trained at 16x16 px" in line and "'bridge'" in line
    assert out["result"][0].shape == (3, 16, 32, 3) and len(out["result"]) == 3
    fits = dataclasses.replace(STORY, frames=STORY.frames[:1])
    assert isinstance(L2S_StorySampler().sample(declared, text_encoder, fits, **args), tuple)


def test_auto_layout_widget_places_the_characters_and_story_result_keeps_the_boxes(models):
    """auto_layout (appended last): 'on' in lay2story mode places the boxless characters, the frames equal the
    pipeline's call with the placed story, and story_result carries that story (a redo draws with its boxes);
    'model' is the folder's choice (the tiny folder declares none: off); a wrong value is one line."""
    model, text_encoder = models
    node = L2S_StorySampler()
    args = {"seed": 1, "steps": 3, "cfg": 4.5, "scheduler": "dpmsolver++", "mode": "lay2story", "width": 0,
            "height": 0, "chunk_size": 0, "identity_frames": 0}
    images, _, result = node.sample(model, text_encoder, STORY, auto_layout="on", **args)
    placed = result.record.story
    assert placed != STORY and all(s.box is not None for f in placed.frames for s in f.subjects)
    pipe = build_pipeline(model, text_encoder, "dpmsolver++")
    expected = pipe(placed, mode="lay2story", num_inference_steps=3, guidance_scale=4.5, seed=1,
                    output_type="pt").images
    torch.testing.assert_close(images, expected.permute(0, 2, 3, 1), atol=1e-6, rtol=0)
    plain, _, result = node.sample(model, text_encoder, STORY, auto_layout="model", **args)
    assert result.record.story == STORY
    assert torch.equal(plain, node.sample(model, text_encoder, STORY, auto_layout="off", **args)[0])
    with pytest.raises(ValueError, match=r"^auto_layout: expected one of \('model', 'on', 'off'\), got 'yes'"):
        node.sample(model, text_encoder, STORY, auto_layout="yes", **args)
