"""Training-free regional cross-attention in ``StoryPipeline``: a captioned box reads its character's identity and
the frame prompt (:func:`~lay2story_core.consistency.region_caption`), so a frame with one character reads what the
whole frame reads, and a frame with two keeps each identity in its own box."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.consistency import ConsistencyConfig, box_control, region_caption
from lay2story_core.pipelines import story_pipeline
from lay2story_core.story import Story

SIZE = dict(height=32, width=32, num_inference_steps=3, output_type="pt", mode="training_free")
CONFIG = ConsistencyConfig(rate=0.5, blocks="all", box_strength=0.0)


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline(subject_branch=False)


def _story(two_in_frame_1: bool) -> Story:
    subjects = [[("fox", [0.0, 0.0, 0.75, 0.75])], [("fox", [0.25, 0.25, 1.0, 1.0])], [("fox", [0.0, 0.25, 0.5, 1.0])]]
    if two_in_frame_1:
        subjects[1] = [("fox", [0.0, 0.0, 0.5, 1.0]), ("cat", [0.5, 0.0, 1.0, 1.0])]
    return Story.from_dict({
        "version": 1, "width": 32, "height": 32,
        "characters": [{"id": "fox", "identity": "a red fox"}, {"id": "cat", "identity": "a blue cat"}],
        "frames": [{"prompt": f"in the snow {i}",
                    "subjects": [{"character": c, "box": b, "caption": f"the {c} jumping, large, on the left"}
                                 for c, b in frame]}
                   for i, frame in enumerate(subjects)],
    })


def test_one_character_frames_read_the_frame_caption_in_their_box(pipe, monkeypatch):
    """One character a frame: its box reads the frame's own caption, so regional captions change nothing (up to
    the float error of the token-sparse path); the subject caption in the box (the rule before) does."""
    story = _story(False)
    on = pipe(story, seed=3, consistency=CONFIG, **SIZE).images
    off = pipe(story, seed=3, consistency=dataclasses.replace(CONFIG, regional_captions=False), **SIZE).images
    assert torch.allclose(on, off, atol=1e-5)
    subject_caption = {(f, s.character): s.caption for f, frame in enumerate(story.frames) for s in frame.subjects}
    monkeypatch.setattr(box_control, "region_caption", lambda st, f, c: subject_caption[(f, c)])
    assert (pipe(story, seed=3, consistency=CONFIG, **SIZE).images - off).abs().max() > 1e-3


def test_each_box_of_a_shared_frame_reads_its_own_character(pipe, monkeypatch):
    story, seen = _story(True), []
    texts = story_pipeline.slot_region_texts
    monkeypatch.setattr(story_pipeline, "slot_region_texts", lambda *a: seen.append(texts(*a)) or seen[-1])
    pipe(story, seed=3, consistency=CONFIG, **SIZE)
    assert seen == [["a red fox, in the snow 0", "a red fox, in the snow 1", "a blue cat, in the snow 1",
                     "a red fox, in the snow 2"]]
    assert region_caption(story, 1, "cat") == "a blue cat, in the snow 1" != story.global_caption(1)
