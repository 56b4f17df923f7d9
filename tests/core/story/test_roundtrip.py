import json
import os
from pathlib import Path

import pytest

from lay2story_core.story import (
    LayoutError,
    Story,
    load_story,
    parse_layout,
    parse_story,
    save_story,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "stories"


def test_dict_round_trip_is_lossless(story_dict):
    story = Story.from_dict(story_dict)
    assert story.to_dict() == story_dict
    assert Story.from_dict(story.to_dict()) == story


def test_json_round_trip_and_indent(story_dict):
    story = Story.from_dict(story_dict)
    text = story.to_json()
    assert "\n  " in text
    assert Story.from_json(text) == story
    compact = story.to_json(indent=None)
    assert "\n" not in compact and Story.from_json(compact) == story
    assert Story.from_json(text.encode("utf-8")) == story


def test_optional_keys_are_omitted_and_defaults_apply():
    story = Story.from_dict({"version": 1, "characters": [{"id": "a", "identity": "x"}], "frames": [{"prompt": "p"}]})
    assert (story.width, story.height, story.negative_prompt) == (512, 512, "")
    data = story.to_dict()
    assert data["characters"] == [{"id": "a", "identity": "x"}]
    assert data["frames"] == [{"prompt": "p", "subjects": []}]
    assert Story.from_dict(data) == story


def test_nulls_mean_absent(story_dict):
    story_dict["characters"][1]["reference"] = None
    story_dict["frames"][2]["subjects"] = None
    story_dict["frames"][2]["image"] = None
    story_dict["frames"][1]["subjects"][0]["caption"] = None
    story_dict["negative_prompt"] = None
    story = Story.from_dict(story_dict)
    assert story.characters[1].reference is None and story.frames[2].subjects == ()
    assert story.frames[1].subjects[0].caption is None and story.negative_prompt == ""


def test_blank_caption_means_no_caption(story_dict):
    story_dict["frames"][0]["subjects"][0]["caption"] = "   "
    story = Story.from_dict(story_dict)
    assert story.frames[0].subjects[0].caption is None
    assert "caption" not in story.to_dict()["frames"][0]["subjects"][0]


def test_ints_are_accepted_for_box_floats(story_dict):
    story_dict["frames"][0]["subjects"][0]["box"] = [0, 0, 1, 1]
    box = Story.from_dict(story_dict).frames[0].subjects[0].box
    assert box == (0.0, 0.0, 1.0, 1.0) and all(type(v) is float for v in box)


def test_boxes_within_epsilon_are_clamped_with_a_warning(story_dict, caplog):
    story_dict["frames"][0]["subjects"][0]["box"] = [-0.0005, 0.2, 1.0009, 0.9]
    with caplog.at_level("WARNING"):
        story = Story.from_dict(story_dict)
    assert story.frames[0].subjects[0].box == (0.0, 0.2, 1.0, 0.9)
    assert "frames[0].subjects[0].box" in caplog.text and "clamped" in caplog.text


def test_file_round_trip_resolves_and_relativises_paths(story_dict, tmp_path):
    path = tmp_path / "s" / "story.json"
    path.parent.mkdir()
    (path.parent / "story.json").write_text(json.dumps(story_dict))
    story = load_story(path)
    assert story.characters[0].reference.image == str(path.parent / "ref.png")
    assert story.frames[0].image == str(path.parent / "f0.png")
    out = tmp_path / "s" / "copy.json"
    save_story(story, out)
    written = json.loads(out.read_text())
    assert written["characters"][0]["reference"]["image"] == "ref.png"  # relative again: the folder can move
    assert written["frames"][0]["image"] == "f0.png"
    assert load_story(out) == story
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_save_keeps_paths_outside_the_folder_absolute(story_dict, tmp_path):
    story = Story.from_dict(story_dict).resolve_paths(tmp_path / "elsewhere")
    save_story(story, tmp_path / "x.json")
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["frames"][0]["image"] == "elsewhere/f0.png"
    (tmp_path / "deeper").mkdir()
    save_story(story, tmp_path / "deeper" / "y.json")
    data = json.loads((tmp_path / "deeper" / "y.json").read_text())
    assert data["frames"][0]["image"] == os.path.join(str(tmp_path), "elsewhere", "f0.png")


def test_save_is_atomic_on_failure(story_dict, tmp_path, monkeypatch):
    path = tmp_path / "story.json"
    path.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_story(Story.from_dict(story_dict), path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["story.json"]


def test_load_story_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(LayoutError, match=r"nope\.json: story file not found"):
        load_story(missing)
    with pytest.raises(LayoutError, match="cannot read story file"):
        load_story(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1,')
    with pytest.raises(LayoutError, match=r"bad\.json: invalid JSON at line 1 column 15"):
        load_story(bad)
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"version": 1, "characters": [], "frames": [{"prompt": "p"}]}')
    with pytest.raises(LayoutError) as info:
        load_story(invalid)
    assert str(info.value) == f"{invalid}: characters: must list at least one character"
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LayoutError, match=r"binary\.json: not UTF-8"):
        load_story(binary)


def test_load_story_passes_limits(story_dict, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(story_dict))
    with pytest.raises(LayoutError, match="3 frames exceed the limit of 2"):
        load_story(path, max_frames=2)


def test_parse_story_accepts_every_form(story_dict, tmp_path):
    story = Story.from_dict(story_dict)
    assert parse_story(story) is story
    assert parse_story(story_dict) == story
    assert parse_story(story.to_json()) == story
    save_story(story, tmp_path / "s.json")
    assert parse_story(tmp_path / "s.json") == story.resolve_paths(tmp_path)
    with pytest.raises(LayoutError, match="story: expected a Story, a dict, JSON text or a pathlib.Path, got int 3"):
        parse_story(3)
    with pytest.raises(LayoutError, match="frames: 3 frames exceed the limit of 1"):
        parse_story(story, max_frames=1)
    with pytest.raises(LayoutError, match="over the limit of 5"):
        parse_story(story, max_caption_chars=5)


def test_parse_layout_accepts_every_form(story_dict):
    layout = Story.from_dict(story_dict).layout()
    assert parse_layout(layout) is layout
    assert parse_layout(layout.to_dict()) == layout
    assert parse_layout(layout.to_json()) == layout
    with pytest.raises(LayoutError, match="layout: expected a Layout"):
        parse_layout([1])


@pytest.mark.parametrize("name", ["story.json", "two_characters.json"])
def test_examples_load_and_round_trip(name, tmp_path):
    story = load_story(EXAMPLES / name)
    assert story.num_frames == 4
    assert Story.from_json(story.to_json()) == story
    save_story(story, tmp_path / name)
    assert load_story(tmp_path / name) == story


def test_example_story_has_the_promised_mix():
    story = load_story(EXAMPLES / "story.json")
    assert len(story.characters) == 1
    kinds = [
        (bool(f.subjects), all(s.box for s in f.subjects), all(s.caption for s in f.subjects)) for f in story.frames
    ]
    assert kinds.count((True, True, True)) == 2
    assert (True, True, False) in kinds and (False, True, True) in kinds
    assert len(load_story(EXAMPLES / "two_characters.json").characters) == 2
