"""Training-free box control's plan: captions, windows centred on the boxes, composition, the strength rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lay2story_core.consistency import ConsistencyConfig
from lay2story_core.consistency.box_control import (
    BOX_STRENGTH,
    BoxPlan,
    box_captions,
    box_steps,
    caption_with,
    check_box_strength,
)
from lay2story_core.story import Story


def _story() -> Story:
    return Story.from_dict({
        "version": 1, "width": 64, "height": 64,
        "characters": [{"id": "fox", "identity": "a red fox"}, {"id": "cat", "identity": "a blue cat"},
                       {"id": "owl", "identity": "a green owl"}],
        "frames": [
            {"prompt": "on the grass", "subjects": [{"character": "fox", "box": [0.0, 0.0, 0.5, 0.5]},
                                                    {"character": "cat", "box": [0.5, 0.5, 1.0, 1.0]}]},
            {"prompt": "in the sky", "subjects": [{"character": "cat", "box": [0.25, 0.5, 0.75, 1.0]},
                                                  {"character": "owl"}]},
            {"prompt": "at night"},
        ],
    })


def _plan(strength: float = 0.5, steps: int = 10) -> tuple[Story, BoxPlan]:
    story = _story()
    resolved = [story.resolve_frame(i) for i in range(story.num_frames)]
    return story, BoxPlan.build(story, [0, 1, 2], resolved, (16, 16), 2, strength, steps)


def test_strength_is_a_share_of_the_steps_and_bad_values_name_the_field():
    assert BOX_STRENGTH == ConsistencyConfig().box_strength and 0 <= BOX_STRENGTH <= 1
    assert [box_steps(s, 16) for s in (0.0, 0.01, 0.5, 1.0)] == [0, 1, 8, 16]
    for bad in (-0.1, 1.5, True, "0.5", None):
        with pytest.raises(ValueError, match="^box_strength: expected a number in \\[0, 1\\]"):
            check_box_strength(bad)
        with pytest.raises(ValueError, match="^box_strength: "):
            ConsistencyConfig(box_strength=bad)
    with pytest.raises(ValueError, match="^--box-strength: .*got 2"):
        ConsistencyConfig.from_user(0.5, "all", 2, box_strength_field="--box-strength")
    assert ConsistencyConfig.from_user(0.5, "all", 0).box_strength == 0.0


def test_captions_are_the_global_caption_with_the_character_alone_and_without_the_boxed_ones():
    story = _story()
    assert caption_with(story, 0, ["fox"]) == "a red fox, on the grass"
    assert caption_with(story, 0, []) == "on the grass"
    assert caption_with(story, 1, ["owl"]) == story.global_caption(1).replace("a blue cat, ", "")
    resolved = [story.resolve_frame(i) for i in range(story.num_frames)]
    assert box_captions(story, resolved) == ["on the grass", "a red fox, on the grass", "a blue cat, on the grass",
                                             "a green owl, in the sky", "a blue cat, in the sky"]


def test_plan_windows_centre_each_box_and_the_background_is_outside_every_box():
    story, plan = _plan()
    assert plan.steps == 5 and plan.active(4) and not plan.active(5)
    assert plan.background == ("on the grass", "a green owl, in the sky", story.global_caption(2))
    assert [r.character for r in plan.regions] == ["fox", "cat"]
    fox, cat = plan.regions
    assert fox.frames == (0,) and cat.frames == (0, 1)
    assert fox.captions == ("a red fox, on the grass", *plan.background[1:])  # other frames: nothing of the fox
    assert cat.captions[:2] == ("a blue cat, on the grass", "a blue cat, in the sky")
    assert fox.shifts == ((4, 4), (0, 0), (0, 0)) and cat.shifts == ((-4, -4), (-4, 0), (0, 0))  # patch multiples
    for region in plan.regions:  # the rolled box covers the frame centre, with as many tokens as before
        centred = region.window(region.masks)[list(region.frames), 0]
        assert centred[:, 7:9, 7:9].all()
        cells = region.masks[:, 0].reshape(-1, 8, 2, 8, 2)[:, :, 0, :, 0] > 0
        assert torch.equal(region.tokens.sum(1), cells.flatten(1).sum(1))
    assert not fox.tokens[1:].any() and not fox.masks[1:].any()
    union = fox.masks[0, 0] + cat.masks[0, 0]
    assert torch.equal(plan.background_mask[0, 0], (union == 0).float())
    assert plan.background_mask[2].all()  # a frame without boxes: the background call alone
    assert BoxPlan.build(story, [2], [story.resolve_frame(i) for i in range(3)], (16, 16), 2, 0.5, 10) is None
    assert _plan(strength=0.0)[1] is None


def test_window_and_unroll_are_inverse_and_compose_takes_each_prediction_inside_its_box():
    _, plan = _plan()
    fox, cat = plan.regions
    x = torch.randn(6, 4, 16, 16)  # two CFG halves of 3 frames
    window = cat.window(x)
    assert torch.equal(window[2], x[2]) and torch.equal(window[5], x[5]) and torch.equal(cat.unroll(window), x)
    background = torch.zeros(6, 4, 16, 16)
    out = plan.compose(background, [torch.full((6, 4, 16, 16), 1.0), torch.full((6, 4, 16, 16), 3.0)])
    fox_box, cat_box = fox.masks[0, 0].bool(), cat.masks[0, 0].bool()
    for half in (0, 3):
        assert (out[half, :, fox_box] == 1.0).all() and (out[half, :, cat_box] == 3.0).all()
        assert (out[half, :, ~(fox_box | cat_box)] == 0.0).all()
        assert (out[half + 1, :, cat.masks[1, 0].bool()] == 3.0).all() and (out[half + 2] == 0.0).all()
    whole = dataclasses.replace(fox, shifts=((0, 0),), masks=torch.ones(1, 1, 2, 2))
    overlap = BoxPlan(1, ("x",), torch.zeros(1, 1, 2, 2), (whole, whole))
    mixed = overlap.compose(torch.zeros(1, 1, 2, 2), [torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 3.0)])
    assert torch.equal(mixed, torch.full((1, 1, 2, 2), 2.0))  # overlapping boxes: averaged
