"""The layout editor nodes (nodes/layout_editor.py) without ComfyUI: widget JSON in, Layout/Story out, errors named."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from lay2story_core.story import Layout, Story
from nodes.layout_editor import (
    DEFAULT_LAYOUT_JSON,
    L2S_LayoutEditor,
    L2S_LayoutFromJSON,
    L2S_LayoutToJSON,
    save_backgrounds,
)
from nodes.registry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

NODE_CLASSES = (L2S_LayoutEditor, L2S_LayoutFromJSON, L2S_LayoutToJSON)

LAYOUT = {
    "version": 1,
    "characters": ["hero", "villain"],
    "frames": [
        {"subjects": [{"character": "hero", "box": [0.1, 0.2, 0.5, 0.9], "caption": "red coat, running"},
                      {"character": "villain", "box": [0.6, 0.1, 0.95, 0.8]}]},
        {"subjects": []},
        {"subjects": [{"character": "villain"}]},
    ],
}

STORY = {
    "version": 1,
    "width": 768,
    "height": 512,
    "characters": [{"id": "hero", "identity": "a girl with a red coat"},
                   {"id": "villain", "identity": "a tall man in black"}],
    "frames": [{"prompt": "in a park"}, {"prompt": "at a lake"}, {"prompt": "in the rain"}],
}


@pytest.fixture
def fake_comfy_temp(tmp_path, monkeypatch):
    """A stand-in for ComfyUI's folder_paths module with its temp folder in tmp_path."""
    module = types.ModuleType("folder_paths")
    module.get_temp_directory = lambda: str(tmp_path / "temp")
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    return tmp_path / "temp"


@pytest.mark.parametrize("cls", NODE_CLASSES)
def test_node_conventions(cls):
    assert cls.NODE_ID.startswith("L2S_")
    assert NODE_CLASS_MAPPINGS[cls.NODE_ID] is cls
    assert NODE_DISPLAY_NAME_MAPPINGS[cls.NODE_ID] == cls.DISPLAY_NAME
    assert cls.CATEGORY == "Lay2Story/layout"
    assert cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    spec = cls.INPUT_TYPES()
    for section in spec.values():
        for name, (_, options) in section.items():
            assert options.get("tooltip"), f"{cls.NODE_ID}.{name} has no tooltip"
    json.dumps(spec)  # /object_info must be able to serialise it


def test_default_widget_value_is_an_empty_four_frame_layout():
    layout = Layout.from_json(DEFAULT_LAYOUT_JSON)
    assert layout.num_frames == 4
    assert layout.characters == ("hero",)
    assert all(frame == () for frame in layout.frames)
    assert L2S_LayoutEditor.INPUT_TYPES()["required"]["layout_json"][1]["default"] == DEFAULT_LAYOUT_JSON


def test_editor_without_story_returns_the_layout_and_none():
    out = L2S_LayoutEditor().edit(json.dumps(LAYOUT))
    layout, story = out["result"]
    assert story is None
    assert layout == Layout.from_dict(LAYOUT)
    assert layout.frames[0][0].caption == "red coat, running"
    assert layout.frames[0][1].box == (0.6, 0.1, 0.95, 0.8)
    assert out["ui"] == {"l2s_backgrounds": []}


def test_editor_merges_the_layout_into_a_connected_story():
    story = Story.from_dict(STORY)
    out = L2S_LayoutEditor().edit(json.dumps(LAYOUT), story=story)
    layout, merged = out["result"]
    assert merged.frames[0].subjects == layout.frames[0]
    assert merged.frames[2].subjects[0].character == "villain"
    assert [f.prompt for f in merged.frames] == ["in a park", "at a lake", "in the rain"]
    assert out["ui"]["l2s_frame_size"] == [768, 512]
    assert out["ui"]["l2s_characters"] == ["hero", "villain"]
    assert out["ui"]["l2s_prompts"] == ["in a park", "at a lake", "in the rain"]


