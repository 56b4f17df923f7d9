"""GroundingDinoDetector on a tiny random transformers Grounding DINO (random boxes: thresholds decide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lay2story_core.vision import Detection, GroundingDinoDetector, normalize_prompt


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(80, 48), (64, 64), (50, 70)]
    return [Image.fromarray((rng.random((sizes[i % 3][1], sizes[i % 3][0], 3)) * 255).astype(np.uint8))
            for i in range(n)]


def test_detect_all_returns_sorted_normalised_boxes(detector):
    found = detector.detect_all(_images(), "the main character", box_threshold=0.0, text_threshold=0.0)
    assert len(found) == 3
    num_queries = detector.model.config.num_queries
    for boxes in found:
        assert 1 <= len(boxes) <= num_queries
        scores = [d.score for d in boxes]
        assert scores == sorted(scores, reverse=True)
        for d in boxes:
            x0, y0, x1, y1 = d.box
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
            assert 0.0 <= d.score <= 1.0
            assert d.label and "[SEP]" not in d.label and "[CLS]" not in d.label


def test_detect_is_the_top_box_and_threshold_filters(detector):
    images = _images()
    every = detector.detect_all(images, "the main character", box_threshold=0.0)
    top = detector.detect(images, "the main character", box_threshold=0.0)
    assert [d == boxes[0] for d, boxes in zip(top, every)] == [True] * 3
    # A threshold between the scores keeps exactly the boxes above it.
    scores = sorted({d.score for boxes in every for d in boxes})
    cut = scores[len(scores) // 2]
    some = detector.detect_all(images, "the main character", box_threshold=cut)
    for boxes, all_boxes in zip(some, every):
        assert [d.score for d in boxes] == [d.score for d in all_boxes if d.score >= cut]
    # Above every score: nothing, and detect() says None.
    above = max(scores) + 1e-9
    if above <= 1.0:
        assert detector.detect(images, "the main character", box_threshold=above) == [None] * 3


def test_batching_does_not_change_results(detector):
    images = _images(4)
    one = detector.detect_all(images, "a cat", box_threshold=0.0, batch_size=1)
    four = detector.detect_all(images, "a cat", box_threshold=0.0, batch_size=4)
    for a, b in zip(one, four):
        assert len(a) == len(b)
        for da, db in zip(a, b):
            np.testing.assert_allclose(da.box, db.box, atol=1e-4)
            assert da.score == pytest.approx(db.score, abs=1e-4)


def test_label_uses_tokens_above_text_threshold(detector):
    images = _images(1)
    strict = detector.detect_all(images, "cat. dog", box_threshold=0.0, text_threshold=1.0)[0]
    # No token passes a threshold of 1.0: the label falls back to the prompt.
    assert {d.label for d in strict} == {"cat. dog"}
    loose = detector.detect_all(images, "cat. dog", box_threshold=0.0, text_threshold=0.0)[0]
    assert all(set(d.label.replace(".", " ").split()) <= {"cat", "dog"} for d in loose)


def test_prompt_normalisation_and_bad_inputs(detector, tmp_path):
    assert normalize_prompt("  The Main  Character ") == "the main character."
    assert normalize_prompt("cat. dog.") == "cat. dog."
    with pytest.raises(ValueError, match="prompt"):
        detector.detect(_images(1), "  ")
    with pytest.raises(ValueError, match="box_threshold.*1.5"):
        detector.detect(_images(1), "cat", box_threshold=1.5)
    with pytest.raises(TypeError, match=r"images\[1\]"):
        detector.detect([_images(1)[0], np.zeros((4, 4, 3))], "cat")
    with pytest.raises(TypeError, match="single image"):
        detector.detect(_images(1)[0], "cat")
    with pytest.raises(ValueError, match="batch_size"):
        detector.detect(_images(1), "cat", batch_size=0)
    assert detector.detect([], "cat") == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GroundingDinoDetector.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        GroundingDinoDetector.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        _bad_dtype()


def _bad_dtype():
    from lay2story_core.vision._common import resolve_dtype

    resolve_dtype("int8")


def test_loaded_model_matches_saved_weights(gdino_folder, detector):
    from safetensors.torch import load_file

    saved = load_file(f"{gdino_folder}/model.safetensors")
    state = detector.model.state_dict()
    key = next(k for k in saved if k.endswith("bbox_embed.0.layers.0.weight"))
    assert torch.equal(saved[key], state[key])
    assert detector.model.training is False


def test_detection_pixel_box():
    d = Detection((0.1, 0.25, 0.55, 1.0), 0.9, "cat")
    assert d.pixel_box(100, 40) == (10, 10, 55, 40)
    assert Detection((0.5, 0.5, 0.5001, 0.5001), 0.9, "x").pixel_box(10, 10) == (5, 5, 6, 6)
    assert d.to_dict() == {"box": [0.1, 0.25, 0.55, 1.0], "score": 0.9, "label": "cat"}
