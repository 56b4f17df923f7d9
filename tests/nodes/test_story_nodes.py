"""Story, layout toggle and story <-> JSON nodes: what they build, and errors that name the input."""

from __future__ import annotations

import json

import pytest

from lay2story_core.story import FULL_FRAME, Layout, Story, Subject
from nodes.story_nodes import (
    DEFAULT_STORY_JSON,
    L2S_LayoutToggle,
    L2S_Story,
    L2S_StoryFromJSON,
    L2S_StoryToJSON,
)

LAYOUT = Layout(frames=((Subject("hero", (0.1, 0.2, 0.5, 0.9), "running"),), (), (Subject("hero"),)),
                characters=("hero",))


def build(**kwargs) -> Story:
    args = {"identity": "a red fox", "frame_prompts": "in a park\nat a lake\nin the rain", "negative_prompt": "",
            "width": 512, "height": 256, "character_id": "hero"}
    return L2S_Story().build(**{**args, **kwargs})[0]


def test_story_from_identity_and_one_prompt_per_line():
    story = build(frame_prompts="  in a park \n\n   \nat a lake\r\nin the rain\n", negative_prompt="blurry")
    assert [f.prompt for f in story.frames] == ["in a park", "at a lake", "in the rain"]
    assert story.character_ids == ("hero",) and story.characters[0].identity == "a red fox"
    assert (story.width, story.height, story.negative_prompt) == (512, 256, "blurry")
    assert all(f.subjects == () for f in story.frames)
    assert story.global_caption(1) == "a red fox, at a lake"
    assert build(character_id="  fox ").character_ids == ("fox",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frame_prompts": "\n \n"}, "^frame_prompts: no frame"),
    ({"identity": "   "}, "^identity: "),
    ({"character_id": ""}, "^character_id: "),
    ({"width": 500}, "^width: "),
    ({"height": 0}, "^height: "),
    ({"frame_prompts": "\n".join(["x"] * 300)}, "^frame_prompts: 300 frames exceed the limit"),
    ({"frame_prompts": 5}, "^frame_prompts: expected text"),
    ({"identity": "x" * 10_000_000}, "^identity: is 10000000 characters, over the limit of 1000$"),
    ({"frame_prompts": "ok\n" + "y" * 5000}, r"^frame_prompts: line 2 \('yyyy.*'\): is 5000 characters, over"),
    ({"negative_prompt": "n" * 1001}, "^negative_prompt: is 1001 characters, over the limit of 1000$"),
])
def test_story_errors_name_the_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_layout_toggle_applies_and_switches_parts():
    story = build()
    (full,) = L2S_LayoutToggle().toggle(story, True, True, LAYOUT)
    assert full.frames[0].subjects == LAYOUT.frames[0] and full.frames[2].subjects == (Subject("hero"),)
    (no_boxes,) = L2S_LayoutToggle().toggle(story, False, True, LAYOUT)
    assert no_boxes.frames[0].subjects == (Subject("hero", None, "running"),)
    assert no_boxes.resolve_frame(0)[0].box == FULL_FRAME and no_boxes.resolve_frame(0)[0].has_caption
    (no_captions,) = L2S_LayoutToggle().toggle(full, True, False)
    assert no_captions.frames[0].subjects == (Subject("hero", (0.1, 0.2, 0.5, 0.9)),)
    assert L2S_LayoutToggle().toggle(story, True, True)[0] is story  # nothing to change


def test_layout_toggle_errors():
    story = build()
    with pytest.raises(ValueError, match="^story: expected an L2S_STORY"):
        L2S_LayoutToggle().toggle("story", True, True)
    with pytest.raises(ValueError, match="^boxes: expected true or false"):
        L2S_LayoutToggle().toggle(story, 1, True)
    villain = Layout(frames=((Subject("villain", (0.1, 0.1, 0.2, 0.2)),),), characters=("villain",))
    with pytest.raises(ValueError, match=r"^layout: layout\.frames\[0\]\.subjects\[0\]\.character: unknown"):
        L2S_LayoutToggle().toggle(story, True, True, villain)
    too_long = Layout(frames=((Subject("hero", (0.1, 0.1, 0.2, 0.2)),),) * 4, characters=("hero",))
    with pytest.raises(ValueError, match="^layout: layout.frames: has 4 frames, the story only 3"):
        L2S_LayoutToggle().toggle(story, True, True, too_long)


def test_story_json_round_trip():
    story = L2S_LayoutToggle().toggle(build(), True, True, LAYOUT)[0]
    (text,) = L2S_StoryToJSON().dump(story, 2)
    assert json.loads(text)["frames"][0]["subjects"][0]["box"] == [0.1, 0.2, 0.5, 0.9]
    assert L2S_StoryFromJSON().parse(text)[0] == story
    (compact,) = L2S_StoryToJSON().dump(story, 0)
    assert "\n" not in compact and L2S_StoryFromJSON().parse(compact)[0] == story
    default = L2S_StoryFromJSON().parse(DEFAULT_STORY_JSON)[0]
    assert default.num_frames == 4 and default.character_ids == ("hero",)


def test_story_json_errors():
    with pytest.raises(ValueError, match=r"^story_json: frames\[0\]\.subjects\[0\]\.box: x1 0\.1 < x0 0\.5"):
        L2S_StoryFromJSON().parse(json.dumps({
            "version": 1, "characters": [{"id": "a", "identity": "x"}],
            "frames": [{"prompt": "p", "subjects": [{"character": "a", "box": [0.5, 0, 0.1, 1]}]}]}))
    with pytest.raises(ValueError, match="^story_json: <json>: invalid JSON"):
        L2S_StoryFromJSON().parse("{nope")
    with pytest.raises(ValueError, match="^indent: expected an integer in 0..8"):
        L2S_StoryToJSON().dump(build(), 9)
