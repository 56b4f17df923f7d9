"""Auto layout (``lay2story_core.pipelines.auto_layout``): boxes from the draft's maps, and in ``StoryPipeline`` a
layout-off call that places its characters equals a layout-on call with the placed story, bit for bit."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.loading import ModelLoadError
from lay2story_core.pipelines import PipelineManifest
from lay2story_core.pipelines.auto_layout import (
    AUTO_LAYOUT_CHOICES,
    AutoLayout,
    boxes_from_maps,
    draft_maps,
    placed_story,
    resolve_auto_layout,
    separate_boxes,
    unplaced,
)
from lay2story_core.story import Story

SIZE = dict(height=32, width=32, num_inference_steps=4, output_type="pt", seed=3)


def _story(frames: int = 3, boxes: bool = False) -> Story:
    return Story.from_dict({
        "version": 1, "width": 32, "height": 32,
        "characters": [{"id": "fox", "identity": "a red fox"}, {"id": "cat", "identity": "a blue cat"}],
        "frames": [{"prompt": f"on the grass {i}",
                    "subjects": [{"character": c, **({"box": b} if boxes else {})}
                                 for c, b in (("fox", [0.0, 0.0, 0.5, 0.5]), ("cat", [0.5, 0.5, 1.0, 1.0]))
                                 ][: 1 + i % 2]}
                   for i in range(frames)],
    })


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


# -- boxes from maps ---------------------------------------------------------------------------------------------
def test_a_blob_gives_its_bounding_box_and_the_aspect_grows_it_about_its_centre():
    maps = torch.zeros(1, 16, 16)
    maps[0, 4:8, 2:10] = 1.0  # rows 4..7, columns 2..9
    assert boxes_from_maps(maps, 0.5, None) == [(2 / 16, 4 / 16, 10 / 16, 8 / 16)]
    (box,) = boxes_from_maps(maps, 0.5, 1.0)
    assert box[2] - box[0] == pytest.approx(0.5) and box[3] - box[1] == pytest.approx(0.5)
    assert ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) == pytest.approx((6 / 16, 6 / 16))


def test_the_threshold_is_relative_to_each_maps_maximum():
    maps = torch.zeros(2, 8, 8)
    maps[0, 1:3, 1:3] = 10.0
    maps[0, 5, 5] = 4.0  # below 0.5 of its map's maximum
    maps[1, 5:7, 5:7] = 0.1  # a faint map still finds its blob
    assert boxes_from_maps(maps, 0.5, None) == [(1 / 8, 1 / 8, 3 / 8, 3 / 8), (5 / 8, 5 / 8, 7 / 8, 7 / 8)]


def test_overlapping_maps_give_disjoint_boxes_each_pixel_to_its_strongest_character():
    maps = torch.zeros(3, 16, 16)
    maps[:, 4:12, 4:12] = torch.tensor([1.0, 0.9, 0.8])[:, None, None]  # one merged blob
    maps[0, 4:12, 4:8] += 0.5
    maps[1, 4:12, 8:12] += 0.5
    boxes = boxes_from_maps(maps, 0.5, 1.0)
    for i in range(3):
        assert all(0.0 <= v <= 1.0 for v in boxes[i]) and boxes[i][2] > boxes[i][0] and boxes[i][3] > boxes[i][1]
        for j in range(i + 1, 3):
            assert _overlap(boxes[i], boxes[j]) == 0.0, boxes
    assert boxes[0][0] < boxes[1][0]  # the left half's character stays left


def test_sizes_are_bounded_and_crowded_boxes_do_not_shrink_below_the_minimum():
    maps = torch.zeros(1, 20, 20)
    maps[0, 8:10, 8:10] = 1.0  # a 0.1-side blob
    (box,) = boxes_from_maps(maps, 0.5, 1.0, min_size=0.4)
    assert box[2] - box[0] == pytest.approx(0.4) and (box[0] + box[2]) / 2 == pytest.approx(0.45)
    maps[0, :, :] = 1.0  # the whole frame
    (box,) = boxes_from_maps(maps, 0.5, 1.0, max_size=0.65)
    assert box[2] - box[0] == pytest.approx(0.65) and box[3] - box[1] == pytest.approx(0.65)
    crowded = torch.zeros(3, 20, 20)
    crowded[:, 6:14, 6:14] = torch.tensor([1.0, 0.95, 0.9])[:, None, None]
    boxes = boxes_from_maps(crowded, 0.5, 1.0, min_size=0.4, max_size=0.65)
    assert all(max(b[2] - b[0], b[3] - b[1]) >= 0.4 - 1e-6 for b in boxes), boxes
    assert all(_overlap(a, b) == 0.0 for i, a in enumerate(boxes) for b in boxes[i + 1:]), boxes
    with pytest.raises(ValueError, match=r"^auto_layout\.min_size: 0\.7 is above max_size 0\.5"):
        AutoLayout(min_size=0.7, max_size=0.5)
    with pytest.raises(ValueError, match=r"^auto_layout\.max_size: expected a number in \(0, 1\]"):
        AutoLayout(max_size=2)


def test_an_all_zero_map_gives_the_whole_frame():
    assert boxes_from_maps(torch.zeros(1, 4, 4), 0.5, 1.0) == [(0.0, 0.0, 1.0, 1.0)]


def test_separate_boxes_leaves_disjoint_boxes_alone_and_parts_overlapping_ones():
    disjoint = [(0.0, 0.0, 0.4, 0.4), (0.5, 0.5, 0.9, 0.9)]
    assert separate_boxes(disjoint) == disjoint
    parted = separate_boxes([(0.2, 0.2, 0.6, 0.6), (0.3, 0.25, 0.7, 0.65), (0.25, 0.3, 0.65, 0.7)])
    for i in range(3):
        for j in range(i + 1, 3):
            assert _overlap(parted[i], parted[j]) == 0.0, parted


# -- settings ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"draft": 0}, r"^auto_layout\.draft: expected a number in \(0, 1\], got 0$"),
    ({"threshold": 1.5}, r"^auto_layout\.threshold: expected a number in \(0, 1\], got 1\.5$"),
    ({"aspect": 0.0}, r"^auto_layout\.aspect: expected a number in \[0\.1, 10\]"),
    ({"draft": True}, r"^auto_layout\.draft: .* got True$"),
])
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoLayout(**kwargs)


def test_resolve_and_draft_steps():
    folder = AutoLayout(draft=0.5)
    assert resolve_auto_layout(None, None) is None and resolve_auto_layout(None, folder) is folder
    assert resolve_auto_layout(False, folder) is None
    assert resolve_auto_layout(True, folder) is folder and resolve_auto_layout(True, None) == AutoLayout()
    mine = AutoLayout(threshold=0.7)
    assert resolve_auto_layout(mine, folder) is mine
    assert dict(AUTO_LAYOUT_CHOICES) == {"model": None, "on": True, "off": False}
    with pytest.raises(ValueError, match=r"^auto_layout: expected True, False, None"):
        resolve_auto_layout("yes", None)
    assert [AutoLayout(draft=d).draft_steps(16) for d in (0.01, 0.25, 1.0)] == [1, 4, 15]


def test_the_manifest_carries_auto_layout(tmp_path):
    PipelineManifest(name="m", auto_layout=AutoLayout(draft=0.2, aspect=None)).write(tmp_path)
    assert PipelineManifest.read(tmp_path).auto_layout == AutoLayout(draft=0.2, aspect=None)
    PipelineManifest(name="m").write(tmp_path)
    assert PipelineManifest.read(tmp_path).auto_layout is None
    (tmp_path / "lay2story.json").write_text('{"format": "lay2story-pipeline", "version": 1, '
                                             '"auto_layout": {"threshold": 2}}')
    with pytest.raises(ModelLoadError, match=r"auto_layout\.threshold: expected a number in \(0, 1\], got 2"):
        PipelineManifest.read(tmp_path)
    (tmp_path / "lay2story.json").write_text('{"format": "lay2story-pipeline", "version": 1, '
                                             '"auto_layout": {"size": 2}}')
    with pytest.raises(ModelLoadError, match=r"auto_layout: unknown key 'size'"):
        PipelineManifest.read(tmp_path)


# -- the story's side ----------------------------------------------------------------------------------------------
def test_placed_story_fills_only_the_subjects_without_a_box():
    story = _story(frames=2, boxes=True)
    resolved = [story.resolve_frame(i) for i in range(2)]
    assert unplaced(resolved) == []
    off = [story.resolve_frame(i, boxes=False) for i in range(2)]
    assert unplaced(off) == [(0, "fox"), (1, "fox"), (1, "cat")]
    placed = placed_story(story, resolved, {(1, "cat"): (0.1, 0.1, 0.3, 0.3)})
    assert placed.frames[1].subjects[1].box == (0.1, 0.1, 0.3, 0.3)
    assert placed.frames[1].subjects[0].box == story.frames[1].subjects[0].box
    assert placed.frames[0] == story.frames[0]
    empty = Story.from_dict({"version": 1, "characters": [{"id": "fox", "identity": "a red fox"}],
                             "frames": [{"prompt": "a field"}]})  # no subjects: every character is there
    placed = placed_story(empty, [empty.resolve_frame(0)], {(0, "fox"): (0.2, 0.2, 0.6, 0.6)})
    assert [(s.character, s.box) for s in placed.frames[0].subjects] == [("fox", (0.2, 0.2, 0.6, 0.6))]


def test_draft_maps_are_the_change_when_a_character_leaves_the_caption():
    story = _story(frames=2)
    seen = []

    def predict(x, captions):  # the fox's words light up the top-left, the cat's the bottom-right
        seen.append(captions)
        out = torch.zeros(len(captions), 8, 4, 4)
        for i, text in enumerate(captions):
            out[i, :4, :2, :2] += float("red fox" in text)
            out[i, :4, 2:, 2:] += 2.0 * float("blue cat" in text)
            out[i, 4:] = 100.0  # learned-sigma channels are not looked at
        return out

    latents = torch.zeros(2, 4, 4, 4)
    maps = draft_maps(predict, story, [0, 1], latents, lambda f, c: story.global_caption(f, without=(c,)),
                      {1: ["fox", "cat"]})
    assert list(maps) == [1] and maps[1].shape == (2, 4, 4)
    assert seen == [[story.global_caption(1), "a blue cat, on the grass 1", "a red fox, on the grass 1"]]
    assert boxes_from_maps(maps[1], 0.5, None) == [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)]


# -- the pipeline ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


def test_auto_layout_equals_a_layout_on_call_with_the_placed_story(pipe):
    story = _story()
    auto = pipe(story, mode="lay2story", layout=False, auto_layout=True, **SIZE)
    placed = auto.story
    assert placed != story
    assert all(s.box is not None for f in placed.frames for s in f.subjects)
    for frame in placed.frames:
        boxes = [s.box for s in frame.subjects]
        assert all(_overlap(a, b) == 0.0 for i, a in enumerate(boxes) for b in boxes[i + 1:])
    again = pipe(placed, mode="lay2story", layout=True, **SIZE)
    assert torch.equal(auto.images, again.images)
    # in chunks (the draft runs chunk by chunk, the passes write and read) the same holds
    chunked = pipe(story, mode="lay2story", layout=False, auto_layout=True, chunk_size=2, identity_frames=1, **SIZE)
    assert torch.equal(chunked.images, pipe(chunked.story, mode="lay2story", chunk_size=2, identity_frames=1,
                                            **SIZE).images)


def test_auto_layout_off_is_the_plain_layout_off_call(pipe):
    story = _story()
    plain = pipe(story, mode="lay2story", layout=False, **SIZE)  # the tiny folder declares none: off
    assert plain.story == story
    off = pipe(story, mode="lay2story", layout=False, auto_layout=False, **SIZE)
    assert torch.equal(plain.images, off.images) and off.story == story


def test_the_folders_choice_applies_when_the_call_makes_none(pipe, monkeypatch):
    story = _story()
    monkeypatch.setattr(pipe, "auto_layout", AutoLayout(draft=0.5), raising=False)
    folder = pipe(story, mode="lay2story", layout=False, **SIZE)
    assert folder.story != story
    assert torch.equal(folder.images, pipe(story, mode="lay2story", layout=False, auto_layout=AutoLayout(draft=0.5),
                                           **SIZE).images)
    assert pipe(story, mode="lay2story", layout=False, auto_layout=False, **SIZE).story == story


def test_only_lay2story_mode_places_and_boxed_subjects_keep_their_boxes(pipe):
    story = _story()
    for mode in ("training_free", "none"):
        out = pipe(story, mode=mode, layout=False, auto_layout=True, **SIZE)
        assert out.story == story
        assert torch.equal(out.images, pipe(story, mode=mode, layout=False, **SIZE).images)
    boxed = _story(boxes=True)
    out = pipe(boxed, mode="lay2story", auto_layout=True, **SIZE)  # every subject has its box: nothing to place
    assert out.story == boxed
    with pytest.raises(ValueError, match=r"^auto_layout: expected True, False, None"):
        pipe(story, mode="lay2story", auto_layout="on", **SIZE)