def test_trailing_empty_layout_frames_past_the_story_are_dropped_but_drawn_ones_are_errors():
    story = Story.from_dict({**STORY, "frames": STORY["frames"][:2]})
    _, merged = L2S_LayoutEditor().edit(DEFAULT_LAYOUT_JSON, story=story)["result"]
    assert merged.num_frames == 2
    with pytest.raises(ValueError, match=r"^layout_json: layout\.frames: has 3 frames, the story only 2"):
        L2S_LayoutEditor().edit(json.dumps(LAYOUT), story=story)


def test_layout_dialogue_replaces_a_frames_lines_and_the_run_reports_every_frames_lines():
    story = Story.from_dict({**STORY, "version": 2, "frames": [
        {"prompt": "in a park", "dialogue": [{"text": "Nice day.", "speaker": "hero"}]},
        {"prompt": "at a lake", "dialogue": [{"text": "Meanwhile..."}]}, {"prompt": "in the rain"}]})
    layout = {**LAYOUT, "version": 2, "frames": [
        {**LAYOUT["frames"][0], "dialogue": [{"text": "Run!", "speaker": "hero", "style": "shout"}]},
        LAYOUT["frames"][1], {**LAYOUT["frames"][2], "dialogue": []}]}
    out = L2S_LayoutEditor().edit(json.dumps(layout), story=story)
    _, merged = out["result"]
    assert [line.text for line in merged.frames[0].dialogue] == ["Run!"]  # replaced
    assert merged.frames[1].dialogue == story.frames[1].dialogue  # no "dialogue" key: the story's lines stay
    assert merged.frames[2].dialogue == ()  # an empty list clears them
    assert out["ui"]["l2s_dialogue"] == [[{"text": "Run!", "speaker": "hero", "style": "shout"}],
                                         [{"text": "Meanwhile...", "style": "caption"}], []]


