"""``L2S_RedoFrames`` on a tiny pipeline: the sampler's story result, kept frames exactly as they were, keep_others,
chained redos, added frames and errors naming the input."""

from __future__ import annotations

import pytest
import torch

from lay2story_core.story import Story
from nodes.loaders import L2S_ModelLoader, L2S_TextEncoderLoader
from nodes.redo import L2S_RedoFrames, StoryResult
from nodes.sampler import L2S_StorySampler

PIPE = "lay2story/tiny_pipeline"
STORY = Story.from_dict({
    "version": 1, "width": 16, "height": 16,
    "characters": [{"id": "hero", "identity": "a red fox"}],
    "frames": [{"prompt": p, "subjects": [{"character": "hero", "box": b}]}
               for p, b in (("in the grass", [0, 0, .5, .5]), ("on a bridge", [.5, .5, 1, 1]),
                            ("at night", [.25, 0, 1, .75]))],
})


@pytest.fixture
def models(comfy_models):
    (model,) = L2S_ModelLoader().load(PIPE, "auto", "auto", "fp32", "cpu")
    (text_encoder,) = L2S_TextEncoderLoader().load(PIPE, "auto", "fp32", "cpu", True)
    return {"model": model, "text_encoder": text_encoder}


@pytest.fixture
def finished(models):
    """The sampler's outputs, and ``redo(result, **inputs)``: the redo node with these models."""

    def redo(result, **kwargs):
        args = {"frames": "1", "seed": 7, "keep_others": True, "insert": "", "append": 0, **models}
        return L2S_RedoFrames().redo(result, **{**args, **kwargs})

    outputs = L2S_StorySampler().sample(models["model"], models["text_encoder"], STORY, seed=1, steps=2, cfg=4.5,
                                        scheduler="dpmsolver++", mode="auto", width=0, height=0, chunk_size=0,
                                        identity_frames=0)
    return (*outputs, redo)


def test_the_sampler_outputs_a_story_result(finished):
    images, latent, result, _ = finished
    assert isinstance(result, StoryResult) and result.mode == "lay2story"
    assert torch.equal(result.record.images, images.permute(0, 3, 1, 2))
    assert result.record.latents.shape == latent["samples"].shape and result.record.settings["seed"] == 1


def test_redo_keeps_the_other_frames_exactly(finished):
    images, latent, result, redo = finished
    new_images, new_latent, new_result = redo(result)
    assert new_images.shape == images.shape and new_result.sampled == (1,)
    for f in (0, 2):
        assert torch.equal(new_images[f], images[f]) and torch.equal(new_latent["samples"][f], latent["samples"][f])
    assert not torch.allclose(new_images[1], images[1])
    assert new_result.record.frame_seeds == [1, 7, 1]
    only, only_latent, _ = redo(result, keep_others=False)
    assert torch.equal(only[0], new_images[1]) and only.shape[0] == 1 and only_latent["samples"].shape[0] == 1
    # chained: the next redo keeps frame 1 as redone
    again, _, chained = redo(new_result, frames="0", seed=8)
    assert torch.equal(again[1], new_images[1]) and torch.equal(again[2], images[2])
    assert chained.record.frame_seeds == [8, 7, 1]


def test_an_appended_frame_reads_the_kept_ones(finished):
    images, _, result, redo = finished
    longer = Story.from_dict({**STORY.to_dict(), "frames": STORY.to_dict()["frames"] + [
        {"prompt": "in the sky", "subjects": [{"character": "hero", "box": [0, .5, .5, 1]}]}]})
    new_images, new_latent, new_result = redo(result, frames="", append=1, story=longer)
    assert new_images.shape[0] == 4 and new_result.sampled == (3,)
    assert all(torch.equal(new_images[f], images[f]) for f in range(3))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frames": "5"}, r"^frames: frame 5 is out of range for a story of 3 frames"),
    ({"frames": "one"}, r"^frames: expected frame indices like '2,5'"),
    ({"frames": ""}, r"^frames: nothing to sample"),
    ({"insert": "x"}, r"^insert: expected frame numbers"),
    ({"append": 1}, r"^story: has 3 frames, expected 4"),
    ({"seed": -1}, r"^seed: expected an integer"),
])
def test_input_errors_name_the_input(finished, kwargs, message):
    with pytest.raises(ValueError, match=message):
        finished[3](finished[2], **kwargs)


def test_an_edited_kept_frame_is_an_error(finished, models):
    images, _, result, redo = finished
    data = STORY.to_dict()
    data["frames"][0]["prompt"] = "under a tree"
    with pytest.raises(ValueError, match=r"^story: frame 0 differs from frame 0 of the finished story but is not "
                                         r"sampled again; add it to frames"):
        redo(result, story=Story.from_dict(data))
    with pytest.raises(ValueError, match="^story_result: expected an L2S_STORY_RESULT"):
        L2S_RedoFrames().redo(images, "1", 7, True, "", 0, **models)
    with pytest.raises(ValueError, match="^model: connect a Lay2Story Model Loader"):
        L2S_RedoFrames().redo(result, "1", 7, True, "", 0)
