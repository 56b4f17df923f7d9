"""Redo a panel, keep the story (``lay2story_core.pipelines.redo``) on a tiny pipeline: kept frames untouched, the
equivalences that hold (recording changes nothing; cached keys/values reproduce the joint pass; the initial noise is
the pipeline's), the re-noising rule, added frames, and errors naming the argument."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.consistency import ConsistencyConfig
from lay2story_core.pipelines import make_scheduler
from lay2story_core.pipelines.redo import FinishedStory, _new_frame_map, initial_noise, parse_frame_list, redo_story
from lay2story_core.pipelines.redo_identity import IdentityCache, noisy_model_input
from lay2story_core.story import Story

BOXES = ([0, 0, .5, .5], [.5, .5, 1, 1], [.25, 0, 1, .75], [0, .5, .5, 1])
STORY = Story.from_dict({
    "version": 1, "width": 16, "height": 16, "characters": [{"id": "hero", "identity": "a red fox"}],
    "frames": [{"prompt": p, "subjects": [{"character": "hero", "box": b, "caption": "the fox sitting"}]}
               for p, b in zip(("in the grass", "on a bridge", "at night", "in the sky"), BOXES)],
})
MODES = {"lay2story": {}, "training_free": {"consistency": ConsistencyConfig(rate=1.0, blocks="all")}, "none": {}}


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()  # DPM-Solver++: deterministic steps, so equal inputs give equal frames


def call(pipe, mode: str, **kwargs):
    return pipe(STORY, mode=mode, num_inference_steps=3, guidance_scale=4.5, output_type="pt", **MODES[mode],
                **kwargs)


def finished(pipe, mode: str, seed: int = 3, **kwargs) -> tuple:
    cache = IdentityCache()
    out = call(pipe, mode, seed=seed, identity_cache=cache, **kwargs)
    return out, FinishedStory.from_output(out, STORY, seed, identity_cache=cache)


def redo(pipe, record, frames, mode: str, **kwargs):
    return redo_story(pipe, record, frames, mode=mode, num_inference_steps=3, guidance_scale=4.5, output_type="pt",
                      **MODES[mode], **kwargs)


def scale(x: torch.Tensor) -> float:
    return float(x.abs().max())


@pytest.mark.parametrize("mode", list(MODES))
def test_recording_the_cache_changes_nothing(pipe, mode):
    plain = call(pipe, mode, seed=3)
    recorded, record = finished(pipe, mode)
    assert torch.equal(plain.latents, recorded.latents) and torch.equal(plain.images, recorded.images)
    assert record.identity_cache.frames == ({0, 1, 2, 3} if mode != "none" else set())
    assert (record.identity_cache.nbytes() > 0) == (mode != "none")


def test_the_initial_noise_is_the_pipelines():
    pipe = make_pipeline()
    drawn = call(pipe, "none", seed=5).latents
    given = call(pipe, "none", latents=initial_noise((4, 4, 8, 8), 5)).latents
    assert torch.equal(drawn, given)


@pytest.mark.parametrize(("mode", "frames"), [("lay2story", [2]), ("lay2story", [1, 2]), ("training_free", [2]),
                                              ("none", [1, 2])])
def test_cached_keys_values_with_the_original_seed_reproduce_the_joint_story(pipe, mode, frames):
    """The strongest equivalence: the kept frames' recorded keys/values are what the redone frames saw in the joint
    pass, so a redo with the original seed gives the original frames back (float rounding apart). It holds for any
    set of frames in lay2story mode (they are one read chunk: they see each other as in the joint pass) and for one
    frame in training-free mode (read frames do not share tokens among themselves)."""
    original, record = finished(pipe, mode)
    out = redo(pipe, record, frames, mode, seed=3, kv="cached")
    kept = [f for f in range(4) if f not in frames]
    assert torch.equal(out.latents[kept], original.latents[kept])
    assert torch.equal(out.images[kept], original.images[kept])
    torch.testing.assert_close(out.latents[frames], original.latents[frames], rtol=0,
                               atol=1e-5 * scale(original.latents))


def test_a_redone_read_chunk_of_a_chunked_story_is_reproduced(pipe):
    """A story sampled in write/read passes (identity frames 0-1, then chunks of 2): the cache holds the identity
    frames' keys/values, exactly what the read chunk 2-3 saw."""
    original, record = finished(pipe, "lay2story", chunk_size=2, identity_frames=2)
    assert record.identity_cache.frames == {0, 1}
    out = redo(pipe, record, [2, 3], "lay2story", seed=3, kv="cached", chunk_size=2)
    torch.testing.assert_close(out.latents, original.latents, rtol=0, atol=1e-5 * scale(original.latents))


@pytest.mark.parametrize("mode", ["lay2story", "training_free"])
def test_rederived_redo_keeps_frames_and_stays_near_the_original(pipe, mode):
    original, record = finished(pipe, mode)
    same = redo(pipe, record, [2], mode, seed=3)
    other = redo(pipe, record, [2], mode, seed=4)
    assert torch.equal(same.latents[[0, 1, 3]], original.latents[[0, 1, 3]]) and same.sampled == (2,)
    assert same.record.frame_seeds == [3, 3, 3, 3] and other.record.frame_seeds == [3, 3, 4, 3]
    assert (same.latents[2] - original.latents[2]).norm() < (other.latents[2] - original.latents[2]).norm()