def test_dialogue_past_the_story_is_an_error_and_unknown_speakers_name_the_line():
    story = Story.from_dict({**STORY, "frames": STORY["frames"][:2]})
    text = json.dumps({"version": 2, "frames": [{}, {}, {"dialogue": [{"text": "The end."}]}]})
    with pytest.raises(ValueError, match=r"^layout_json: layout\.frames: has 3 frames, the story only 2"):
        L2S_LayoutEditor().edit(text, story=story)
    text = json.dumps({"version": 2, "frames": [{"dialogue": [{"text": "Boo", "speaker": "ghost"}]}]})
    with pytest.raises(ValueError, match=r"^layout_json: layout\.frames\[0\]\.dialogue\[0\]\.speaker: unknown "
                                         r"character 'ghost' .*\(in the editor: frame 1, line 1 \(speaker\)\)$"):
        L2S_LayoutEditor().edit(text, story=story)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("{oops", r"^layout_json: <json>: invalid JSON at line 1"),
        (json.dumps({**LAYOUT, "frames": [{"subjects": [{"character": "hero", "box": [0.5, 0, 0.2, 1]}]}]}),
         r"^layout_json: layout\.frames\[0\]\.subjects\[0\]\.box: x1 0\.2 < x0 0\.5"),
        (json.dumps({"version": 1, "frames": [], "frame": []}), r"^layout_json: layout: unknown key\(s\) 'frame'"),
        (json.dumps({"version": 7, "frames": []}), r"^layout_json: layout\.version: unsupported schema version"),
    ],
)
def test_bad_json_raises_a_value_error_naming_the_field(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        L2S_LayoutEditor().edit(text)


def test_unknown_character_in_a_connected_story_is_named():
    bad = {**LAYOUT, "frames": [{"subjects": [{"character": "ghost", "box": [0, 0, 1, 1]}]}]}
    with pytest.raises(ValueError, match=r"^layout_json: layout\.frames\[0\]\.subjects\[0\]\.character: unknown "
                                         r"character 'ghost'"):
        L2S_LayoutEditor().edit(json.dumps(bad), story=Story.from_dict(STORY))


def test_non_string_and_non_story_inputs_are_named():
    with pytest.raises(ValueError, match=r"^layout_json: expected Layout JSON text, got int"):
        L2S_LayoutEditor().edit(3)
    with pytest.raises(ValueError, match=r"^story: expected an L2S_STORY"):
        L2S_LayoutEditor().edit(DEFAULT_LAYOUT_JSON, story={"frames": []})


def test_background_images_are_saved_for_the_canvas(fake_comfy_temp):
    images = torch.zeros(2, 48, 64, 3)
    images[0, :, :32, 0] = 1.0  # frame 0: left half red
    images[1, 24:, :, 2] = 0.5  # frame 1: bottom half mid blue
    out = L2S_LayoutEditor().edit(DEFAULT_LAYOUT_JSON, background=images)
    records = out["ui"]["l2s_backgrounds"]
    assert [r["type"] for r in records] == ["temp", "temp"]
    assert out["ui"]["l2s_frame_size"] == [64, 48]
    first = np.asarray(Image.open(fake_comfy_temp / records[0]["subfolder"] / records[0]["filename"]))
    second = np.asarray(Image.open(fake_comfy_temp / records[1]["subfolder"] / records[1]["filename"]))
    assert first.shape == (48, 64, 3)
    assert (first[:, :32, 0] == 255).all() and (first[:, 32:] == 0).all()
    assert (second[24:, :, 2] == 128).all() and (second[:24] == 0).all()
    again = L2S_LayoutEditor().edit(DEFAULT_LAYOUT_JSON, background=images)["ui"]["l2s_backgrounds"]
    assert again == records  # content-named: a re-run reuses the files
    assert not list(fake_comfy_temp.rglob("*.tmp"))


def test_story_size_wins_over_background_size(fake_comfy_temp):
    out = L2S_LayoutEditor().edit(DEFAULT_LAYOUT_JSON, story=Story.from_dict(STORY),
                                  background=torch.rand(1, 16, 16, 3))
    assert out["ui"]["l2s_frame_size"] == [768, 512]
    assert len(out["ui"]["l2s_backgrounds"]) == 1


def test_large_backgrounds_are_downscaled_and_grey_images_accepted(fake_comfy_temp):
    records, size = save_backgrounds(np.full((1, 2048, 1536, 1), 0.5, dtype=np.float32))
    assert size == (1536, 2048)
    saved = Image.open(fake_comfy_temp / records[0]["subfolder"] / records[0]["filename"])
    assert saved.size == (768, 1024)


@pytest.mark.parametrize("shape", [(2, 8, 8), (1, 8, 8, 2), (8,), (0, 8, 8, 3)])
def test_bad_background_shapes_are_named(fake_comfy_temp, shape):
    with pytest.raises(ValueError, match=r"^background: expected an IMAGE of shape"):
        L2S_LayoutEditor().edit(DEFAULT_LAYOUT_JSON, background=torch.zeros(shape))


def test_layout_json_round_trip_nodes():
    (layout,) = L2S_LayoutFromJSON().parse(json.dumps(LAYOUT))
    (text,) = L2S_LayoutToJSON().dump(layout, indent=0)
    assert "\n" not in text
    assert Layout.from_json(text) == layout
    (pretty,) = L2S_LayoutToJSON().dump(layout, indent=2)
    assert json.loads(pretty) == json.loads(text)
    with pytest.raises(ValueError, match=r"^layout_json: layout\.frames\[0\]: unknown key"):
        L2S_LayoutFromJSON().parse(json.dumps({"version": 1, "frames": [{"subject": []}]}))
    with pytest.raises(ValueError, match=r"^layout: expected an L2S_LAYOUT"):
        L2S_LayoutToJSON().dump("{}", indent=2)
    with pytest.raises(ValueError, match=r"^indent: expected an integer in 0\.\.8"):
        L2S_LayoutToJSON().dump(layout, indent=-1)
