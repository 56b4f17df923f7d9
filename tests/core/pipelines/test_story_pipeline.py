"""StoryPipeline on tiny components: modes, layout toggle, references, chunked long stories, cancel, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.consistency import ConsistencyConfig
from lay2story_core.pipelines import GenerationCancelled, ReferenceImage
from lay2story_core.story import Character, LayoutError, Reference, Story, load_story

SIZE = dict(height=16, width=16, num_inference_steps=3, output_type="pt")


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


@pytest.fixture(scope="module")
def story():
    return load_story("stories/story.json")


def _story(frames: int, boxes=None) -> Story:
    boxes = boxes or [[0.1 + 0.05 * (i % 4), 0.2, 0.6, 0.9] for i in range(frames)]
    return Story.from_dict({
        "version": 1, "width": 16, "height": 16,
        "characters": [{"id": "hero", "identity": "a red fox"}],
        "frames": [{"prompt": f"walking on the grass {i}",
                    "subjects": [{"character": "hero", "box": boxes[i], "caption": "the fox smiling"}]}
                   for i in range(frames)],
    })


@pytest.mark.parametrize("mode", ["lay2story", "training_free", "none"])
def test_modes_are_deterministic_and_seeded(pipe, story, mode):
    a = pipe(story, mode=mode, seed=3, **SIZE).images
    b = pipe(story, mode=mode, seed=3, **SIZE).images
    c = pipe(story, mode=mode, seed=4, **SIZE).images
    assert a.shape == (4, 3, 16, 16) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_modes_differ_and_layout_only_changes_what_uses_it(pipe):
    s1 = _story(3)
    s2 = _story(3, boxes=[[0.5, 0.0, 1.0, 0.4]] * 3)
    out = {m: pipe(s1, mode=m, seed=0, **SIZE).images for m in ("lay2story", "training_free", "none")}
    assert not torch.allclose(out["lay2story"], out["none"]) and not torch.allclose(out["training_free"], out["none"])
    assert not torch.allclose(pipe(s2, mode="lay2story", seed=0, **SIZE).images, out["lay2story"])
    assert not torch.allclose(pipe(s2, mode="training_free", seed=0, **SIZE).images, out["training_free"])
    assert torch.equal(pipe(s2, mode="none", seed=0, **SIZE).images, out["none"])  # baseline ignores layout


def test_layout_toggle_off_equals_a_story_without_layout(pipe, story):
    off = pipe(story, layout=False, subject_captions=False, seed=1, **SIZE).images
    bare = pipe(story.with_layout(boxes=False, captions=False), seed=1, **SIZE).images
    on = pipe(story, seed=1, **SIZE).images
    boxes_only = pipe(story, subject_captions=False, seed=1, **SIZE).images
    assert torch.equal(off, bare)
    assert not torch.allclose(off, on) and not torch.allclose(boxes_only, on)


def test_reference_image_changes_the_lay2story_output(pipe):
    s = _story(2)
    gen = torch.Generator().manual_seed(0)
    ref = ReferenceImage(torch.rand(3, 20, 20, generator=gen), box=(0.2, 0.2, 0.8, 0.8))
    other = ReferenceImage(torch.rand(3, 20, 20, generator=gen))
    plain = pipe(s, seed=0, **SIZE).images
    with_ref = pipe(s, references={"hero": ref}, seed=0, **SIZE).images
    with_other = pipe(s, references={"hero": other}, seed=0, **SIZE).images
    assert not torch.allclose(plain, with_ref) and not torch.allclose(with_ref, with_other)
    # the baseline ignores references
    assert torch.equal(pipe(s, mode="none", references={"hero": ref}, seed=0, **SIZE).images,
                       pipe(s, mode="none", seed=0, **SIZE).images)
    with pytest.raises(LayoutError, match="villain"):
        pipe(s, references={"villain": ref}, seed=0, **SIZE)
    # an in-memory picture held by the story (a cast's), its box in Character.reference: the same as references=
    held = dataclasses.replace(s, characters=(Character("hero", "a red fox", Reference(box=ref.box)),),
                               reference_images={"hero": ref.image})
    assert torch.equal(pipe(held, seed=0, **SIZE).images, with_ref)
    assert torch.equal(pipe(held, references={"hero": other}, seed=0, **SIZE).images, with_other)  # the call's wins


@pytest.mark.parametrize("mode", ["lay2story", "training_free"])
def test_long_story_in_chunks_keeps_memory_bounded(pipe, mode):
    story = _story(24)
    batches = []
    handle = pipe.transformer.pos_embed.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    try:
        chunked = pipe(story, mode=mode, seed=0, chunk_size=4, identity_frames=4, height=16, width=16,
                       num_inference_steps=2, output_type="latent").images
    finally:
        handle.remove()
    assert chunked.shape[0] == 24 and torch.isfinite(chunked).all()
    assert max(batches) == 2 * 4  # never more than one chunk (both CFG halves) in a model call
    # box control (when on by default): a background call and the one character's
    calls = 2 if mode == "training_free" and ConsistencyConfig().box_strength > 0 else 1
    assert len(batches) == 2 * 6 * calls  # 6 passes (identity + 5 chunks) x 2 steps
    # the identity frames are exactly a joint generation of those frames alone
    ident = pipe(Story(story.characters, story.frames[:4], 16, 16), mode=mode, seed=0, height=16, width=16,
                 num_inference_steps=2, output_type="latent").images
    first = pipe(story, mode=mode, seed=0, chunk_size=24, height=16, width=16, num_inference_steps=2,
                 output_type="latent").images
    torch.testing.assert_close(chunked[:4], ident, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(chunked[4:], first[4:])  # chunks read the identity frames instead of seeing all


def test_multi_subject_story(pipe):
    story = load_story("stories/two_characters.json")
    out = pipe(story, seed=0, height=16, width=24, num_inference_steps=2, output_type="pt").images
    assert out.shape == (story.num_frames, 3, 16, 24) and torch.isfinite(out).all()
    frame = story.frames[0]
    moved = [s if i else type(s)(s.character, (0.0, 0.0, 0.3, 0.3), s.caption) for i, s in enumerate(frame.subjects)]
    story2 = Story(story.characters, (type(frame)(frame.prompt, tuple(moved)),) + story.frames[1:], 24, 16)
    out2 = pipe(story2, seed=0, height=16, width=24, num_inference_steps=2, output_type="pt").images
    assert not torch.allclose(out[0], out2[0])


def test_callback_reports_and_cancels(pipe, story):
    seen = []
    pipe(story, seed=0, callback=lambda step, total, lat: seen.append((step, total, lat.shape[0])), **SIZE)
    assert seen == [(1, 3, 4), (2, 3, 4), (3, 3, 4)]
    calls = []
    with pytest.raises(GenerationCancelled):
        pipe(story, seed=0, callback=lambda step, total, lat: calls.append(step) or step < 2, **SIZE)
    assert calls == [1, 2]


def test_1024ms_model_runs():
    ms = make_pipeline("alpha1024ms")
    out = ms(_story(2), seed=0, **SIZE).images
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_bad_inputs_give_clear_errors(pipe, story):
    with pytest.raises(LayoutError, match=r"frames\[0\].subjects\[0\].box"):
        pipe({"version": 1, "characters": [{"id": "a", "identity": "x"}],
              "frames": [{"prompt": "p", "subjects": [{"character": "a", "box": [0.5, 0, 0.1, 1]}]}]}, **SIZE)
    with pytest.raises(ValueError, match="mode"):
        pipe(story, mode="magic", **SIZE)
    with pytest.raises(ValueError, match="height"):
        pipe(story, height=15, width=16, num_inference_steps=2)
    with pytest.raises(ValueError, match="chunk_size"):
        pipe(story, chunk_size=0, **SIZE)
    with pytest.raises(ValueError, match="subject branch"):
        make_pipeline(subject_branch=False)(story, mode="lay2story", **SIZE)
