"""Nodes on IMAGE/MASK values: reference image, layout detector (tiny Grounding DINO), layout preview, comic page."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from lay2story_core.pipelines import ReferenceImage
from lay2story_core.story import Layout, Story, Subject
from lay2story_core.vision import Detection
from nodes.comic_page import L2S_ComicPage
from nodes.detector import L2S_LayoutDetector, detections_to_layout
from nodes.image_utils import image_tensor, mask_box
from nodes.preview import L2S_LayoutPreview, render_layout_preview
from nodes.reference import L2S_ReferenceImage

STORY = Story.from_dict({
    "version": 1, "width": 64, "height": 32,
    "characters": [{"id": "hero", "identity": "a fox"}, {"id": "cat", "identity": "a cat"}],
    "frames": [
        {"prompt": "park", "subjects": [{"character": "hero", "box": [0.5, 0.25, 1.0, 1.0], "caption": "run"}]},
        {"prompt": "lake", "subjects": [{"character": "cat", "caption": "sleeping"}]},
        {"prompt": "rain"},
    ],
})


@pytest.fixture
def fake_temp(tmp_path, monkeypatch):
    module = types.ModuleType("folder_paths")
    module.get_temp_directory = lambda: str(tmp_path / "temp")
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    return tmp_path / "temp"


def solid(n: int, h: int, w: int, rgb=(0.2, 0.4, 0.6)) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).expand(n, h, w, 3).clone()


# ---------------------------------------------------------------------------------------------------- reference
def test_reference_from_box_mask_and_chain():
    image = torch.rand(2, 20, 40, 3)
    (refs,) = L2S_ReferenceImage().build(image, "hero", 0.0, 0.0, 1.0, 1.0)
    assert set(refs) == {"hero"} and isinstance(refs["hero"], ReferenceImage) and refs["hero"].box is None
    assert torch.equal(refs["hero"].image, image[0].permute(2, 0, 1))  # (3, H, W), the first image
    mask = torch.zeros(1, 20, 40)
    mask[0, 5:15, 10:30] = 1.0
    (both,) = L2S_ReferenceImage().build(image, "cat", 0.1, 0.1, 0.2, 0.2, mask=mask, reference=refs)
    assert set(both) == {"hero", "cat"} and both["cat"].box == (0.25, 0.25, 0.75, 0.75)  # the mask wins
    (boxed,) = L2S_ReferenceImage().build(image, "hero", 0.1, 0.2, 0.6, 0.9, reference=both)
    assert boxed["hero"].box == (0.1, 0.2, 0.6, 0.9) and boxed["cat"] is both["cat"]
    assert set(refs) == {"hero"}  # the input mapping is not changed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"x0": 0.6, "x1": 0.5}, r"^x0/y0/x1/y1: x1 0.5 < x0 0.6"),
    ({"mask": torch.zeros(1, 8, 8)}, "^mask: the mask is empty"),
    ({"character_id": ""}, "^character_id: "),
    ({"image": torch.rand(8, 8)}, r"^image: expected an IMAGE of shape .* got shape \(8, 8\)"),
    ({"reference": {"hero": "not a reference"}}, "^reference: expected an L2S_REFERENCE"),
])
def test_reference_errors_name_the_input(kwargs, message):
    args = {"image": torch.rand(1, 8, 8, 3), "character_id": "hero", "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0}
    with pytest.raises(ValueError, match=message):
        L2S_ReferenceImage().build(**{**args, **kwargs})


def _nan_image():
    image = torch.rand(1, 16, 16, 3)
    image[0, 3, 4, 1] = float("nan")
    return image


def _pixel_values_image():
    """0..255 pixel values (fixed, so the message's numbers are known): 0 up to 254.5."""
    return torch.linspace(0.0, 254.5, 768).reshape(1, 16, 16, 3)


def _mask(n: int, h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(n, h, w)
    mask[:, h // 4: h // 2, w // 4: w // 2] = 1.0
    return mask


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"image": torch.rand(1, 1, 1, 3)}, r"^image: 1x1 pixels is too small for a reference \(at least 8x8\)"),
    ({"image": torch.rand(1, 16, 4, 3)}, r"^image: 4x16 pixels is too small"),
    ({"image": _nan_image()}, r"^image: 1 of 768 values are not finite \(NaN or infinity\)"),
    ({"image": _pixel_values_image()}, r"^image: values must be in 0\.\.1, got 0 up to 254\.5; "
                                       r"0\.\.255 pixel values\? divide by 255"),
    ({"image": torch.rand(1, 16, 16, 3) * 2 - 1}, r"^image: values must be in 0\.\.1, got -"),
    ({"image": torch.rand(1, 16, 16, 3), "mask": _mask(1, 8, 8)},
     r"^mask: 8x8 pixels, but the image is 16x16; give a mask of the image's size"),
    ({"image": torch.rand(2, 16, 16, 3), "mask": _mask(3, 16, 16)},
     r"^mask: a batch of 3 masks for 2 images; give one mask, or one per image"),
    ({"image": torch.rand(1, 16, 16, 3), "mask": _mask(1, 16, 16) * float("nan")}, r"^mask: .* not finite"),
    ({"image": torch.rand(1, 16, 16, 3), "mask": _mask(1, 16, 16) * 255}, r"^mask: values must be in 0\.\.1"),
])
def test_reference_refuses_bad_images_and_masks(kwargs, message):
    args = {"character_id": "hero", "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0}
    with pytest.raises(ValueError, match=message):
        L2S_ReferenceImage().build(**{**args, **kwargs})


def test_reference_accepts_a_mask_per_image_and_uses_the_first():
    masks = torch.cat([_mask(1, 16, 16), torch.ones(1, 16, 16)])
    (refs,) = L2S_ReferenceImage().build(torch.rand(2, 16, 16, 3), "hero", mask=masks)
    assert refs["hero"].box == (0.25, 0.25, 0.5, 0.5)


def test_image_helpers():
    assert image_tensor(torch.rand(4, 5, 1), "x").shape == (1, 4, 5, 3)  # one grey image -> RGB batch
    assert image_tensor(np.full((1, 2, 2, 4), 1.004, np.float32), "x").max() == 1.0  # alpha dropped, rounding clamped
    with pytest.raises(ValueError, match="^x: values must be in 0..1"):
        image_tensor(np.full((1, 2, 2, 4), 2.0, np.float32), "x")
    m = torch.zeros(10, 10)
    m[9, 0] = 1
    assert mask_box(m, "mask") == (0.0, 0.9, 0.1, 1.0)


# ----------------------------------------------------------------------------------------------------- detector
def test_detections_become_a_layout():
    found = [Detection((0.1, 0.2, 0.3, 0.4), 0.9, "fox"), None, Detection((0.5, 0.5, 0.5, 0.9), 0.5, "fox")]
    layout = detections_to_layout(found, "hero", "the fox")
    assert layout.characters == ("hero",)
    assert layout.frames == ((Subject("hero", (0.1, 0.2, 0.3, 0.4), "the fox"),), (), ())  # zero width dropped


def test_detector_node_on_a_tiny_grounding_dino(comfy_models):
    images = torch.rand(3, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    node = L2S_LayoutDetector()
    assert L2S_LayoutDetector.INPUT_TYPES()["required"]["detector"][0] == ["grounding-dino-tiny"]
    layout, preview = node.detect(images, "grounding-dino-tiny", "the main character", 0.0, 0.0, "hero", "cpu",
                                  "the fox")
    assert isinstance(layout, Layout) and layout.num_frames == 3
    assert all(len(f) == 1 and f[0].caption == "the fox" for f in layout.frames)
    assert preview.shape == images.shape and not torch.equal(preview, images)  # boxes drawn
    x0, y0, x1, y1 = layout.frames[0][0].box
    px, py = int(x0 * 63), int(y0 * 47)  # the box's top-left corner lies on its outline
    assert not torch.allclose(preview[0, py, px], images[0, py, px], atol=1 / 255)
    detector = node._detector[1]
    node.detect(images, "grounding-dino-tiny", "the main character", 0.0, 0.0, "hero", "cpu")
    assert node._detector[1] is detector  # cached


def test_frames_without_a_detection_get_no_layout(comfy_models, monkeypatch):
    class FakeDetector:
        def __init__(self):
            self.calls = []

        def detect(self, frames, prompt, box_threshold, text_threshold):
            self.calls.append((len(frames), prompt, box_threshold, text_threshold))
            found = Detection((0.25, 0.25, 0.75, 0.75), 0.8, "fox")
            return [found if len(self.calls) != 2 else None]

    fake = FakeDetector()
    node = L2S_LayoutDetector()
    monkeypatch.setattr(node, "_load", lambda choice, device: fake)
    images = solid(3, 16, 16)
    layout, preview = node.detect(images, "grounding-dino-tiny", "the fox", 0.3, 0.2, "hero", "cpu", "")
    assert fake.calls == [(1, "the fox", 0.3, 0.2)] * 3  # one image at a time: a Cancel point each
    assert layout.frames == ((Subject("hero", (0.25, 0.25, 0.75, 0.75)),), (), (Subject("hero", (0.25, 0.25, 0.75,
                                                                                                   0.75)),))
    assert torch.equal(preview[1], images[1]) and not torch.equal(preview[0], images[0])


def test_detector_errors(comfy_models):
    images = torch.rand(1, 48, 64, 3)
    with pytest.raises(ValueError, match="^box_threshold: expected a number in"):
        L2S_LayoutDetector().detect(images, "grounding-dino-tiny", "x", 1.5, 0.2, "hero", "cpu")
    with pytest.raises(ValueError, match="^detector: 'nothing' not found"):
        L2S_LayoutDetector().detect(images, "nothing", "x", 0.5, 0.2, "hero", "cpu")


# ------------------------------------------------------------------------------------------------------ preview
def test_layout_preview_draws_boxes_and_notes(fake_temp):
    blank = render_layout_preview(STORY)
    assert len(blank) == 3 and blank[0].size == (512, 256)  # the story's 64 x 32, enlarged 8x
    pixels = np.asarray(blank[0], dtype=np.int32)
    assert (np.abs(pixels[:, 256:] - 228).sum(-1) > 60).any()  # the box outline on the right half
    assert (np.abs(pixels[:100, :200] - 228).sum(-1) == 0).all()  # nothing on the left half's top
    out = L2S_LayoutPreview().preview(STORY, solid(2, 40, 80))
    images = out["result"][0]
    assert images.shape == (3, 280, 560, 3)  # one per story frame (the third blank), enlarged 7x
    assert len(out["ui"]["images"]) == 3 and all(r["type"] == "temp" for r in out["ui"]["images"])
    assert len(list((fake_temp / "lay2story").glob("*.png"))) == 3
    background = torch.tensor([0.2, 0.4, 0.6])
    middle = images[1, 10:200, 5:550]  # frame 2 has no box: only the note band at the bottom changes it
    assert torch.allclose(middle, background.expand_as(middle), atol=1 / 255)


# --------------------------------------------------------------------------------------------------- comic page
def test_comic_page_node_captions_from_story_or_lines():
    frames = solid(3, 32, 64)
    (pages,) = L2S_ComicPage().compose(frames, "four_panel", 12, 0, 8, 4, 1, "#ffffff", "black", story=STORY)
    (plain,) = L2S_ComicPage().compose(frames, "four_panel", 12, 0, 8, 4, 1, "white", "black")
    assert plain.shape == (1, 2 * 8 + 2 * 32 + 4, 2 * 8 + 2 * 64 + 4, 3)  # no captions: no caption band
    assert pages.shape[2] == plain.shape[2] and pages.shape[1] > plain.shape[1]  # a caption band under each row
    assert (pages.shape[1] - plain.shape[1]) % 2 == 0
    (classic,) = L2S_ComicPage().compose(frames, "classic", 12, 128, 8, 4, 1, "white", "black",
                                         captions="one\ntwo")
    assert classic.shape[0] == 1 and classic.shape[2] > 128
    with pytest.raises(ValueError, match="^captions: 4 lines for 3 frames"):
        L2S_ComicPage().compose(frames, "classic", 12, 0, 8, 4, 1, "white", "black", captions="a\nb\nc\nd")
    with pytest.raises(ValueError, match="^story: 3 frames but 2 images"):
        L2S_ComicPage().compose(frames[:2], "classic", 12, 0, 8, 4, 1, "white", "black", story=STORY)
    with pytest.raises(ValueError, match="^background: unknown colour 'nocolour'"):
        L2S_ComicPage().compose(frames, "classic", 12, 0, 8, 4, 1, "nocolour", "black")