def test_pil_frames_are_kept_as_they_are(pipe):
    out = call(pipe, "lay2story", seed=3)
    images = [im for im in pipe.numpy_to_pil(out.images.permute(0, 2, 3, 1).numpy())]
    record = FinishedStory(STORY, out.latents, initial_noise(out.latents.shape, 3), {"seed": 3}, images)
    result = redo_story(pipe, record, "1", mode="lay2story", num_inference_steps=3, guidance_scale=4.5)
    assert [result.images[f] is images[f] for f in range(4)] == [True, False, True, True]
    assert result.images[1].size == (16, 16)


def test_inserted_and_appended_frames_are_sampled_and_the_rest_move_along(pipe):
    _, record = finished(pipe, "lay2story")
    frames = STORY.to_dict()["frames"]
    longer = Story.from_dict({**STORY.to_dict(), "frames": [frames[0], frames[2], *frames[1:], frames[3]]})
    out = redo(pipe, record, [], "lay2story", story=longer, insert=[1], append=1)
    assert out.sampled == (1, 5) and out.sources == (0, None, 1, 2, 3, None)
    assert torch.equal(out.latents[[0, 2, 3, 4]], record.latents)
    assert out.record.story == longer and out.record.frame_seeds == [3, 4, 3, 3, 3, 4]
    assert _new_frame_map(4, [1, 4, 1], 1) == [0, None, None, 1, 2, 3, None, None]


def test_re_noising_is_what_the_sampler_feeds_the_model():
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    euler = make_scheduler("euler_a")
    euler.set_timesteps(7)
    for t, sigma in zip(euler.timesteps, euler.sigmas):
        expected = (x0 + sigma * noise) / (sigma**2 + 1) ** 0.5  # Euler's scale_model_input of the noisy sample
        torch.testing.assert_close(noisy_model_input(euler, x0, noise, t), expected, rtol=1e-5, atol=1e-5)
    ddim = make_scheduler("ddim")
    ddim.set_timesteps(5)
    for t in ddim.timesteps:
        torch.testing.assert_close(noisy_model_input(ddim, x0, noise, t), ddim.add_noise(x0, noise, t[None]),
                                   rtol=1e-5, atol=1e-5)


def test_frame_lists():
    assert parse_frame_list("2, 5,2-4") == (2, 3, 4, 5) and parse_frame_list([5, 1]) == (1, 5)
    for bad in ("two", "3-1", "1-"):
        with pytest.raises(ValueError, match="^--redo: "):
            parse_frame_list(bad, "--redo")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frames": [4]}, r"^--redo: frame 4 is out of range for a story of 4 frames \(0\.\.3\)"),
    ({"frames": []}, r"^--redo: nothing to sample"),
    ({"kv": "disk"}, r"^kv: expected one of \('rederive', 'cached'\), got 'disk'"),
    ({"seed": -2}, r"^--seed: expected an integer >= 0, got -2"),
    ({"identity_frames": -1}, r"^identity_frames: expected an integer >= 0, got -1"),
    ({"insert": [9]}, r"^--insert: expected frame numbers in 0\.\.4"),
    ({"append": 1}, r"^--story: has 4 frames, expected 5"),
    ({"story": STORY.to_dict() | {"characters": [{"id": "cat", "identity": "a cat"}], "frames": [
        {"prompt": "x"}] * 4}}, r"^--story: the characters and frame size must stay those of the finished story"),
    ({"story": STORY.to_dict() | {"negative_prompt": "blurry", "frames": [
        {**STORY.to_dict()["frames"][0], "prompt": "under a tree"}, *STORY.to_dict()["frames"][1:]]}},
     r"^--story: frame 0 differs from frame 0 of the finished story but is not sampled again; add it to --redo"),
])
def test_errors_name_the_argument(pipe, kwargs, message):
    _, record = finished(pipe, "none")
    record.identity_cache = None
    args = {"frames": [1], **kwargs}
    fields = {"frames": "--redo", "story": "--story", "seed": "--seed", "insert": "--insert"}
    with pytest.raises(ValueError, match=message):
        redo_story(pipe, record, args.pop("frames"), fields=fields, mode="none", num_inference_steps=2, **args)
    with pytest.raises(ValueError, match=r"^kv: 'cached' needs the identity cache"):
        redo_story(pipe, record, [1], kv="cached", mode="none", num_inference_steps=2)


def test_a_folder_without_latents_is_refused(tmp_path):
    (tmp_path / "story.json").write_text(STORY.to_json())
    (tmp_path / "settings.json").write_text("{}")
    with pytest.raises(ValueError, match=r"^--from: '.*' has no latents\.safetensors \(stories generated before"):
        FinishedStory.load(tmp_path, field="--from")
    with pytest.raises(ValueError, match=r"^--from: '.*missing' is not a folder"):
        FinishedStory.load(tmp_path / "missing", field="--from")
