"""``lay2story.json``'s ``"trained_for"``: a story asking for another size or using unknown words gets one warning
line (the pipeline's log, the CLI's stderr); a model without the declaration gets none."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from tiny_models import make_pipeline

from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.loading import ModelLoadError
from lay2story_core.pipelines.manifest import MANIFEST_FILE, PipelineManifest
from lay2story_core.pipelines.trained_for import NAMED_WORDS, TrainedFor, story_texts
from lay2story_core.shapestory.vocab import caption_words
from lay2story_core.story import load_story

DEMO = TrainedFor(64, 64, caption_words())


def test_the_demo_declares_shapestorys_size_and_words():
    manifest = PipelineManifest.read(EMBEDDED_MODEL)
    assert manifest.trained_for == DEMO
    assert DEMO.warning(load_story("stories/shapestory.json")) is None  # the story that suits it


def test_warning_names_the_size_and_the_first_words_and_counts_the_rest():
    story = load_story("stories/story.json")
    unknown = DEMO.unknown_words(story_texts(story))
    assert len(unknown) > NAMED_WORDS and "fox" in unknown and "the" not in unknown
    line = DEMO.warning(story, model="ShapeStory demo")
    assert "\n" not in line and line.startswith("model 'ShapeStory demo' was not trained for this story: ")
    assert "asks for 512x512 px, the model was trained at 64x64 px" in line
    assert f"{len(unknown)} of its words are not in the model's vocabulary: 'fox'" in line
    assert f"and {len(unknown) - NAMED_WORDS} more" in line and repr(unknown[NAMED_WORDS]) not in line
    assert DEMO.warning(story, 64, 64).count("px") == 0  # the size asked fits: only the words
    shapes = load_story("stories/shapestory.json")
    assert "asks for 128x64 px" in DEMO.warning(shapes, 128, 64) and "words" not in DEMO.warning(shapes, 128, 64)
    assert "'dragon'" in DEMO.warning(shapes, negative_prompt="a dragon")  # the negative prompt is a caption too
    assert TrainedFor().warning(story) is None and TrainedFor(512, 512).warning(story) is None


def test_manifest_round_trip_and_bad_declarations_name_the_field(tmp_path):
    manifest = PipelineManifest(name="m", trained_for=TrainedFor(64, 32, ("b", "a", "b")))
    manifest.write(tmp_path)
    assert PipelineManifest.read(tmp_path).trained_for == TrainedFor(64, 32, ("a", "b"))
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["trained_for"] == {"width": 64, "height": 32,
                                                                                 "vocabulary": ["a", "b"]}
    assert "trained_for" not in PipelineManifest(name="m").to_dict()
    for bad, message in (({"width": 64}, "width and height go together"),
                         ({"width": 0, "height": 64}, "trained_for.width: expected a positive integer"),
                         ({"vocabulary": "a b"}, "trained_for.vocabulary: expected a list of words"),
                         ({"vocabulary": ["a", 3]}, "trained_for.vocabulary: expected a list of words"),
                         ({"size": 64}, "trained_for: unknown key 'size'")):
        data = {**manifest.to_dict(), "trained_for": bad}
        (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
        with pytest.raises(ModelLoadError, match=message):
            PipelineManifest.read(tmp_path)


def test_the_pipeline_logs_one_line_only_for_a_declared_model(caplog):
    pipe = make_pipeline(subject_branch=False)
    story = dataclasses.replace(load_story("stories/story.json").with_layout(boxes=False, captions=False),
                                width=16, height=16)
    kwargs = dict(num_inference_steps=1, output_type="latent", mode="none", seed=0)
    with caplog.at_level(logging.WARNING):
        pipe(story, **kwargs)
    assert not [r for r in caplog.records if "trained" in r.getMessage()]  # no declaration, no warning
    pipe.trained_for, pipe.model_name = TrainedFor(16, 16, ("a", "fox")), "tiny"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe(story, **kwargs)
        pipe(story, width=32, height=16, **kwargs)
    lines = [r.getMessage() for r in caplog.records if "was not trained for" in r.getMessage()]
    assert len(lines) == 2 and "px" not in lines[0] and "'wearing'" in lines[0]
    assert "asks for 32x16 px, the model was trained at 16x16 px" in lines[1]
