"""tests/nodes/render_thumbnails.py: thumbnails from real runs of the templates; models that are not installed are
swapped (and named on the thumbnail); the detector stand-in finds ShapeStory characters where they are drawn."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lay2story_core.shapestory import render_story
from lay2story_core.story import Story
from nodes import model_files
from nodes.image_utils import pil_to_image

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "example_workflows"


def script():
    spec = importlib.util.spec_from_file_location("render_thumbnails", HERE / "render_thumbnails.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_uninstalled_models_are_swapped_and_named(monkeypatch):
    thumbs = script()
    monkeypatch.setattr(model_files, "model_choices", lambda: [model_files.EMBEDDED_LABEL])
    monkeypatch.setattr(model_files, "text_encoder_choices", lambda: [model_files.EMBEDDED_LABEL])
    monkeypatch.setattr(model_files, "detector_choices", lambda: [])
    prompt = json.loads((EXAMPLES / "api" / "training_free_story.json").read_text())
    adapted, notes = thumbs.adapt("training_free_story", prompt)
    assert notes == ["ShapeStory demo model (PixArt-XL-2-512x512.pth not installed)"]
    loader = adapted[thumbs._of_type(adapted, "L2S_ModelLoader")[0]]["inputs"]
    assert loader["model"] == model_files.EMBEDDED_LABEL and loader["subject_branch"] == "none"
    story = adapted[thumbs._of_type(adapted, "L2S_Story")[0]]["inputs"]
    assert story["frame_prompts"].count("\n") == 5 and story["width"] == 64  # six frames in the demo's vocabulary
    assert prompt != adapted  # the template itself is untouched
    drawn = json.loads((EXAMPLES / "api" / "lay2story_drawn_layout.json").read_text())
    assert thumbs.adapt("lay2story_drawn_layout", drawn) == (drawn, [])
    _, notes = thumbs.adapt("lay2story_detected_layout",
                            json.loads((EXAMPLES / "api" / "lay2story_detected_layout.json").read_text()))
    assert notes == ["boxes by ShapeStory colour segmentation (Grounding DINO not installed)"]


def test_detector_stand_in_finds_the_drawn_character():
    thumbs = script()
    story = Story.from_dict({"version": 1, "width": 64, "height": 64,
                             "characters": [{"id": "hero", "identity": "a red striped star"}],
                             "frames": [{"prompt": "on the grass", "subjects": [
                                 {"character": "hero", "box": [0.1, 0.4, 0.5, 0.8]}]},
                                        {"prompt": "in the sky", "subjects": [
                                            {"character": "hero", "box": [0.5, 0.1, 0.9, 0.5]}]}]})
    frames = render_story(story, 64, 64)[0]
    layout = thumbs.shapestory_boxes(pil_to_image(frames), story, "hero", "the star")
    for frame, (subject,) in zip(story.frames, layout.frames):
        assert np.allclose(subject.box, frame.subjects[0].box, atol=0.1), (subject.box, frame.subjects[0].box)
        assert subject.caption == "the star"


def test_a_thumbnail_from_a_real_run(comfy_models, tmp_path):
    thumbs = script()
    (tmp_path / "api").mkdir()
    shutil.copy(EXAMPLES / "api" / "lay2story_drawn_layout.json", tmp_path / "api")
    path = thumbs.render("lay2story_drawn_layout", steps=1, out_dir=str(tmp_path))
    with Image.open(path) as image:
        assert image.format == "JPEG" and max(image.size) == 512
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert pixels.std() > 10  # sampled frames with boxes and labels, not blank panels
    assert not list(tmp_path.glob("*.tmp"))
